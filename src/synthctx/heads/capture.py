"""Exact, cheap capture of every head's most-attended key for the current query.

Retrieval-head detection (Wu et al. 2024) needs, at every greedy decoding step, the argmax key
position of each (layer, query head) attention row of the *current* query. Asking HF for
``output_attentions`` forces eager attention and materialises L x L weights during prefill;
instead we register one attention function with ``transformers.AttentionInterface`` that

* returns the normal output of the base backend (sdpa, or flash attention when installed), and
* computes q_last . K^T for the last query row only, in fp32, GQA-aware (the query heads of a
  KV group are reshaped onto that group, keys are never repeated), applies the model's mask
  row and sliding window, and stores ``argmax`` (ties -> the lowest position, torch's rule).

Memory beyond plain sdpa is one fp32 copy of one layer's keys; nothing is L x L. The mask
function of the base backend is registered under the same name (``AttentionMaskInterface``):
without it the mask would silently be ``None`` and causality would be lost.

:func:`greedy_decode` is the shared decode loop (prefill once, then one token per step with a
``DynamicCache``); with ``capture=False`` it is plain greedy decoding (used by causal tests with
their own hooks installed).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from synthctx.models.loading import END_OF_TURN_TOKENS, cache_keyword, stop_token_ids  # noqa: F401 (re-exported)

CAPTURE_PREFIX = "synthctx_argmax_"
# Common end-of-turn markers; the tokenizer's eos and the generation config are added too.


class ArgmaxRecorder:
    """Holds the current forward pass's argmax per (layer, head) and the sequence length."""

    def __init__(self, num_layers: int, num_heads: int, device) -> None:
        self.num_layers = num_layers
        self.num_heads = num_heads
        # one (H,) tensor per layer for the current forward; stacked once per step (few launches)
        self.rows: list[torch.Tensor | None] = [None] * num_layers
        # Absolute length of the sequence seen by the current forward (prompt + generated so far,
        # current token included): needed to map cache indices to positions when a sliding-window
        # cache keeps only the last keys.
        self.total_length = 0
        self.enabled = False


_ACTIVE: ArgmaxRecorder | None = None


