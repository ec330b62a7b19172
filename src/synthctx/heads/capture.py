"""Exact, cheap capture of every head's most-attended key for each generated token's query.

Retrieval-head detection (Wu et al. 2024) needs, at every greedy decoding step, the argmax key
position of each (layer, query head) attention row of the *current* query. Asking HF for
``output_attentions`` forces eager attention and materialises L x L weights during prefill;
instead we register one attention function with ``transformers.AttentionInterface`` that

* returns the normal output of the base backend (sdpa, or flash attention when installed), and
* copies the current (last) query row of every head into a small preallocated buffer: one
  copy kernel per layer and step, which is all the capture adds to a decoding step.

After the last step, :func:`query_rows_argmax` scores all recorded rows of a layer against that
layer's cached keys in one fp32 matmul (GQA-aware: the query heads of a KV group are stacked
onto that group, keys are never repeated), applies causality and the layer's sliding window
per row, and takes ``argmax`` (ties -> the lowest position, torch's rule). This is exact: row t
sees the keys of positions <= its own, all of which are in the final (full) KV cache. Deferring
the scoring turns ~8 small kernels per layer per step into one matmul per layer per example,
which is what makes capture nearly free on a launch-bound single-sequence decode.

Memory beyond plain sdpa: the query buffer (layers x steps x heads x dim) and, per layer in
turn, one fp32 copy of its keys plus a (heads x rows_chunk x keys) score block; nothing is L x L.
The mask function of the base backend is registered under the same name
(``AttentionMaskInterface``): without it the mask would silently be ``None`` and causality
would be lost in the forward pass itself.

:func:`greedy_decode` runs the study's shared decode loop (:mod:`synthctx.models.decoding`) under
the capture function; with ``capture=False`` it is plain greedy decoding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from synthctx.models.decoding import BatchedRunner, CachedRunner, batched_greedy_loop, greedy_loop
from synthctx.models.loading import END_OF_TURN_TOKENS, cache_keyword, stop_token_ids  # noqa: F401 (re-exported)
from synthctx.models.loading import base_model as unwrap_model

CAPTURE_PREFIX = "synthctx_argmax_"
# Upper bound on one fp32 score block (heads x rows x keys) in the deferred scoring.
SCORE_BLOCK_BYTES = 256 * 2**20


class QueryRecorder:
    """Buffers each layer's current query row per decoding step (every sequence of the batch),
    and the layer's latest keys."""

    def __init__(self, num_layers: int, max_steps: int) -> None:
        self.num_layers = num_layers
        self.max_steps = max_steps
        self.step = 0
        # (layers, steps, batch, heads, dim) in the model's dtype; allocated at the first call,
        # when the batch, head dim, dtype and device are known.
        self.queries: torch.Tensor | None = None
        self.keys: list[torch.Tensor | None] = [None] * num_layers  # the full cache after the last step
        self.windows: list[int | None] = [None] * num_layers
        self.seen = [0] * num_layers  # calls per layer (a sanity check)
        self.forwards = 0  # forward passes of the decode so far
        self.enabled = False

    def counted(self, step):
        """``step`` with the buffer row of each forward pass set before it runs."""

        def counted_step(*args):
            self.step = self.forwards
            self.forwards += 1
            return step(*args)

        return counted_step

    def record(self, layer: int, query: torch.Tensor, key: torch.Tensor, sliding_window: int | None) -> None:
        if self.queries is None:
            batch, heads, _, dim = query.shape
            self.queries = torch.empty(self.num_layers, self.max_steps, batch, heads, dim, dtype=query.dtype,
                                       device=query.device)
        self.queries[layer, self.step].copy_(query[:, :, -1, :])
        self.keys[layer] = key
        self.windows[layer] = sliding_window
        self.seen[layer] += 1


_ACTIVE: QueryRecorder | None = None


