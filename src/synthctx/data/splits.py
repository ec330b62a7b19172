"""Seeded eval/train splits of the real data (STUDY.md section 2).

- MDQA/MuSiQue: candidates are taken in the order of ``derived_seed(seed, example_id)``;
  the first ``eval_examples`` that fit the budget are the eval split, the next ones (up
  to ``max_train_examples``) Real (Full). The eval split therefore does not depend on the
  train cap.
- SummHay: whole haystacks are held out (the ``eval_haystacks`` topic ids with the
  smallest seeded hash), so no document is in both splits.
- Real (Limited): the ``limited_fraction`` of Real (Full) with the smallest seeded hash
  (at least one example).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any, Callable, Iterable, Sequence, TypeVar

from synthctx.provenance import derived_seed

T = TypeVar("T")


def split_key(seed: int, example_id: str) -> int:
    """The hash that orders examples for the eval/train split."""
    return derived_seed(seed, example_id)


def order_by_hash(items: Iterable[T], seed: int, key: Callable[[T], str]) -> list[T]:
    """``items`` sorted by the seeded hash of their id (ties broken by the id)."""
    return sorted(items, key=lambda item: (split_key(seed, key(item)), key(item)))


def heldout_groups(groups: Iterable[str], count: int, seed: int) -> list[str]:
    """The ``count`` group ids (SummHay topic ids) with the smallest seeded hash."""
    unique = sorted(set(groups))
    if count >= len(unique):
        raise ValueError(f"cannot hold out {count} of {len(unique)} haystacks: no training haystack would remain")
    return sorted(unique, key=lambda g: (derived_seed(seed, "heldout-haystack", g), g))[:count]


def take_buildable(
    candidates: Iterable[Any],
    count: int | None,
    build: Callable[[Any], Any],
    dropped: Counter,
    on_success: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Build candidates in order until ``count`` examples exist (``None``: all of them).

    ``build(candidate)`` returns an object with ``example`` and ``reason``; dropped
    candidates are counted in ``dropped`` by reason. Returns the examples and the
    candidates not consumed.
    """
    remaining = list(candidates)
    examples: list[dict[str, Any]] = []
    used = 0
    for cand in remaining:
        if count is not None and len(examples) >= count:
            break
        used += 1
        result = build(cand)
        if result.example is None:
            dropped[result.reason] += 1
            continue
        examples.append(result.example)
        if on_success:
            on_success()
    return examples, remaining[used:]


def assign(examples: Sequence[dict[str, Any]], split: str, condition: str) -> list[dict[str, Any]]:
    """Copies of ``examples`` with their split and condition set."""
    out = []
    for ex in examples:
        ex = copy.deepcopy(ex)
        ex["split"], ex["condition"] = split, condition
        out.append(ex)
    return out


def limited_subset(examples: Sequence[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """Seeded subset of ``fraction`` of ``examples`` (at least one), in their original order."""
    if not examples:
        return []
    n = max(1, min(len(examples), math.floor(fraction * len(examples) + 0.5)))
    ranked = sorted(examples, key=lambda ex: (derived_seed(seed, "real-limited", ex["example_id"]), ex["example_id"]))
    keep = {ex["example_id"] for ex in ranked[:n]}
    return [ex for ex in examples if ex["example_id"] in keep]