def last_row_argmax(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    total_length: int,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Argmax key position (absolute) of the last query row of every query head: shape (B, H).

    ``query`` (B, H, q, D); ``key`` (B, H_kv, kv, D) with the cache already concatenated;
    ``attention_mask`` a boolean (True = attend) or additive mask (B, 1|H, q, kv), a 2-D padding
    mask (B, kv), or None (causal: the last row sees every key). Few kernel launches on purpose:
    this runs in every layer of every decoding step. The positive ``scaling`` does not move the
    argmax, so it is applied only when an additive mask has to be added to scaled scores.
    """
    batch, num_heads, _, dim = query.shape
    num_kv = key.shape[1]
    kv_len = key.shape[2]
    q_last = query[:, :, -1, :].reshape(batch, num_kv, num_heads // num_kv, dim).float()
    scores = torch.matmul(q_last, key.float().transpose(-1, -2)).view(batch, num_heads, kv_len)  # (B, H, kv)
    if attention_mask is not None:
        if attention_mask.dim() == 4:
            row = attention_mask[:, :, -1, -kv_len:]  # (B, 1|H, kv)
        else:  # 2-D padding mask (flash backends): 1 = keep
            row = attention_mask[:, None, -kv_len:].bool()
        if row.dtype == torch.bool:
            scores = scores.masked_fill(~row, float("-inf"))
        else:
            scores = scores * (scaling if scaling is not None else 1.0) + row.float()
    offset = total_length - kv_len  # absolute position of cache index 0
    if sliding_window is not None and kv_len >= sliding_window:
        query_pos = total_length - 1
        positions = torch.arange(kv_len, device=scores.device) + offset
        scores = scores.masked_fill((positions <= query_pos - sliding_window)[None, None, :], float("-inf"))
    best = scores.argmax(dim=-1)
    return best + offset if offset else best


def _make_attention_function(base: str):
    from transformers import AttentionInterface

    base_fn = AttentionInterface._global_mapping[base]

    def capture_attention(module, query, key, value, attention_mask, scaling=None, sliding_window=None, **kwargs):
        rec = _ACTIVE
        if rec is not None and rec.enabled:
            with torch.no_grad():
                rec.rows[module.layer_idx] = last_row_argmax(
                    query, key, attention_mask, scaling, rec.total_length, sliding_window
                )[0]
        if sliding_window is not None:
            kwargs["sliding_window"] = sliding_window
        return base_fn(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    return capture_attention


def capture_implementation(base: str = "sdpa") -> str:
    """Register (once) the capture attention + mask functions over ``base``; returns the name."""
    from transformers import AttentionInterface, AttentionMaskInterface

    name = CAPTURE_PREFIX + base
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _make_attention_function(base))
        AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping[base])
    return name


def best_base_implementation(device) -> str:
    """flash_attention_2 on CUDA when the package is installed, sdpa otherwise."""
    if torch.device(device).type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def unwrap_model(model):
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def model_shape(model) -> tuple[int, int]:
    cfg = unwrap_model(model).config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Temporarily switch a (possibly PEFT-wrapped) model's attention implementation."""
    inner = unwrap_model(model)
    before = inner.config._attn_implementation
    inner.set_attn_implementation(name)
    try:
        yield inner
    finally:
        inner.set_attn_implementation(before)


@dataclass
class DecodeResult:
    prompt_length: int
    tokens: list[int]  # generated ids, stop token excluded
    # (steps, layers, heads) absolute key positions; row t = attention of the query that produced
    # tokens[t] (row 0: the last prompt token). Empty (0, L, H) when capture is off.
    argmax: torch.Tensor
    stopped_by: str = "max_new_tokens"  # stop_token | max_new_tokens
    stop_token: int | None = None
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def greedy_decode(
    model,
    input_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    stop_ids: Iterable[int] = (),
    capture: bool = True,
    base_implementation: str | None = None,
) -> DecodeResult:
    """Greedy decoding of one prompt with a KV cache, optionally capturing per-head argmax.

    Prefill runs the whole prompt once (``logits_to_keep=1``: no full-vocab logits over the
    prompt); each later step feeds one token. With ``capture`` the model runs under the capture
    attention function for the duration of the call and is restored afterwards.
    """
    from transformers import DynamicCache

    global _ACTIVE
    inner = unwrap_model(model)
    device = next(inner.parameters()).device
    ids = torch.as_tensor(list(input_ids) if not torch.is_tensor(input_ids) else input_ids, device=device)
    ids = ids.reshape(1, -1)
    num_layers, num_heads = model_shape(model)
    stop_ids = set(int(s) for s in stop_ids)
    base = base_implementation or inner.config._attn_implementation
    if base.startswith(CAPTURE_PREFIX):
        base = base[len(CAPTURE_PREFIX):]
    if base not in ("sdpa", "flash_attention_2", "flash_attention_3", "eager"):
        base = "sdpa"
    recorder = ArgmaxRecorder(num_layers, num_heads, device)
    rows: list[torch.Tensor] = []
    tokens: list[int] = []
    stopped_by, stop_token = "max_new_tokens", None
    ctx = attention_implementation(model, capture_implementation(base)) if capture else contextlib.nullcontext()
    previous = _ACTIVE
    _ACTIVE = recorder
    recorder.enabled = capture
    try:
        with ctx:
            cache = DynamicCache()  # full per-layer caches; masks apply any sliding window
            cache_arg = cache_keyword(inner)
            step_input = ids
            length = ids.shape[1]
            for _ in range(max_new_tokens):
                recorder.total_length = length
                out = inner(input_ids=step_input, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
                next_token = int(out.logits[0, -1].argmax())
                if next_token in stop_ids:
                    stopped_by, stop_token = "stop_token", next_token
                    break
                tokens.append(next_token)
                if capture:
                    if any(r is None for r in recorder.rows):
                        raise RuntimeError("capture attention function was not called in every layer")
                    rows.append(torch.stack(recorder.rows))
                    recorder.rows = [None] * num_layers
                step_input = torch.tensor([[next_token]], device=device)
                length += 1
    finally:
        _ACTIVE = previous
    argmax = torch.stack(rows).cpu() if rows else torch.empty((0, num_layers, num_heads), dtype=torch.long)
    return DecodeResult(ids.shape[1], tokens, argmax, stopped_by, stop_token)
