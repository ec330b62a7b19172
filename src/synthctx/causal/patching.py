"""Cross-model activation patching (Prakash et al. 2024) between two fine-tunes of one base.

The donor (the task's Real (Full) model) and the recipient (a synthetic-data model) run in
lockstep on the same tokens, each with its own KV cache: both are prefilled on the prompt, then
at every step the recipient's greedy token is fed to both. At every forward call the donor runs
first and its per-head attention outputs (the heads' slices of the ``o_proj`` input) are kept;
the recipient then runs with those slices written over its own at every position of the call.
Because both caches hold the same positions, no prefix is ever recomputed; the donor's cache
holds the donor's own (clean) states, as in CMAP.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch

from synthctx.models.decoding import BatchedRunner, CachedRunner, batched_greedy_loop, greedy_loop
from synthctx.causal.interventions import (
    Head,
    attention_modules,
    head_geometry,
    heads_by_layer,
    hooks,
    validate_heads,
)


class HeadPatcher:
    """Hooks that copy the donor's per-head attention outputs into the recipient.

    Use as a context manager; inside it, call the donor and then the recipient on the same
    input ids (``step`` does both). Patching no heads installs no hook.
    """

    def __init__(self, donor, recipient, heads: Iterable[Sequence[int]]):
        geometry = head_geometry(recipient)
        if head_geometry(donor) != geometry:
            raise ValueError(f"donor and recipient differ in shape: {head_geometry(donor)} vs {geometry}")
        self.geometry = geometry
        self.heads: list[Head] = validate_heads(heads, geometry)
        self.by_layer = heads_by_layer(self.heads)
        self.donor, self.recipient = donor, recipient
        self._donor_out: dict[int, torch.Tensor] = {}
        self._stack = contextlib.ExitStack()

    def _capture(self, layer: int):
        def hook(module, args):
            self._donor_out[layer] = args[0].detach()

        return hook

    def _replace(self, layer: int, heads: list[int]):
        num_heads, head_dim = self.geometry.num_heads, self.geometry.head_dim
        index = torch.tensor(heads)

        def hook(module, args):
            hidden = args[0]
            donor = self._donor_out.pop(layer, None)
            if donor is None or donor.shape != hidden.shape:
                raise RuntimeError(
                    f"layer {layer}: no donor activation of shape {tuple(hidden.shape)} "
                    "(run the donor on the same ids right before the recipient)"
                )
            edited = hidden.clone().view(*hidden.shape[:-1], num_heads, head_dim)
            donor_view = donor.to(device=hidden.device, dtype=hidden.dtype).view(*hidden.shape[:-1], num_heads, head_dim)
            idx = index.to(hidden.device)
            edited[..., idx, :] = donor_view[..., idx, :]
            return (edited.view(hidden.shape), *args[1:])

        return hook

    def __enter__(self):
        donor_attn = attention_modules(self.donor)
        recipient_attn = attention_modules(self.recipient)

        def install():
            handles = []
            for layer, heads in self.by_layer.items():
                handles.append(donor_attn[layer].o_proj.register_forward_pre_hook(self._capture(layer)))
                handles.append(recipient_attn[layer].o_proj.register_forward_pre_hook(self._replace(layer, heads)))
            return handles

        self._stack.enter_context(hooks(install))
        return self

    def __exit__(self, *exc):
        self._donor_out.clear()
        return self._stack.__exit__(*exc)


@contextlib.contextmanager
def patched_runner(donor, recipient, heads: Iterable[Sequence[int]], runner=CachedRunner) -> Iterator:
    """A ``step(...) -> recipient logits`` function running donor then patched recipient, each
    through its own ``runner`` (:class:`CachedRunner`: one sequence; :class:`BatchedRunner`: a
    left-padded batch, both models fed the same ids, mask and positions).

    Without heads the donor is not run at all (the plain recipient).
    """
    donor_runner, recipient_runner = runner(donor), runner(recipient)
    with HeadPatcher(donor, recipient, heads) as patcher:
        if not patcher.heads:
            yield recipient_runner.step
            return

        def step(*inputs):
            donor_runner.step(*inputs)
            return recipient_runner.step(*inputs)

        yield step


def patched_greedy_decode(donor, recipient, prompt_ids: Sequence[int], heads: Iterable[Sequence[int]],
                          max_new_tokens: int, stop_ids: Iterable[int]) -> list[int]:
    """Greedy decoding of the recipient with ``heads`` patched from the donor at every position."""
    with patched_runner(donor, recipient, heads) as step:
        return greedy_loop(step, prompt_ids, max_new_tokens, stop_ids)


def patched_greedy_decode_batch(donor, recipient, prompts: Sequence[Sequence[int]], heads: Iterable[Sequence[int]],
                                max_new_tokens: int, stop_ids: Iterable[int], pad_id: int) -> list[list[int]]:
    """:func:`patched_greedy_decode` for several prompts decoded together (left-padded): donor
    and recipient get the same padded ids, mask and positions, so the copied slices line up."""
    with patched_runner(donor, recipient, heads, BatchedRunner) as step:
        return batched_greedy_loop(step, prompts, max_new_tokens, stop_ids, pad_id)


@torch.no_grad()
def patched_logits(donor, recipient, input_ids: Sequence[int], heads: Iterable[Sequence[int]]) -> torch.Tensor:
    """Full-sequence recipient logits (T, V) with ``heads`` patched from the donor (tests, checks)."""
    device = next(recipient.parameters()).device
    ids = torch.tensor([list(input_ids)], device=device)
    with HeadPatcher(donor, recipient, heads) as patcher:
        if patcher.heads:
            donor(input_ids=ids.to(next(donor.parameters()).device), use_cache=False)
        return recipient(input_ids=ids, use_cache=False).logits[0]
