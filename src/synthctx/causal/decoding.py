"""Greedy decoding with a KV cache, for masked and patched models.

The loop itself is the study's shared one (:mod:`synthctx.models.decoding`): the patching
experiment steps two models in lockstep on the same tokens, and both causal experiments need
hooks active during prefill and every decoding step.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from synthctx.models.decoding import CachedRunner, greedy_loop  # noqa: F401 (re-exported)
from synthctx.models.loading import stop_token_ids  # noqa: F401 (re-exported)


def greedy_decode(model, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int]) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (end-of-turn token excluded)."""
    return greedy_loop(CachedRunner(model).step, prompt_ids, max_new_tokens, stop_ids)


def decode_text(tokenizer, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()
