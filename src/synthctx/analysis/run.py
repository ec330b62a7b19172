"""Entry points of the analysis rules: similarity + Figure 3, Table 2, heatmaps, NIAH report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from synthctx.analysis import similarity as sim
from synthctx.provenance import provenance
from synthctx.schema import SCHEMAS, read_table, write_table

log = logging.getLogger("synthctx.analysis")


def _read_heads(paths: Sequence[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """Head-score tables keyed by (task, condition), read from their own rows."""
    out = {}
    for path in paths:
        frame = read_table(path, "head_scores")
        if frame.empty:
            raise ValueError(f"{path}: empty head_scores table")
        out[(str(frame["task"].iloc[0]), str(frame["condition"].iloc[0]))] = frame
    return out


def run_similarity(*, model: str, head_files: Sequence[str], prediction_files: Sequence[str], top_k: int,
                   threshold: float, output: str) -> pd.DataFrame:
    """similarity.parquet: every condition's heads against the real_full model of the same task and
    training recipe (:func:`synthctx.study.recipe_reference`; the main recipe's where the recipe
    trained no Real (Full))."""
    heads = _read_heads(head_files)
    scores: dict[str, dict[str, float]] = {}
    for path in prediction_files:
        preds = read_table(path, "predictions")
        for task, group in preds.groupby("task"):
            scores[str(task)] = sim.condition_scores(group)
    rows = []
    for task in dict.fromkeys(t for t, _ in heads):
        per_condition = {c: f for (t, c), f in heads.items() if t == task}
        for reference, group in sim.reference_groups(per_condition).items():
            rows += sim.similarity_rows(model, task, group, scores.get(task, {}), top_k, threshold, reference)
    frame = pd.DataFrame(rows)
    _log_similarity(frame)
    write_table(frame, output, "head_similarity", provenance(model=model, top_k=top_k, threshold=threshold))
    return frame


def run_correlations(*, similarity_path: str, synthetic: Sequence[str], output: str, figure: str,
                     seed: int) -> pd.DataFrame:
    """correlations.parquet and Figure 3 (``seed``: the permutation tests above EXACT_MAX_N points)."""
    from synthctx.analysis.figures import figure3

    from synthctx.study import recipe_of, recipe_suffix, recipes_of

    similarity = read_table(similarity_path, "head_similarity")
    # one Spearman per training recipe, over its own synthetic conditions (measures of an extra
    # recipe named "<measure>__<recipe>")
    rows = [row for recipe in recipes_of(synthetic) for row in sim.correlation_rows(
        similarity, [c for c in synthetic if recipe_of(c) == recipe], seed, suffix=recipe_suffix(recipe))]
    frame = pd.DataFrame(rows, columns=SCHEMAS["correlations"].names)
    for row in frame.itertuples():
        log.info("%s %s: Spearman rho %.3f (n=%d), two-sided p %.4f (%s)", row.task, row.measure, row.spearman_rho,
                 row.n_conditions, row.p_value, row.p_method)
    model = str(similarity["model"].iloc[0]) if len(similarity) else ""
    write_table(frame, output, "correlations", provenance(
        model=model, synthetic=list(synthetic), seed=seed, exact_max_n=sim.EXACT_MAX_N, permutations=sim.PERMUTATIONS))
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    figure3(similarity, frame, synthetic, figure)
    return frame


def _log_similarity(frame: pd.DataFrame) -> None:
    """One line per compared model; a warning where the reference has no retrieval head, since
    every similarity to it is then undefined (NaN) and that task drops out of Figure 3."""
    for row in frame.itertuples():
        log.info("%s/%s %s: %d positive heads, cosine %.3f, recall top-k %.3f, score %.3f", row.task,
                 row.condition, row.head_kind, row.positive_heads, row.cosine, row.recall_topk, row.score)
    from synthctx.study import recipe_reference

    reference = frame[frame["condition"].map(lambda c: c == recipe_reference(c)) & (frame["positive_heads"] == 0)]
    for row in reference.itertuples():
        log.warning("%s %s: the Real (Full) model has no head with a positive score, so cosine and recall "
                    "against it are undefined (NaN)", row.task, row.head_kind)


def run_table2(*, model: str, head_files: Sequence[str], output: str, markdown: str) -> pd.DataFrame:
    """Table 2: cross-task cosine of the real_full models' head vectors, Parquet + Markdown."""
    heads = {task: frame for (task, _), frame in _read_heads(head_files).items()}
    vectors = sim.cross_task_vectors(heads)
    frame = pd.DataFrame(sim.cross_task_rows(model, vectors))
    write_table(frame, output, "cross_task", provenance(model=model))
    empty = [name for name, vector in vectors.items() if sim.positive_heads(vector) == 0]
    for name in empty:
        log.warning("%s: the Real (Full) model has no head with a positive score; its cosines are n/a", name)
    text = (f"# Table 2: cross-task cosine similarity of retrieval-score vectors ({model}, Real (Full) models)\n\n"
            + sim.markdown_matrix(frame))
    if empty:
        text += (f"\nn/a: no head of {', '.join(empty)} scored above 0 (the model copied no needle token while "
                 "decoding), so its cosine is undefined.\n")
    Path(markdown).write_text(text)
    return frame


