"""Greedy decoding with a KV cache, for masked and patched models.

A small loop of our own rather than ``model.generate``: the patching experiment must step two
models in lockstep on the same tokens, and both experiments need hooks active during prefill
and every decoding step. Decoding is greedy (argmax, lowest id on ties as torch.argmax does) and
stops at the end-of-turn token or after ``max_new_tokens``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from synthctx.models.loading import cache_keyword, stop_token_ids  # noqa: F401 (re-exported)

# End-of-turn markers of the chat templates the study uses (SmolLM2/Qwen, Llama-3, Mistral).
def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_kwarg(model) -> str:
    return cache_keyword(model)


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=_base_model(model).config)


class CachedRunner:
    """One model fed token by token with its own KV cache; returns last-position logits."""

    def __init__(self, model):
        self.model = model
        self.cache = new_cache(model)
        self.cache_kwarg = _cache_kwarg(model)
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def step(self, ids: Sequence[int]) -> torch.Tensor:
        input_ids = torch.tensor([list(ids)], device=self.device)
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self.cache_kwarg: self.cache})
        return out.logits[0, -1]


def greedy_loop(step: Callable[[Sequence[int]], torch.Tensor], prompt_ids: Sequence[int],
                max_new_tokens: int, stop_ids: Iterable[int]) -> list[int]:
    """Generic greedy loop over a ``step(ids) -> next-token logits`` function (prefill first)."""
    if len(prompt_ids) == 0:
        raise ValueError("greedy decoding needs a non-empty prompt")
    stop = set(stop_ids)
    generated: list[int] = []
    logits = step(prompt_ids)
    while len(generated) < max_new_tokens:
        token = int(torch.argmax(logits))
        if token in stop:
            break
        generated.append(token)
        if len(generated) == max_new_tokens:
            break
        logits = step([token])
    return generated


def greedy_decode(model, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int]) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (end-of-turn token excluded)."""
    return greedy_loop(CachedRunner(model).step, prompt_ids, max_new_tokens, stop_ids)


def decode_text(tokenizer, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()
