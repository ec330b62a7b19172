"""Figure 4 (knockout score drops) and Table 3 (patching) from intervention predictions."""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from synthctx.causal.stats import paired_bootstrap
from synthctx.study import condition_label, display_order, recipe_of, recipe_reference, task_title
from synthctx.provenance import derived_seed
from synthctx.schema import ArtifactError, read_table

PATCH_LABELS = {"patch_intersection": "Inter.", "patch_complement": "Compl.", "patch_random": "Rand."}


def read_predictions(paths: Iterable[str]) -> pd.DataFrame:
    frames = [read_table(p, "intervention_predictions").assign(_path=str(p)) for p in paths]
    if not frames:
        raise ArtifactError("no intervention prediction tables given")
    return pd.concat(frames, ignore_index=True)


def _per_example(df: pd.DataFrame, intervention: str, where: str) -> pd.Series:
    """Score per example of one intervention, averaged over random draws."""
    part = df[df["intervention"] == intervention]
    if part.empty:
        raise ArtifactError(f"{where}: no rows with intervention {intervention!r}")
    return part.groupby("example_id")["score"].mean()


def _n_heads(df: pd.DataFrame, intervention: str) -> int:
    sizes = {len(json.loads(h)) for h in df.loc[df["intervention"] == intervention, "heads"]}
    return int(max(sizes)) if sizes else 0


def _summarize(df: pd.DataFrame, interventions: Sequence[str], resamples: int, alpha: float,
               seed: int) -> pd.DataFrame:
    rows = []
    for (model, task, condition), group in df.groupby(["model", "task", "condition"], sort=True):
        where = ", ".join(sorted(set(group["_path"])))
        baseline = _per_example(group, "none", where)
        for intervention in interventions:
            treated = _per_example(group, intervention, where)
            if set(treated.index) != set(baseline.index):
                raise ArtifactError(f"{where}: {intervention} and none cover different examples")
            treated = treated.loc[baseline.index]
            result = paired_bootstrap(treated.to_numpy(), baseline.to_numpy(), resamples,
                                      derived_seed(seed, "bootstrap", model, task, condition, intervention), alpha)
            rows.append({"model": model, "task": task, "condition": condition, "intervention": intervention,
                         "n_heads": _n_heads(group, intervention), "score": result.score,
                         "baseline_score": result.baseline_score, "delta": result.delta,
                         "ci_low": result.ci_low, "ci_high": result.ci_high, "p_value": result.p_value})
    return pd.DataFrame(rows)


def knockout_summary(predictions: pd.DataFrame, resamples: int, alpha: float, seed: int) -> pd.DataFrame:
    """Per (task, condition): top-K and random knockout vs the unmasked model (random draws averaged)."""
    return _summarize(predictions, ["knockout_topk", "knockout_random"], resamples, alpha, seed)


def patching_summary(predictions: pd.DataFrame, resamples: int, alpha: float, seed: int) -> pd.DataFrame:
    """Per (task, synthetic condition) and patch set: patched vs original recipient."""
    return _summarize(predictions, list(PATCH_LABELS), resamples, alpha, seed)


def _task_order() -> list[str]:
    from synthctx.tasks import task_names

    return task_names()


