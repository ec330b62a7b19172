"""Which heads the causal tests intervene on: top-K, random controls, patching sets.

Ranking rule (used everywhere): retrieval score descending, ties broken by (layer, head)
ascending, so a ranking is a pure function of the score table. Random sets are drawn with a
``numpy`` generator seeded from the config seed (``derived_seed``) and returned sorted.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from synthctx.causal.interventions import Head
from synthctx.schema import ArtifactError

PATCH_SETS = ("intersection", "complement", "random")


def ranked_heads(scores: pd.DataFrame, head_kind: str = "retrieval", where: str = "head scores") -> list[Head]:
    """All heads of a head_scores table of ``head_kind``, best first."""
    table = scores[scores["head_kind"] == head_kind] if "head_kind" in scores.columns else scores
    if table.empty:
        raise ArtifactError(f"{where}: no rows with head_kind {head_kind!r}")
    if table.duplicated(["layer", "head"]).any():
        raise ArtifactError(f"{where}: duplicate (layer, head) rows for head_kind {head_kind!r}")
    ordered = table.assign(_neg=-table["score"].astype(float)).sort_values(["_neg", "layer", "head"], kind="mergesort")
    return [(int(layer), int(head)) for layer, head in zip(ordered["layer"], ordered["head"])]


def positive_ranking(scores: pd.DataFrame, ranking: Sequence[Head], head_kind: str = "retrieval") -> list[Head]:
    """``ranking`` without the heads whose score is not positive: a head that never retrieved
    is no retrieval head, so it neither enters a top-K set nor is excluded from random draws."""
    table = scores[scores["head_kind"] == head_kind] if "head_kind" in scores.columns else scores
    positive = {(int(l), int(h)) for l, h, v in zip(table["layer"], table["head"], table["score"]) if float(v) > 0}
    return [h for h in ranking if tuple(h) in positive]


def top_k_heads(scores: pd.DataFrame, k: int, head_kind: str = "retrieval", where: str = "head scores") -> list[Head]:
    """The ``k`` best heads by retrieval score (sorted by (layer, head) for storage)."""
    return sorted(ranked_heads(scores, head_kind, where)[:k])


def random_heads(all_heads: Sequence[Head], k: int, exclude: Iterable[Head], seed: int) -> list[Head]:
    """``k`` distinct heads drawn uniformly from ``all_heads`` minus ``exclude``."""
    excluded = set(map(tuple, exclude))
    pool = sorted(h for h in map(tuple, all_heads) if h not in excluded)
    if k > len(pool):
        raise ValueError(f"cannot draw {k} random heads: only {len(pool)} heads outside the excluded set")
    if k == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), size=k, replace=False)
    return sorted(pool[i] for i in picks)


def knockout_random_heads(all_heads: Sequence[Head], ranking: Sequence[Head], k: int, exclude_top: int,
                          seed: int) -> list[Head]:
    """Wu et al.'s control: ``k`` random heads outside the model's top ``exclude_top``."""
    return random_heads(all_heads, k, ranking[:exclude_top], seed)


def patch_head_sets(donor_ranking: Sequence[Head], recipient_ranking: Sequence[Head], k: int,
                    all_heads: Sequence[Head], seed: int) -> dict[str, list[Head]]:
    """Patching sets (STUDY.md section 7) from the donor's and the recipient's rankings.

    intersection: in both top-K; complement: donor top-K not in recipient top-K; random: as many
    heads as the intersection, drawn outside both top-K sets.
    """
    donor_top = set(donor_ranking[:k])
    recipient_top = set(recipient_ranking[:k])
    intersection = sorted(donor_top & recipient_top)
    complement = sorted(donor_top - recipient_top)
    random = random_heads(all_heads, len(intersection), donor_top | recipient_top, seed)
    return {"intersection": intersection, "complement": complement, "random": random}
