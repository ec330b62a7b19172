"""Greedy decoding with a KV cache, for masked and patched models.

The loop itself is the study's shared one (:mod:`synthctx.models.decoding`): the patching
experiment steps two models in lockstep on the same tokens, and both causal experiments need
hooks active during prefill and every decoding step.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from synthctx.models.decoding import (  # noqa: F401 (re-exported)
    BatchedRunner,
    CachedRunner,
    batched_greedy_loop,
    greedy_loop,
)
from synthctx.models.loading import stop_token_ids  # noqa: F401 (re-exported)


def greedy_decode(model, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int]) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (end-of-turn token excluded)."""
    return greedy_loop(CachedRunner(model).step, prompt_ids, max_new_tokens, stop_ids)


def greedy_decode_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: Iterable[int],
                        pad_id: int) -> list[list[int]]:
    """Greedy continuations of several prompts decoded together (left-padded, one KV cache)."""
    return batched_greedy_loop(BatchedRunner(model).step, prompts, max_new_tokens, stop_ids, pad_id)


def decode_text(tokenizer, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()
