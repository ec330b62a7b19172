"""Table 1: per task and condition, mean score, bootstrap CI, and a paired bootstrap test
against the best synthetic condition of the column (STUDY.md section 6).

Dagger (``significantly_worse``): the best synthetic condition beats this condition with
p < alpha, where p is the one-sided paired-bootstrap p-value of Koehn (2004): the fraction
of resamples (examples drawn with replacement, the same draw for both systems) in which the
best synthetic condition does NOT score higher. Identical systems therefore get p = 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from synthctx.provenance import derived_seed, provenance
from synthctx.schema import ArtifactError, read_table, write_table

TASK_TITLES = {"mdqa": "MDQA", "musique": "MuSiQue", "summhay": "SummHay"}
_AXIS = {"high": "High", "low": "Low"}


def condition_label(task: str, condition: str) -> str:
    """The paper's row label; SummHay calls its low-expression needle "Simplified"."""
    fixed = {"symbolic": "Symbolic / Symbolic", "real_full": "Real Data (Full)",
             "real_limited": "Real Data (Limited)", "nonft": "Non-FT"}
    if condition in fixed:
        return fixed[condition]
    concept, context = condition.split("_")
    concept_label = "Simplified" if (task == "summhay" and concept == "low") else _AXIS[concept]
    return f"{concept_label} / {_AXIS[context]}"


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(scores: Sequence[float], resamples: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean."""
    scores = np.asarray(scores, dtype=float)
    means = scores[resample_indices(len(scores), resamples, seed)].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_bootstrap_pvalue(better: Sequence[float], other: Sequence[float], resamples: int, seed: int) -> float:
    """One-sided p-value that ``better`` beats ``other`` on paired per-example scores."""
    better, other = np.asarray(better, dtype=float), np.asarray(other, dtype=float)
    if better.shape != other.shape or better.ndim != 1 or len(better) == 0:
        raise ValueError("paired bootstrap needs two equally long, non-empty score vectors")
    delta = (better - other)[resample_indices(len(better), resamples, seed)].mean(axis=1)
    return float(np.mean(delta <= 0))


def build_table1(predictions: Mapping[str, pd.DataFrame], model: str, synthetic: Sequence[str], real: Sequence[str],
                 resamples: int, alpha: float, seed: int) -> pd.DataFrame:
    """One row per (task, condition) from each task's ``predictions`` table."""
    order = [*synthetic, *real, "nonft"]
    rows = []
    for task, frame in predictions.items():
        scores = frame.pivot_table(index="example_id", columns="condition", values="score", aggfunc="first")
        missing = [c for c in order if c not in scores.columns]
        if missing:
            raise ArtifactError(f"predictions of {model}/{task}: conditions {missing} missing")
        if scores[order].isna().any().any():
            raise ArtifactError(f"predictions of {model}/{task}: conditions were scored on different examples")
        means = scores[order].mean()
        best = max(synthetic, key=lambda c: (means[c], -list(synthetic).index(c)))
        # One draw of example indices per task, shared by all conditions (paired).
        test_seed = derived_seed(seed, "table1", model, task)
        for condition in order:
            values = scores[condition].to_numpy()
            low, high = bootstrap_ci(values, resamples, derived_seed(seed, "table1_ci", model, task, condition), alpha)
            p = np.nan if condition == best else paired_bootstrap_pvalue(scores[best].to_numpy(), values, resamples,
                                                                          test_seed)
            rows.append({
                "model": model, "task": task, "condition": condition, "label": condition_label(task, condition),
                "score": float(values.mean()), "n": len(values), "ci_low": low, "ci_high": high,
                "is_best_synthetic": condition == best, "p_vs_best_synthetic": p,
                "significantly_worse": bool(condition != best and p < alpha),
            })
    return pd.DataFrame(rows)


def _cell(row: pd.Series) -> str:
    text = f"{row['score']:.2f}"
    if row["is_best_synthetic"]:
        return f"**{text}**"
    return text + ("†" if row["significantly_worse"] else "")


def table1_markdown(table: pd.DataFrame, alpha: float, resamples: int) -> str:
    """The paper's layout (conditions x tasks), then every number with its CI and p-value."""
    model = table["model"].iloc[0]
    tasks = list(dict.fromkeys(table["task"]))
    conditions = list(dict.fromkeys(table["condition"]))
    lines = [f"# Table 1: {model}", "",
             f"Score per condition (MDQA token F1, MuSiQue answer F1, SummHay citation F1). **bold**: best synthetic "
             f"condition of the column; †: the best synthetic condition beats this one (one-sided paired bootstrap, "
             f"{resamples} resamples, p < {alpha}).", ""]
    header = ["Concept / Context"]
    for i, task in enumerate(tasks):
        header += (["SummHay concept"] if task == "summhay" and i > 0 else []) + [TASK_TITLES.get(task, task)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(r.task, r.condition): r for r in table.itertuples(index=False)}
    for condition in conditions:
        cells = []
        for i, task in enumerate(tasks):
            row = pd.Series(by_key[(task, condition)]._asdict())
            if i == 0:
                cells.append(row["label"])
            if task == "summhay" and i > 0:
                cells.append(row["label"])
            cells.append(_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Details", "", "| task | condition | score | 95% CI | n | p vs best synthetic |", "|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        p = "best" if r.is_best_synthetic else f"{r.p_vs_best_synthetic:.4f}"
        lines.append(f"| {r.task} | {r.label} | {r.score:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n} | {p} |")
    return "\n".join(lines) + "\n"


def plot_table1(table: pd.DataFrame, path: str | Path) -> None:
    """One panel per task: bars with bootstrap CIs; best synthetic dark, daggers marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task].reset_index(drop=True)
        colors = ["#1f4e79" if b else ("#7f7f7f" if c in ("real_full", "real_limited", "nonft") else "#8fb3d9")
                  for b, c in zip(sub["is_best_synthetic"], sub["condition"])]
        err = np.vstack([sub["score"] - sub["ci_low"], sub["ci_high"] - sub["score"]]).clip(min=0)
        ax.bar(range(len(sub)), sub["score"], yerr=err, color=colors, capsize=3)
        for i, r in sub.iterrows():
            mark = "†" if r["significantly_worse"] else ""
            ax.text(i, r["ci_high"] + 0.01, f"{r['score']:.2f}{mark}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(sub)), sub["label"], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, max(1.0, float(sub["ci_high"].max()) + 0.1))
        ax.set_title(TASK_TITLES.get(task, task))
        ax.set_ylabel("score (F1)")
    fig.suptitle(f"Table 1: {table['model'].iloc[0]} (dark: best synthetic; †: significantly worse)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_table1(prediction_paths: Sequence[str], table_path: str, markdown_path: str, figure_path: str,
                settings: Mapping[str, Any]) -> pd.DataFrame:
    """Entry point of the ``table1`` rule."""
    predictions = {}
    for task, path in zip(settings["tasks"], prediction_paths, strict=True):
        frame = read_table(path, "predictions")
        found = set(frame["task"])
        if found != {task}:
            raise ArtifactError(f"{path}: field 'task' is {sorted(found)}, expected {task!r}")
        predictions[task] = frame
    table = build_table1(predictions, settings["model"], settings["synthetic"], settings["real"],
                         int(settings["resamples"]), float(settings["alpha"]), int(settings["seed"]))
    meta = provenance(seed=settings["seed"], model=settings["model"], resamples=settings["resamples"],
                      alpha=settings["alpha"], inputs=[str(p) for p in prediction_paths])
    write_table(table, table_path, "table1", meta)
    md = table1_markdown(table, float(settings["alpha"]), int(settings["resamples"]))
    Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
    Path(markdown_path).write_text(md)
    plot_table1(table, figure_path)
    return table
