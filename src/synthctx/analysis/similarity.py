"""Comparisons of head-score vectors (STUDY.md section 6).

* head vector: the scores of all (layer, head) pairs of one model, one task, one head kind,
  ordered by (layer, head);
* cosine similarity of two full vectors (NaN when either is all zero);
* head sets: H_topk = the K highest-scoring heads among those with a positive score (a head
  with score 0 never retrieved anything, so it is not a retrieval head even when fewer than K
  heads score); H_threshold = heads with score > threshold (Wu et al.: 0.1);
* recall = |H_syn ∩ H_real| / |H_real| (NaN when H_real is empty);
* Spearman rho of a similarity measure with the downstream score across the synthetic
  conditions of one task (Figure 3), with n (the finite pairs used) and a two-sided
  permutation p-value: P(|rho| >= |observed rho|) when the scores are shuffled over the
  conditions. Exact (all n! orderings) up to ``EXACT_MAX_N`` points, the study's case (at most
  five synthetic conditions, where the asymptotic t-approximation is far off: five perfectly
  monotone points give exact p = 2/120, the approximation ~0); beyond that a seeded Monte Carlo
  test. Ties take average ranks and the permutations shuffle those ranks (the conditional
  null). NaN with fewer than 3 finite points or a constant series.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

MEASURES = ("cosine", "recall_topk", "recall_threshold")
# Up to 8 points every ordering is enumerated (8! = 40,320); beyond, PERMUTATIONS random ones.
EXACT_MAX_N = 8
PERMUTATIONS = 100_000


def head_vector(frame: pd.DataFrame, head_kind: str) -> np.ndarray:
    """Scores of one head kind ordered by (layer, head)."""
    rows = frame[frame["head_kind"] == head_kind].sort_values(["layer", "head"])
    if rows.empty:
        raise ValueError(f"no {head_kind!r} heads in the head-score table")
    return rows["score"].to_numpy(dtype=float)


def head_matrix(frame: pd.DataFrame, head_kind: str) -> np.ndarray:
    rows = frame[frame["head_kind"] == head_kind]
    layers, heads = int(rows["layer"].max()) + 1, int(rows["head"].max()) + 1
    matrix = np.zeros((layers, heads))
    matrix[rows["layer"].to_numpy(), rows["head"].to_numpy()] = rows["score"].to_numpy(dtype=float)
    return matrix


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"head vectors differ in size: {a.shape} vs {b.shape}")
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else math.nan


def top_k_heads(scores: np.ndarray, k: int) -> set[int]:
    """Indices of the k best heads with a positive score (ties: lower index first)."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    return {int(i) for i in order[:k] if scores[i] > 0}


def threshold_heads(scores: np.ndarray, threshold: float) -> set[int]:
    return {int(i) for i in np.flatnonzero(np.asarray(scores, dtype=float) > threshold)}


def recall(synthetic: set[int], real: set[int]) -> float:
    return len(synthetic & real) / len(real) if real else math.nan


def positive_heads(scores: np.ndarray) -> int:
    return int((np.asarray(scores) > 0).sum())


class Correlation(NamedTuple):
    """Spearman rho, its two-sided p-value, the number of finite pairs and how p was computed
    (``exact``, ``permutation``, or ``undefined`` when rho is NaN)."""

    rho: float
    p_value: float
    n: int
    p_method: str


