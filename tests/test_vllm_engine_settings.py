"""vLLM engine settings: the CPU build's KV-cache size from config, ignored on GPU builds."""

from __future__ import annotations

import pytest

from synthctx.models import loading

SETTINGS = {"gpu_memory_utilization": 0.3, "enforce_eager": True, "cpu_kv_cache_gib": 1}


def test_cpu_build_gets_the_configured_kv_cache(monkeypatch):
    monkeypatch.setattr(loading, "vllm_cpu_build", lambda: True)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    kwargs = loading.vllm_engine_kwargs("m", {"dtype": "float32"}, 2048, SETTINGS, seed=3)
    assert kwargs["kv_cache_memory_bytes"] == 2**30
    assert "cpu_kv_cache_gib" not in kwargs  # never handed to vllm.LLM as an unknown argument
    assert kwargs["gpu_memory_utilization"] == 0.3 and kwargs["seed"] == 3


@pytest.mark.parametrize("cpu_build, env", [(False, None), (True, "2")])
def test_gpu_build_or_user_environment_keeps_vllm_sizing(monkeypatch, cpu_build, env):
    monkeypatch.setattr(loading, "vllm_cpu_build", lambda: cpu_build)
    if env is None:
        monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    else:
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", env)
    kwargs = loading.vllm_engine_kwargs("m", {"dtype": "float32"}, 2048, SETTINGS)
    assert "kv_cache_memory_bytes" not in kwargs and "cpu_kv_cache_gib" not in kwargs
