"""The one greedy decoding loop of the study's single-sequence decoders.

Head detection (capture of attention rows), knockout (hooks during every forward) and cross-model
patching (two models stepped in lockstep) all need a loop they control, with hooks active during
prefill and every step, which ``model.generate`` does not give. They share this one: a
:class:`CachedRunner` feeds one model token by token with its own KV cache, and
:func:`greedy_loop` turns any ``step(ids) -> next-token logits`` function into greedy decoding
(argmax, lowest id on ties as ``torch.argmax`` does; stop at an end-of-turn id or after
``max_new_tokens``; prefill once, and no forward pass after the last kept token).
Batched evaluation uses HF ``generate`` instead (``synthctx.evaluate.generate``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from synthctx.models.loading import base_model, cache_keyword


def new_cache(model, keep_all_keys: bool = False):
    """A DynamicCache for ``model``. With the model's config, sliding-window layers keep only the
    window (what decoding needs); ``keep_all_keys`` keeps every key (what head capture scores)."""
    from transformers import DynamicCache

    return DynamicCache() if keep_all_keys else DynamicCache(config=base_model(model).config)


class CachedRunner:
    """One model fed token by token with its own KV cache; ``step`` returns last-position logits."""

    def __init__(self, model, keep_all_keys: bool = False):
        self.model = model
        self.cache = new_cache(model, keep_all_keys)
        self.cache_kwarg = cache_keyword(model)
        self.device = next(model.parameters()).device
        self.length = 0  # tokens fed so far (prompt + generated)

    @torch.no_grad()
    def step(self, ids: Sequence[int]) -> torch.Tensor:
        input_ids = torch.as_tensor(ids, device=self.device).reshape(1, -1)
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self.cache_kwarg: self.cache})
        self.length += input_ids.shape[1]
        return out.logits[0, -1]


def greedy_loop(step: Callable[[Sequence[int]], torch.Tensor], prompt_ids: Sequence[int],
                max_new_tokens: int, stop_ids: Iterable[int]) -> list[int]:
    """Greedy continuation through ``step`` (prompt first, then one token per call); the stop id
    is not included. ``step`` is called once per kept token at most (never after the last)."""
    if len(prompt_ids) == 0:
        raise ValueError("greedy decoding needs a non-empty prompt")
    stop = set(int(s) for s in stop_ids)
    generated: list[int] = []
    if max_new_tokens <= 0:
        return generated
    logits = step(prompt_ids)
    while True:
        token = int(torch.argmax(logits))
        if token in stop:
            break
        generated.append(token)
        if len(generated) == max_new_tokens:
            break
        logits = step([token])
    return generated