def query_rows_argmax(
    queries: torch.Tensor,
    key: torch.Tensor,
    query_positions: torch.Tensor,
    sliding_window: int | None = None,
    key_offset: int = 0,
    first_key: int = 0,
) -> torch.Tensor:
    """Argmax key position (absolute) of every recorded query row of one layer: (rows, H).

    ``queries`` (rows, H, D): query vectors at absolute positions ``query_positions`` (rows,);
    ``key`` (1, H_kv, kv, D): that layer's cached keys, cache index i at absolute position
    ``key_offset + i``. A row attends to keys at positions <= its own and, with a sliding
    window, > its own - window (the rule of HF's sliding-window masks), and none before
    ``first_key`` (a left-padded row's pads). Scores are fp32; the positive softmax scaling does
    not move the argmax and is not applied.
    """
    rows, num_heads, dim = queries.shape
    num_kv, kv_len = key.shape[1], key.shape[2]
    group = num_heads // num_kv
    keys_t = key[0].float().transpose(-1, -2)  # (H_kv, D, kv)
    key_pos = torch.arange(kv_len, device=key.device) + key_offset
    query_positions = query_positions.to(key.device)
    chunk = max(1, SCORE_BLOCK_BYTES // max(1, num_heads * kv_len * 4))
    out = []
    for start in range(0, rows, chunk):
        q = queries[start:start + chunk].float()  # (r, H, D)
        r = q.shape[0]
        # (r, H, D) -> (H_kv, group * r, D): each KV group's query heads stacked, keys shared
        q = q.view(r, num_kv, group, dim).permute(1, 2, 0, 3).reshape(num_kv, group * r, dim)
        scores = torch.matmul(q, keys_t).view(num_kv, group, r, kv_len)
        pos = query_positions[start:start + r, None]
        hidden = (key_pos[None, :] > pos) | (key_pos[None, :] < first_key)
        if sliding_window is not None:
            hidden |= key_pos[None, :] <= pos - sliding_window
        scores.masked_fill_(hidden[None, None], float("-inf"))
        best = scores.argmax(dim=-1) + key_offset  # (H_kv, group, r)
        out.append(best.reshape(num_heads, r).transpose(0, 1))
    return torch.cat(out) if out else torch.empty((0, num_heads), dtype=torch.long, device=key.device)


def _make_attention_function(base: str):
    from transformers import AttentionInterface

    base_fn = AttentionInterface._global_mapping[base]

    def capture_attention(module, query, key, value, attention_mask, scaling=None, sliding_window=None, **kwargs):
        rec = _ACTIVE
        if rec is not None and rec.enabled:
            rec.record(module.layer_idx, query, key, sliding_window)
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


@contextlib.contextmanager
def _capturing(model, recorder: QueryRecorder, base: str, capture: bool):
    """``recorder`` receives the query rows while open (with ``capture``, under the capture
    attention function wrapping ``base``); the model's attention is restored on exit."""
    global _ACTIVE
    ctx = attention_implementation(model, capture_implementation(base)) if capture else contextlib.nullcontext()
    previous = _ACTIVE
    _ACTIVE = recorder
    recorder.enabled = capture
    try:
        with ctx:
            yield
    finally:
        _ACTIVE = previous


def _base_implementation(inner, requested: str | None) -> str:
    """The attention backend the capture function wraps (the model's own, unwrapped)."""
    base = requested or inner.config._attn_implementation
    if base.startswith(CAPTURE_PREFIX):
        base = base[len(CAPTURE_PREFIX):]
    return base if base in ("sdpa", "flash_attention_2", "flash_attention_3", "eager") else "sdpa"


@dataclass
class DecodeResult:
    prompt_length: int
    tokens: list[int]  # generated ids, stop token excluded
    # (steps, layers, heads) absolute key positions; row t = attention of the query that produced
    # tokens[t] (row 0: the last prompt token). Empty (0, L, H) when capture is off.
    argmax: torch.Tensor
    stopped_by: str = "max_new_tokens"  # stop_token | max_new_tokens


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

    The study's shared loop (:func:`synthctx.models.decoding.greedy_loop`): prefill once
    (``logits_to_keep=1``: no full-vocab logits over the prompt), then one token per step. With
    ``capture`` the model runs under the capture attention function for the duration of the call
    and is restored afterwards; the cache then keeps every key (no sliding-window trimming), which
    the deferred scoring needs.
    """
    inner = unwrap_model(model)
    prompt = [int(t) for t in (input_ids.reshape(-1).tolist() if torch.is_tensor(input_ids) else input_ids)]
    num_layers, num_heads = model_shape(model)
    base = _base_implementation(inner, base_implementation)
    recorder = QueryRecorder(num_layers, max(1, max_new_tokens))
    runner = CachedRunner(inner, keep_all_keys=True)
    with _capturing(model, recorder, base, capture):
        tokens = greedy_loop(recorder.counted(runner.step), prompt, max_new_tokens, stop_ids)
    stopped_by = "stop_token" if len(tokens) < max_new_tokens else "max_new_tokens"
    if capture and tokens:
        argmax = recorded_argmax(recorder, len(prompt), len(tokens), runner.length)
    else:
        argmax = torch.empty((0, num_layers, num_heads), dtype=torch.long)
    return DecodeResult(len(prompt), tokens, argmax, stopped_by)


@torch.no_grad()
def greedy_decode_batch(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: Iterable[int] = (),
    pad_id: int = 0,
    capture: bool = True,
    base_implementation: str | None = None,
) -> list[DecodeResult]:
    """:func:`greedy_decode` for several prompts decoded together (left-padded, one KV cache).

    Each row's argmax positions are its own (pads excluded from the keys a row can pick, and
    subtracted from the positions), so a result equals the one-prompt result up to
    floating-point reduction order. On a GPU a small model's decode step costs about the same
    for 1 or 16 rows.
    """
    inner = unwrap_model(model)
    prompts = [[int(t) for t in p] for p in prompts]
    num_layers, num_heads = model_shape(model)
    base = _base_implementation(inner, base_implementation)
    recorder = QueryRecorder(num_layers, max(1, max_new_tokens))
    runner = BatchedRunner(inner, keep_all_keys=True)
    with _capturing(model, recorder, base, capture):
        outputs = batched_greedy_loop(recorder.counted(runner.step), prompts, max_new_tokens, stop_ids, pad_id)
    width = max(len(p) for p in prompts)
    results = []
    for row, (prompt, tokens) in enumerate(zip(prompts, outputs)):
        stopped_by = "stop_token" if len(tokens) < max_new_tokens else "max_new_tokens"
        if capture and tokens:
            pads = width - len(prompt)
            argmax = recorded_argmax(recorder, width, len(tokens), runner.length, row, pads) - pads
        else:
            argmax = torch.empty((0, num_layers, num_heads), dtype=torch.long)
        results.append(DecodeResult(len(prompt), tokens, argmax, stopped_by))
    return results


def recorded_argmax(recorder: QueryRecorder, prompt_length: int, rows: int, last_length: int,
                    batch_row: int = 0, first_key: int = 0) -> torch.Tensor:
    """(rows, layers, heads) argmax positions of the first ``rows`` recorded query rows of one
    sequence of the batch (``batch_row``).

    Row t is the query of the forward pass that produced generated token t, at cache index
    prompt_length - 1 + t (``prompt_length``: the padded width in a batch); the last forward's
    cache (``last_length`` keys) holds every key any of these rows can see. Keys before
    ``first_key`` (a left-padded row's pads) are never chosen; positions are cache indices.
    """
    if any(seen != recorder.forwards for seen in recorder.seen) or recorder.queries is None:
        raise RuntimeError(f"capture attention function was not called in every layer: {recorder.seen} "
                           f"calls for {recorder.forwards} forward passes (is the model's attention a standard module?)")
    positions = torch.arange(rows) + (prompt_length - 1)
    per_layer = []
    for layer in range(recorder.num_layers):
        key = recorder.keys[layer][batch_row:batch_row + 1]
        window = recorder.windows[layer]
        offset = last_length - key.shape[2]
        first_needed = 0 if window is None else max(0, prompt_length - window)
        if offset > first_needed:
            raise RuntimeError(f"layer {layer}: the KV cache dropped keys (offset {offset}) that a recorded "
                               "query can see; capture needs a full cache")
        per_layer.append(query_rows_argmax(recorder.queries[layer, :rows, batch_row], key, positions, window, offset,
                                           first_key))
    return torch.stack(per_layer, dim=1).cpu()
