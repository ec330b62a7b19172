"""Load a prepared model directory for training, evaluation and interpretability."""

from __future__ import annotations

from typing import Any, Mapping

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def pick_device(prefer: str | None = None) -> str:
    import torch

    if prefer:
        return prefer
    return "cuda" if torch.cuda.is_available() else "cpu"


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

    ``rope_theta`` is applied only when given (the config sets it where ``context_tokens``
    exceeds the native window); ``max_position_embeddings`` then grows to the budget.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    if rope_theta:
        set_rope_theta(config, rope_theta)
        if context_tokens and context_tokens > getattr(config, "max_position_embeddings", 0):
            config.max_position_embeddings = context_tokens
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


def set_rope_theta(config: Any, theta: float) -> None:
    """Set RoPE base on a transformers config (v5 keeps it in rope_parameters)."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        params["rope_theta"] = float(theta)
    if hasattr(config, "rope_theta") or not isinstance(params, dict):
        config.rope_theta = float(theta)


def model_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The load_model keyword arguments of a config ``models.<name>`` entry."""
    return {
        "dtype": spec.get("dtype", "float32"),
        "attn_implementation": spec.get("attn_implementation", "sdpa"),
        "rope_theta": spec.get("rope_theta"),
        "context_tokens": spec.get("context_tokens"),
    }