def _order(values: Iterable[str], reference: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    return sorted(values, key=lambda v: (reference.index(v) if v in reference else len(reference), v))


def plot_figure4(summary: pd.DataFrame, path: str, title: str = "") -> None:
    """One panel per task: score drop (unmasked - masked) per condition, top-K vs random, 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _order(summary["task"], _task_order())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        part = summary[summary["task"] == task]
        conditions = display_order(part["condition"])
        x = np.arange(len(conditions))
        for offset, (intervention, label, color) in zip(
            (-0.2, 0.2), (("knockout_topk", "top-K heads", "#c0392b"), ("knockout_random", "random heads", "#7f8c8d"))
        ):
            rows = part[part["intervention"] == intervention].set_index("condition").reindex(conditions)
            drop = -rows["delta"].to_numpy()
            # Percentile intervals need not be centred on the mean: clip so matplotlib accepts them.
            err = np.clip(np.vstack([drop + rows["ci_high"].to_numpy(), -rows["ci_low"].to_numpy() - drop]), 0, None)
            ax.bar(x + offset, drop, width=0.4, label=label, color=color, yerr=err, capsize=3)
            if intervention == "knockout_topk":
                # a model without retrieval heads has nothing to knock out: say so instead of a zero bar
                for position, n_heads in zip(x, rows["n_heads"].to_numpy()):
                    if n_heads == 0:
                        ax.annotate("no retrieval\nheads", (position, 0), xytext=(0, 6), textcoords="offset points",
                                    ha="center", fontsize=7, color="tab:gray")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, [condition_label(c, task) for c in conditions], rotation=35, ha="right")
        ax.set_title(task_title(task))
    axes[0][0].set_ylabel("score drop (unmasked - masked)")
    axes[0][-1].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _cell(row: Mapping, alpha: float) -> str:
    mark = "*" if row["p_value"] < alpha else ""
    return f"{row['score']:.3f} ({row['delta']:+.3f}{mark}, n={int(row['n_heads'])}, p={row['p_value']:.3f})"


def table3_markdown(summary: pd.DataFrame, alpha: float, title: str = "") -> str:
    """Table 3 as Markdown: original vs patched recipient score per head set."""
    lines = []
    if title:
        lines += [f"# {title}", ""]
    lines += [
        "| Task | Synthetic | Orig. | " + " | ".join(PATCH_LABELS.values()) + " |",
        "|---|---|---|" + "---|" * len(PATCH_LABELS),
    ]
    for task in _order(summary["task"], _task_order()):
        part = summary[summary["task"] == task]
        for condition in display_order(part["condition"]):
            rows = part[part["condition"] == condition].set_index("intervention")
            orig = rows["baseline_score"].iloc[0]
            cells = [_cell(rows.loc[i], alpha) if i in rows.index else "-" for i in PATCH_LABELS]
            lines.append(f"| {task_title(task)} | {condition_label(condition, task)} | "
                         f"{orig:.3f} | " + " | ".join(cells) + " |")
    lines += ["", f"Cells: patched score (delta vs Orig., * p < {alpha} paired bootstrap; n = heads patched)."]
    recipes = {c: recipe_reference(c) for c in display_order(summary["condition"]) if recipe_of(c) is not None}
    if recipes:  # a training recipe's recipient takes its heads from that recipe's Real (Full) model
        lines.append("Donor: Real (Full) of the recipient's training recipe ("
                     + "; ".join(f"{condition_label(c)}: {condition_label(d)}" for c, d in recipes.items()) + ").")
    return "\n".join(lines) + "\n"


def write_figure4(knockout_paths: Iterable[str], figure_path: str, summary_path: str, *, model: str,
                  resamples: int, alpha: float, seed: int) -> pd.DataFrame:
    """Figure 4 and its numbers (intervention_summary) from every knockout table of one model."""
    from synthctx.provenance import provenance
    from synthctx.schema import write_table

    summary = knockout_summary(read_predictions(knockout_paths), resamples, alpha, seed)
    plot_figure4(summary, figure_path, title=f"{model}: knockout of top-K retrieval heads vs random heads")
    write_table(summary, summary_path, "intervention_summary",
                provenance(seed=seed, model=model, resamples=resamples, alpha=alpha))
    return summary


def write_table3(patching_paths: Iterable[str], markdown_path: str, table_path: str, *, model: str,
                 resamples: int, alpha: float, seed: int) -> pd.DataFrame:
    """Table 3 (Markdown + intervention_summary Parquet) from every patching table of one model."""
    from pathlib import Path

    from synthctx.provenance import provenance
    from synthctx.schema import write_table

    summary = patching_summary(read_predictions(patching_paths), resamples, alpha, seed)
    text = table3_markdown(summary, alpha, title=f"Table 3 ({model}): patching Real (Full) heads into synthetic-data models")
    write_table(summary, table_path, "intervention_summary",
                provenance(seed=seed, model=model, resamples=resamples, alpha=alpha))
    Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(markdown_path).with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(markdown_path)
    return summary
