"""Per-head interventions on Llama/Mistral attention with plain PyTorch hooks.

A head is a ``(layer, head)`` pair of query-head indices. Every intervention is a context
manager that installs forward hooks and removes them on exit, so the same loaded model serves
the unmasked baseline and every masked run. The hooks act on every forward call, hence on the
prefill and on every decoding step alike.

Operators (STUDY.md section 7):

* ``uniform`` (Wu et al.'s knockout, the default): the head's query is zeroed at the output of
  ``q_proj``. RoPE rotates a zero vector to zero, so every attention logit of that head is 0 and
  its softmax is uniform over the positions the mask leaves visible (the causal prefix, or the
  sliding window). The head's output becomes the running mean of its value vectors.
* ``zero``: the head's slice of the ``o_proj`` input (its attention output) is set to zero.
* ``mean``: that slice is replaced by a per-(layer, head) mean vector computed beforehand over
  a reference set of prompts (:func:`head_output_means`).

With a PEFT LoRA model the hooks sit on the LoRA wrapper modules (``q_proj``/``o_proj`` keep
their names), so they see the adapted projection: the query hook zeroes base + LoRA output, and
the ``o_proj`` pre-hook sees the same input the wrapper's base layer and LoRA branch see.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

OPERATORS = ("uniform", "zero", "mean")

Head = tuple[int, int]


@dataclass(frozen=True)
class HeadGeometry:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    def all_heads(self) -> list[Head]:
        return [(layer, head) for layer in range(self.num_layers) for head in range(self.num_heads)]


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def head_geometry(model) -> HeadGeometry:
    """Layers, query heads, KV heads and head dimension of a (possibly PEFT-wrapped) model."""
    cfg = _text_config(model)
    num_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads
    return HeadGeometry(
        num_layers=cfg.num_hidden_layers,
        num_heads=num_heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or num_heads,
        head_dim=head_dim,
    )


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, in layer order.

    Found by structure (a module with ``q_proj``, ``o_proj`` and ``layer_idx``), which works for
    a bare model, a PeftModel and a merged copy alike.
    """
    found: dict[int, torch.nn.Module] = {}
    for _, module in model.named_modules():
        if hasattr(module, "q_proj") and hasattr(module, "o_proj") and hasattr(module, "layer_idx"):
            found.setdefault(int(module.layer_idx), module)
    geometry = head_geometry(model)
    if sorted(found) != list(range(geometry.num_layers)):
        raise ValueError(
            f"{type(model).__name__}: found attention modules for layers {sorted(found)}, "
            f"expected 0..{geometry.num_layers - 1} (only Llama/Mistral-style attention is supported)"
        )
    return [found[i] for i in range(geometry.num_layers)]


def validate_heads(heads: Iterable[Sequence[int]], geometry: HeadGeometry) -> list[Head]:
    out = []
    for item in heads:
        layer, head = int(item[0]), int(item[1])
        if not (0 <= layer < geometry.num_layers and 0 <= head < geometry.num_heads):
            raise ValueError(
                f"head {(layer, head)} outside the model's {geometry.num_layers} layers x {geometry.num_heads} heads"
            )
        out.append((layer, head))
    return sorted(set(out))