def run_heatmap(*, model: str, task: str, head_files: Sequence[str], output: str) -> None:
    from synthctx.analysis.figures import heatmap_grid
    from synthctx.study import display_order, task_title

    heads = _read_heads(head_files)
    conditions = [c for t, c in heads if t == task]
    conditions = display_order(conditions)
    kinds = sorted({k for (t, _), f in heads.items() if t == task for k in f["head_kind"].unique()},
                   key=lambda k: (k != "retrieval", k))
    matrices = {
        (kind, c): sim.head_matrix(heads[(task, c)], kind)
        for c in conditions
        for kind in kinds
        if (heads[(task, c)]["head_kind"] == kind).any()
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    heatmap_grid(matrices, conditions, kinds, f"{model} / {task_title(task)}: retrieval score per layer x head", output,
                 task=task)


def niah_summary(set1: pd.DataFrame, set2: pd.DataFrame, top_k: int) -> dict:
    """Top-K heads of each needle set, their overlap and the cosine of the two score vectors."""
    v1, v2 = sim.head_vector(set1, "niah"), sim.head_vector(set2, "niah")
    m1 = sim.head_matrix(set1, "niah")
    heads_per_layer = m1.shape[1]
    top1, top2 = sim.top_k_heads(v1, top_k), sim.top_k_heads(v2, top_k)

    def ranked(vec, chosen):
        return [(i // heads_per_layer, i % heads_per_layer, float(vec[i])) for i in sorted(chosen, key=lambda i: -vec[i])]

    return {
        "top_set1": ranked(v1, top1), "top_set2": ranked(v2, top2),
        "overlap": len(top1 & top2), "top_k": top_k,
        "common": sorted((i // heads_per_layer, i % heads_per_layer) for i in top1 & top2),
        "cosine": sim.cosine(v1, v2),
        "positive": (sim.positive_heads(v1), sim.positive_heads(v2)),
        "n_examples": (int(set1["n_examples"].iloc[0]), int(set2["n_examples"].iloc[0])),
        "n_seen": (int(set1["n_seen"].iloc[0]), int(set2["n_seen"].iloc[0])),
        "total_heads": len(v1),
    }


def run_niah_report(*, model: str, set1: str, set2: str, top_k: int, output: str) -> dict:
    summary = niah_summary(read_table(set1, "head_scores"), read_table(set2, "head_scores"), top_k)
    lines = [
        f"# NIAH retrieval heads ({model}, base model)", "",
        f"Examples counted (answer recall >= threshold) / decoded: set1 {summary['n_examples'][0]}/{summary['n_seen'][0]}, "
        f"set2 {summary['n_examples'][1]}/{summary['n_seen'][1]}.",
        f"Heads with positive score: set1 {summary['positive'][0]}, set2 {summary['positive'][1]} "
        f"(of {summary['total_heads']}).",
        f"Top-{top_k} overlap: **{summary['overlap']}/{top_k}**; cosine(set1, set2) = {summary['cosine']:.3f}.",
        f"Common heads (layer, head): {summary['common']}", "",
        "| rank | set1 head (L, H) | set1 score | set2 head (L, H) | set2 score |", "|---|---|---|---|---|",
    ]
    for rank in range(max(len(summary["top_set1"]), len(summary["top_set2"]))):
        a = summary["top_set1"][rank] if rank < len(summary["top_set1"]) else None
        b = summary["top_set2"][rank] if rank < len(summary["top_set2"]) else None
        cell = lambda x: (f"({x[0]}, {x[1]})", f"{x[2]:.3f}") if x else ("", "")  # noqa: E731
        lines.append(f"| {rank + 1} | {cell(a)[0]} | {cell(a)[1]} | {cell(b)[0]} | {cell(b)[1]} |")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text("\n".join(lines) + "\n")
    return summary