def _rank_correlations(x_ranks: np.ndarray, y_ranks: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Pearson correlation of x_ranks with y_ranks reordered by each row of ``orders``
    (centring and norms are the same for every reordering)."""
    xc, yc = x_ranks - x_ranks.mean(), y_ranks - y_ranks.mean()
    return (yc[orders] @ xc) / (np.linalg.norm(xc) * np.linalg.norm(yc))


def spearman(x: Sequence[float], y: Sequence[float], seed: int | None = None, *, exact_max_n: int = EXACT_MAX_N,
             permutations: int = PERMUTATIONS) -> Correlation:
    """Spearman rho with a two-sided permutation p-value (exact up to ``exact_max_n`` points;
    above, ``permutations`` seeded random orderings, p = (1 + hits) / (1 + permutations))."""
    from scipy.stats import rankdata

    pairs = [(a, b) for a, b in zip(x, y) if np.isfinite(a) and np.isfinite(b)]
    n = len(pairs)
    if n < 3:
        return Correlation(math.nan, math.nan, n, "undefined")
    xs, ys = (np.asarray(v, dtype=float) for v in zip(*pairs))
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return Correlation(math.nan, math.nan, n, "undefined")
    x_ranks, y_ranks = rankdata(xs), rankdata(ys)  # ties: average ranks
    rho = float(_rank_correlations(x_ranks, y_ranks, np.arange(n)[None, :])[0])
    # |rho| of a reordering equal to the observed one up to float rounding counts as a hit
    tolerance = 1e-9
    if n <= exact_max_n:
        orders = np.array(list(itertools.permutations(range(n))))
        null = _rank_correlations(x_ranks, y_ranks, orders)
        p, method = float(np.mean(np.abs(null) >= abs(rho) - tolerance)), "exact"
    else:
        if seed is None:
            raise ValueError(f"spearman: {n} points need a seed for the permutation test (exact up to {exact_max_n})")
        rng = np.random.default_rng(seed)
        orders = np.argsort(rng.random((permutations, n)), axis=1)
        hits = int(np.sum(np.abs(_rank_correlations(x_ranks, y_ranks, orders)) >= abs(rho) - tolerance))
        p, method = (1 + hits) / (1 + permutations), "permutation"
    return Correlation(rho, p, n, method)


def condition_scores(predictions: pd.DataFrame) -> dict[str, float]:
    """Downstream (Table 1) score of each condition: the mean per-example score."""
    return {str(c): float(g["score"].mean()) for c, g in predictions.groupby("condition")}


def similarity_rows(
    model: str,
    task: str,
    heads: Mapping[str, pd.DataFrame],
    scores: Mapping[str, float],
    top_k: int,
    threshold: float,
    reference: str = "real_full",
) -> list[dict]:
    """One row per (condition, head kind): similarity of the condition's heads to ``reference``'s."""
    if reference not in heads:
        raise ValueError(f"{model}/{task}: no head scores of the reference condition {reference!r}")
    rows = []
    for head_kind in sorted(heads[reference]["head_kind"].unique()):
        real = head_vector(heads[reference], head_kind)
        real_top, real_thr = top_k_heads(real, top_k), threshold_heads(real, threshold)
        for condition, frame in heads.items():
            vec = head_vector(frame, head_kind)
            rows.append(
                {
                    "model": model, "task": task, "condition": condition, "head_kind": head_kind,
                    "cosine": cosine(vec, real),
                    "recall_topk": recall(top_k_heads(vec, top_k), real_top),
                    "recall_threshold": recall(threshold_heads(vec, threshold), real_thr),
                    "positive_heads": positive_heads(vec),
                    "score": float(scores.get(condition, math.nan)),
                }
            )
    return rows


def reference_groups(heads: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, pd.DataFrame]]:
    """The conditions of one task grouped by the Real (Full) model they are compared with: that
    of their training recipe (:func:`synthctx.study.recipe_reference`) where the study trained it,
    else the main recipe's ``real_full``; each group holds its reference."""
    from synthctx.study import REAL_FULL, recipe_reference

    groups: dict[str, dict[str, pd.DataFrame]] = {}
    for condition, frame in heads.items():
        reference = recipe_reference(condition)
        if reference not in heads:
            reference = REAL_FULL
        groups.setdefault(reference, {})[condition] = frame
    for reference, group in groups.items():
        if reference in heads:
            group.setdefault(reference, heads[reference])
    return groups


def correlation_rows(similarity: pd.DataFrame, synthetic: Iterable[str], seed: int, suffix: str = "") -> list[dict]:
    """Spearman of each measure with the score over the synthetic conditions, per task and head kind.

    The measure is named ``<measure>`` for retrieval heads and ``<head_kind>_<measure>`` otherwise,
    then ``suffix`` (an extra training recipe's ``__<recipe>``).
    ``seed`` (the study seed) seeds a permutation test per row, used only above ``EXACT_MAX_N``
    conditions.
    """
    from synthctx.provenance import derived_seed

    synthetic = list(synthetic)
    rows = []
    for (model, task, head_kind), group in similarity.groupby(["model", "task", "head_kind"], sort=True):
        group = group[group["condition"].isin(synthetic)]
        for measure in MEASURES:
            name = (measure if head_kind == "retrieval" else f"{head_kind}_{measure}") + suffix
            result = spearman(group[measure].tolist(), group["score"].tolist(),
                              derived_seed(seed, "spearman", model, task, name))
            rows.append({"model": model, "task": task, "measure": name, "spearman_rho": result.rho,
                         "p_value": result.p_value, "n_conditions": result.n, "p_method": result.p_method})
    return rows


def cross_task_rows(model: str, vectors: Mapping[str, np.ndarray]) -> list[dict]:
    """Cosine between every pair of real-trained head vectors (Table 2)."""
    names = list(vectors)
    return [
        {"model": model, "row": r, "column": c, "cosine": cosine(vectors[r], vectors[c])}
        for r in names
        for c in names
    ]


def cross_task_vectors(heads: Mapping[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """Table 2 rows: each task's rows (``Task.cross_task_rows``: its name and retrieval heads, or
    one row per head kind, e.g. summhay_insight and summhay_retrieval), tasks in registry order.
    A task nobody registered is an error, never a silently missing row."""
    from synthctx.tasks import get_task, task_names

    order = task_names()
    out = {}
    for task, frame in sorted(heads.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)):
        rows = get_task(task).rows_of_table2()
        for row, kind in rows:
            if len(rows) == 1 or (frame["head_kind"] == kind).any():
                out[row] = head_vector(frame, kind)
    return out


def markdown_matrix(frame: pd.DataFrame, value: str = "cosine", digits: int = 3) -> str:
    """A square row x column table of ``value`` as Markdown."""
    names = list(dict.fromkeys(frame["row"]))
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    table = {(r, c): v for r, c, v in zip(frame["row"], frame["column"], frame[value])}
    for r in names:
        cells = [f"{table[(r, c)]:.{digits}f}" if np.isfinite(table[(r, c)]) else "n/a" for c in names]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