def heads_by_layer(heads: Iterable[Head]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for layer, head in heads:
        grouped.setdefault(layer, []).append(head)
    return {layer: sorted(hs) for layer, hs in sorted(grouped.items())}


def _slice_mask(num_heads: int, head_dim: int, heads: Sequence[int], device, dtype) -> torch.Tensor:
    """A (H*D,) mask: 0 on the listed heads' slices, 1 elsewhere."""
    keep = torch.ones(num_heads, head_dim, device=device, dtype=dtype)
    keep[list(heads)] = 0
    return keep.reshape(-1)


@contextlib.contextmanager
def hooks(handles_factory: Callable[[], list]) -> Iterator[None]:
    handles = handles_factory()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _query_zero_hook(heads: Sequence[int], head_dim: int, num_heads: int):
    def hook(module, args, output):
        keep = _slice_mask(num_heads, head_dim, heads, output.device, output.dtype)
        # Multiplying by an exact 0/1 mask leaves the other heads' values bit-identical.
        return output * keep

    return hook


def _o_proj_input_hook(heads: Sequence[int], head_dim: int, num_heads: int, replacement: torch.Tensor | None):
    """Pre-hook on o_proj: the listed heads' slices become 0 or ``replacement[heads]`` (H, D)."""

    def hook(module, args):
        hidden = args[0]
        edited = hidden.clone()
        view = edited.view(*hidden.shape[:-1], num_heads, head_dim)
        for head in heads:
            if replacement is None:
                view[..., head, :] = 0
            else:
                view[..., head, :] = replacement[head].to(device=hidden.device, dtype=hidden.dtype)
        return (edited, *args[1:])

    return hook


@contextlib.contextmanager
def mask_heads(model, heads: Iterable[Sequence[int]], operator: str = "uniform",
               means: torch.Tensor | None = None) -> Iterator[list[Head]]:
    """Knock out ``heads`` of ``model`` while the context is open (prefill and decoding).

    ``means`` (num_layers, num_heads, head_dim) is required for the ``mean`` operator. Masking
    no heads installs no hook, so the model's logits stay bit-identical.
    """
    if operator not in OPERATORS:
        raise ValueError(f"unknown knockout operator {operator!r}; expected one of {OPERATORS}")
    geometry = head_geometry(model)
    chosen = validate_heads(heads, geometry)
    if operator == "mean":
        if means is None:
            raise ValueError("operator 'mean' needs per-head means (see head_output_means)")
        expected = (geometry.num_layers, geometry.num_heads, geometry.head_dim)
        if tuple(means.shape) != expected:
            raise ValueError(f"head means have shape {tuple(means.shape)}, expected {expected}")
    modules = attention_modules(model)

    def install():
        handles = []
        for layer, layer_heads in heads_by_layer(chosen).items():
            attn = modules[layer]
            if operator == "uniform":
                handles.append(attn.q_proj.register_forward_hook(
                    _query_zero_hook(layer_heads, geometry.head_dim, geometry.num_heads)))
            else:
                replacement = None if operator == "zero" else means[layer]
                handles.append(attn.o_proj.register_forward_pre_hook(
                    _o_proj_input_hook(layer_heads, geometry.head_dim, geometry.num_heads, replacement)))
        return handles

    with hooks(install):
        yield chosen


@contextlib.contextmanager
def capture_head_outputs(model, layers: Iterable[int] | None = None) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the o_proj input (B, T, H*D) of each forward call, per layer, while open."""
    modules = attention_modules(model)
    wanted = sorted(set(range(len(modules)) if layers is None else layers))
    store: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}

    def make(layer):
        def hook(module, args):
            store[layer].append(args[0].detach())

        return hook

    with hooks(lambda: [modules[layer].o_proj.register_forward_pre_hook(make(layer)) for layer in wanted]):
        yield store


@torch.no_grad()
def head_output_means(model, prompts: Iterable[Sequence[int]]) -> torch.Tensor:
    """Mean of every head's attention output over all positions of ``prompts``: (L, H, D), fp32.

    The reference for the ``mean`` operator (mean ablation). Positions of all prompts are pooled,
    so longer prompts weigh more, as every position of a masked run is replaced by this vector.
    """
    geometry = head_geometry(model)
    device = next(model.parameters()).device
    total = torch.zeros(geometry.num_layers, geometry.num_heads, geometry.head_dim, dtype=torch.float64)
    count = 0
    for ids in prompts:
        with capture_head_outputs(model) as store:
            model(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
        for layer, calls in store.items():
            out = calls[0][0].to(torch.float64).cpu()  # (T, H*D)
            total[layer] += out.view(out.shape[0], geometry.num_heads, geometry.head_dim).sum(0)
        count += len(ids)
    if count == 0:
        raise ValueError("head_output_means: no reference prompt tokens")
    return (total / count).to(torch.float32)
