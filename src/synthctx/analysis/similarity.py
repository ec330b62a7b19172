"""Comparisons of head-score vectors (STUDY.md section 6).

* head vector: the scores of all (layer, head) pairs of one model, one task, one head kind,
  ordered by (layer, head);
* cosine similarity of two full vectors (NaN when either is all zero);
* head sets: H_topk = the K highest-scoring heads among those with a positive score (a head
  with score 0 never retrieved anything, so it is not a retrieval head even when fewer than K
  heads score); H_threshold = heads with score > threshold (Wu et al.: 0.1);
* recall = |H_syn ∩ H_real| / |H_real| (NaN when H_real is empty);
* Spearman rho (and its two-sided p-value) of a similarity measure with the downstream score
  across the synthetic conditions of one task (Figure 3); NaN with fewer than 3 finite points
  or a constant series.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

MEASURES = ("cosine", "recall_topk", "recall_threshold")


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


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman rho, two-sided p-value and the number of finite pairs used."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if np.isfinite(a) and np.isfinite(b)]
    if len(pairs) < 3:
        return math.nan, math.nan, len(pairs)
    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan, math.nan, len(pairs)
    result = spearmanr(xs, ys)
    return float(result.statistic), float(result.pvalue), len(pairs)


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


def correlation_rows(similarity: pd.DataFrame, synthetic: Iterable[str]) -> list[dict]:
    """Spearman of each measure with the score over the synthetic conditions, per task and head kind.

    The measure is named ``<measure>`` for retrieval heads and ``<head_kind>_<measure>`` otherwise.
    """
    synthetic = list(synthetic)
    rows = []
    for (model, task, head_kind), group in similarity.groupby(["model", "task", "head_kind"], sort=True):
        group = group[group["condition"].isin(synthetic)]
        for measure in MEASURES:
            rho, p, n = spearman(group[measure].tolist(), group["score"].tolist())
            name = measure if head_kind == "retrieval" else f"{head_kind}_{measure}"
            rows.append({"model": model, "task": task, "measure": name, "spearman_rho": rho, "p_value": p, "n_conditions": n})
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
    """Table 2 rows: mdqa, musique (retrieval), summhay_insight, summhay_retrieval, in that order."""
    out = {}
    for task in ("mdqa", "musique", "summhay"):
        if task not in heads:
            continue
        frame = heads[task]
        if task == "summhay":
            for kind in ("insight", "retrieval"):
                if (frame["head_kind"] == kind).any():
                    out[f"summhay_{kind}"] = head_vector(frame, kind)
        else:
            out[task] = head_vector(frame, "retrieval")
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
