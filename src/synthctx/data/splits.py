"""Seeded eval/train splits of the real data (STUDY.md section 2).

- MDQA/MuSiQue: candidates that share a link key (MuSiQue: a single-hop sub-question id
  or a supporting paragraph; MDQA: the gold passage or the question) form one linked
  group (connected components), and a group is never split. Groups are ordered by the
  smallest ``derived_seed(seed, example_id)`` of their members; the eval split takes
  whole groups in that order until it holds ``eval_examples`` buildable examples, passing
  over a group larger than the room left (it goes to training whole). Real (Full) is
  then every remaining candidate that builds, in seeded-hash order, up to the optional
  ``max_train_examples``. The eval split therefore does not depend on the train cap, and
  with no shared keys it is exactly the first ``eval_examples`` buildable candidates.
- MuSiQue with ``train_hops`` other than ``hops``: the eval split is drawn as above from the
  ``hops`` candidates alone (so it does not depend on ``train_hops``); groups are then
  recomputed over all candidates, and every candidate in a group holding an eval-side
  candidate stays out of training (:func:`linked_to`). Real (Full) is the rest of the
  ``train_hops`` candidates.
- SummHay: whole haystacks are held out (the ``eval_haystacks`` topic ids with the
  smallest seeded hash), so no document is in both splits.
- Real (Limited): the ``limited_fraction`` of Real (Full) (rounded half up) with the
  smallest seeded hash; the caller rejects an empty one or one as large as Real (Full).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from typing import Any, Callable, Iterable, Sequence, TypeVar

from synthctx.provenance import derived_seed

log = logging.getLogger("synthctx.data")

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


def linked_groups(
    items: Iterable[T], seed: int, id_of: Callable[[T], str], links_of: Callable[[T], Iterable[str]]
) -> list[list[T]]:
    """``items`` in connected components over shared link keys, in seeded-hash order.

    Two items are in one group when they share a key, directly or through other items.
    Members are sorted by the seeded hash of their id, groups by their first member, so
    a group of one sits exactly where :func:`order_by_hash` would put it.
    """
    ordered = order_by_hash(items, seed, id_of)
    parent = list(range(len(ordered)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, item in enumerate(ordered):
        for key in links_of(item):
            if key in owner:
                a, b = root(owner[key]), root(i)
                # the smaller index (earlier in hash order) stays the root
                parent[max(a, b)] = min(a, b)
            else:
                owner[key] = i
    groups: dict[int, list[T]] = {}
    for i, item in enumerate(ordered):
        groups.setdefault(root(i), []).append(item)
    return [groups[r] for r in sorted(groups)]


def linked_to(groups: Iterable[Sequence[T]], taken: set[str], id_of: Callable[[T], str]) -> set[str]:
    """Ids not in ``taken`` of the members of every group (of :func:`linked_groups`) holding a taken id.

    The eval split may be drawn from a subset of the candidates (MuSiQue: the ``hops``
    questions) while training also uses others (``train_hops``); a candidate outside that
    subset can still share a key with an eval question, directly or through other
    candidates, so the groups here are those over ALL candidates.
    """
    out: set[str] = set()
    for group in groups:
        ids = [id_of(item) for item in group]
        if any(i in taken for i in ids):
            out.update(i for i in ids if i not in taken)
    return out


def take_eval_groups(
    groups: Sequence[Sequence[Any]],
    count: int,
    build: Callable[[Any], Any],
    dropped: Counter,
    on_success: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Whole groups, in order, until ``count`` examples are built; and the candidates left.

    A group with more candidates than the room left is passed over (it stays for
    training), so the eval split never exceeds ``count`` and no group is split.
    Candidates that fail to build are counted in ``dropped`` by reason, as in
    :func:`take_buildable`.
    """
    examples: list[dict[str, Any]] = []
    rest: list[Any] = []
    for group in groups:
        if len(examples) >= count or len(group) > count - len(examples):
            rest.extend(group)
            continue
        for cand in group:
            _build_into(examples, cand, build, dropped, on_success)
    return examples, rest


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
        _build_into(examples, cand, build, dropped, on_success)
    return examples, remaining[used:]


def _build_into(examples: list[dict[str, Any]], cand: Any, build: Callable[[Any], Any], dropped: Counter,
                on_success: Callable[[], None] | None) -> None:
    """Build one candidate: append its example, or count its drop reason."""
    result = build(cand)
    if result.example is None:
        dropped[result.reason] += 1
        log.info("dropped %s: %s", getattr(cand, "example_id", cand), result.reason)
        return
    examples.append(result.example)
    if on_success:
        on_success()


def assign(examples: Sequence[dict[str, Any]], split: str, condition: str) -> list[dict[str, Any]]:
    """Copies of ``examples`` with their split and condition set."""
    out = []
    for ex in examples:
        ex = copy.deepcopy(ex)
        ex["split"], ex["condition"] = split, condition
        out.append(ex)
    return out


def limited_size(total: int, fraction: float) -> int:
    """``fraction`` of ``total`` rounded half up (0 when it rounds to nothing)."""
    return min(total, math.floor(fraction * total + 0.5))


def limited_subset(examples: Sequence[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """Seeded subset of ``fraction`` of ``examples`` (rounded half up), in their original order."""
    n = limited_size(len(examples), fraction)
    if n == 0:
        return []
    ranked = sorted(examples, key=lambda ex: (derived_seed(seed, "real-limited", ex["example_id"]), ex["example_id"]))
    keep = {ex["example_id"] for ex in ranked[:n]}
    return [ex for ex in examples if ex["example_id"] in keep]
