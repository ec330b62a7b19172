"""Table 1: per task and condition, mean score, bootstrap CI, and a paired bootstrap test
against the best synthetic condition of the column (STUDY.md section 6).

Beside the paper's columns, every row says whether the condition learned more than the
answer format: a trivial baseline row per task (``synthctx.evaluate.baselines``), each
condition's one-sided paired p against Non-FT and against that baseline, its number of
distinct predictions, and for trained conditions the training-set size and whether the
training loss fell (``synthctx.train.health``). The positive control of the study is
Real (Full) beating both Non-FT and the trivial baseline. The evaluation-only conditions of the
study (``nonft``, and ``closed_book``: the base model on the question without the documents) get
rows like the trained ones; a task whose closed-book score cannot measure memory (SummHay: the
citations name documents the prompt does not show) is marked ‡ with its reason.

A study with extra training recipes (config ``training_recipes``) has their conditions as rows
too, labelled "<condition>, <recipe label>"; each recipe has its own best synthetic condition,
against which its conditions get their dagger (only the modules differ between recipes, so
comparing within a recipe is the paper's comparison under that recipe).

Dagger (``significantly_worse``): the best synthetic condition beats this condition with
p < alpha, where p is the one-sided paired-bootstrap p-value of Koehn (2004): the fraction
of resamples (examples drawn with replacement, the same draw for both systems) in which the
best synthetic condition does NOT score higher. Identical systems therefore get p = 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from synthctx.provenance import derived_seed, provenance
from synthctx.schema import ArtifactError, read_table, write_table

from synthctx.study import CLOSED_BOOK, TRIVIAL, base_condition, recipe_of, task_title
from synthctx.study import condition_label as _study_label


def condition_label(task: str, condition: str) -> str:
    """The paper's row label (synthctx.study; a task may rename an axis, SummHay's "Simplified")."""
    return _study_label(condition, task)


def _renames_axes(task: str) -> bool:
    from synthctx.study import _task_axis_labels

    return bool(_task_axis_labels(task))


def _closed_book_note(task: str) -> str | None:
    """Why a task's closed-book score is not a memory baseline (the task's ``closed_book_note``)."""
    from synthctx.tasks import get_task

    try:
        return get_task(task).closed_book_note
    except ValueError:
        return None


def _metric_description(task: str) -> str:
    from synthctx.tasks import get_task

    try:
        return get_task(task).metric_description or f"{task} score"
    except ValueError:
        return f"{task} score"


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


@dataclass
class TaskExtras:
    """What Table 1 needs beside the predictions: the trivial baseline's per-example scores
    (by example id), and per trained condition its training-set size and loss health."""

    trivial_scores: Mapping[str, float] | None = None
    train_examples: Mapping[str, int] = field(default_factory=dict)
    loss_fell: Mapping[str, bool] = field(default_factory=dict)


def build_table1(predictions: Mapping[str, pd.DataFrame], model: str, synthetic: Sequence[str], real: Sequence[str],
                 resamples: int, alpha: float, seed: int,
                 extras: Mapping[str, TaskExtras] | None = None,
                 evaluation: Sequence[str] = ("nonft",),
                 user: Mapping[str, Sequence[str]] | None = None,
                 recipes: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per (task, condition) from each task's ``predictions`` table (plus the trivial baseline
    row of a task whose ``extras`` give its scores). ``evaluation``: the evaluation-only conditions
    (``study.evaluation_conditions``: ``nonft``, and ``closed_book`` when the study runs it).
    ``user``: per task, the user datasets trained for it (config ``datasets:``); they compete with
    the synthetic conditions for the column's best. ``recipes``: per task, the recipe conditions
    trained for it (``<base>__<recipe>``, config ``training_recipes``), rows after the main
    recipe's; those of a synthetic condition or user dataset compete for their recipe's best."""
    from synthctx.evaluate.baselines import distinct_predictions

    rows = []
    for task, frame in predictions.items():
        candidates = [*synthetic, *((user or {}).get(task) or [])]
        order = [*candidates, *real, *dict.fromkeys(["nonft", *evaluation])]
        # recipe -> its candidates for the best synthetic (None: the main recipe)
        groups: dict[str | None, list[str]] = {None: candidates}
        for condition in (recipes or {}).get(task) or []:
            group = groups.setdefault(recipe_of(condition), [])
            if base_condition(condition) in candidates:
                group.append(condition)
        recipe_rows = list((recipes or {}).get(task) or [])
        order += sorted(recipe_rows, key=lambda c: (list(groups).index(recipe_of(c)), c not in groups[recipe_of(c)],
                                                    recipe_rows.index(c)))
        extra = (extras or {}).get(task) or TaskExtras()
        scores = frame.pivot_table(index="example_id", columns="condition", values="score", aggfunc="first")
        missing = [c for c in order if c not in scores.columns]
        if missing:
            raise ArtifactError(f"predictions of {model}/{task}: conditions {missing} missing")
        if scores[order].isna().any().any():
            raise ArtifactError(f"predictions of {model}/{task}: conditions were scored on different examples")
        texts = frame.pivot_table(index="example_id", columns="condition", values="prediction", aggfunc="first")
        columns = list(order)
        if extra.trivial_scores is not None:
            unscored = sorted(set(scores.index) - set(extra.trivial_scores))
            if unscored:
                raise ArtifactError(f"trivial baseline of {model}/{task}: no score for eval examples {unscored[:3]}")
            scores[TRIVIAL] = [float(extra.trivial_scores[i]) for i in scores.index]
            columns.append(TRIVIAL)
        means = scores[order].mean()
        bests = {recipe: max(group, key=lambda c: (means[c], -group.index(c))) if group else None
                 for recipe, group in groups.items()}
        # One draw of example indices per task, shared by all conditions (paired).
        test_seed = derived_seed(seed, "table1", model, task)

        def p_beats(condition: str, other: str) -> float:
            if condition == other or other not in scores.columns:
                return np.nan
            return paired_bootstrap_pvalue(scores[condition].to_numpy(), scores[other].to_numpy(), resamples,
                                           test_seed)

        for condition in columns:
            best = bests.get(recipe_of(condition)) if condition != TRIVIAL else bests[None]
            values = scores[condition].to_numpy()
            low, high = bootstrap_ci(values, resamples, derived_seed(seed, "table1_ci", model, task, condition), alpha)
            p = np.nan if condition == best or best is None else paired_bootstrap_pvalue(
                scores[best].to_numpy(), values, resamples, test_seed)
            distinct = (distinct_predictions([str(t) for t in texts[condition]]) if condition in texts.columns
                        else None)
            rows.append({
                "model": model, "task": task, "condition": condition, "label": condition_label(task, condition),
                "score": float(values.mean()), "n": len(values), "ci_low": low, "ci_high": high,
                "is_best_synthetic": condition == best, "p_vs_best_synthetic": p,
                "significantly_worse": bool(condition != best and best is not None and p < alpha),
                "p_vs_nonft": p_beats(condition, "nonft") if condition != TRIVIAL else np.nan,
                "p_vs_trivial": p_beats(condition, TRIVIAL),
                "distinct_predictions": distinct,
                "train_examples": extra.train_examples.get(condition),
                "loss_fell": extra.loss_fell.get(condition),
            })
    table = pd.DataFrame(rows)
    for column in ("distinct_predictions", "train_examples"):
        table[column] = table[column].astype("Int32")
    table["loss_fell"] = table["loss_fell"].astype("boolean")
    return table


def positive_control(table: pd.DataFrame, alpha: float, reference: str = "real_full") -> pd.DataFrame:
    """Per task: does ``reference`` beat Non-FT and the trivial baseline (one-sided p < alpha)?"""
    rows = []
    for task, sub in table.groupby("task", sort=False):
        ref = sub[sub["condition"] == reference]
        if ref.empty:
            continue
        r = ref.iloc[0]
        beats_nonft = bool(r["p_vs_nonft"] < alpha)
        beats_trivial = bool(pd.notna(r["p_vs_trivial"]) and r["p_vs_trivial"] < alpha)
        rows.append({"task": task, "p_vs_nonft": r["p_vs_nonft"], "p_vs_trivial": r["p_vs_trivial"],
                     "passes": beats_nonft and (beats_trivial or pd.isna(r["p_vs_trivial"]))})
    return pd.DataFrame(rows)


def _cell(row: pd.Series) -> str:
    text = f"{row['score']:.2f}"
    if row["is_best_synthetic"]:
        return f"**{text}**"
    return text + ("†" if row["significantly_worse"] else "")


def _p(value) -> str:
    return "-" if pd.isna(value) else f"{value:.4f}"


def table1_markdown(table: pd.DataFrame, alpha: float, resamples: int,
                    degenerate: Mapping[tuple[str, str], str] | None = None) -> str:
    """The paper's layout (conditions x tasks), then every number with its CI and p-values, the
    positive control per task and the notes (flat training loss, constant predictions).

    ``degenerate``: (task, condition) -> why the condition is degenerate
    (:func:`synthctx.analysis.claims.degenerate_flags`, the claims page's rule): a flag column
    in the details and a note per flagged condition."""
    model = table["model"].iloc[0]
    tasks = list(dict.fromkeys(table["task"]))
    conditions = list(dict.fromkeys(table["condition"]))
    lines = [f"# Table 1: {model}", "",
             f"Score per condition ({', '.join(_metric_description(t) for t in tasks)}). **bold**: best synthetic "
             f"condition of the column; †: the best synthetic condition beats this one (one-sided paired bootstrap, "
             f"{resamples} resamples, p < {alpha})."
             + (" A condition of an extra training recipe (\"<condition>, <recipe>\") is compared with the best "
                "synthetic condition of its own recipe." if any(recipe_of(str(c)) for c in table["condition"])
                else ""), ""]
    header = ["Concept / Context"]
    for i, task in enumerate(tasks):
        header += ([f"{task_title(task)} concept"] if _renames_axes(task) and i > 0 else []) + [task_title(task)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(r.task, r.condition): r for r in table.itertuples(index=False)}
    for condition in conditions:
        cells = []
        for i, task in enumerate(tasks):
            found = by_key.get((task, condition))
            row = pd.Series(found._asdict()) if found is not None else None
            if i == 0:
                cells.append(row["label"] if row is not None else condition_label(task, condition))
            if _renames_axes(task) and i > 0:
                cells.append(row["label"] if row is not None else condition_label(task, condition))
            # ‡: a closed-book score that cannot measure memory (the task's closed_book_note, in the notes)
            mark = "‡" if row is not None and condition == CLOSED_BOOK and _closed_book_note(task) else ""
            cells.append(_cell(row) + mark if row is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")

    control = positive_control(table, alpha)
    if not control.empty:
        lines += ["", "## Positive control", "",
                  f"Real Data (Full) must beat Non-FT and the trivial baseline (one-sided paired bootstrap, p < {alpha}); "
                  "otherwise fine-tuning did not measurably teach this model the task, and the task's comparisons "
                  "between conditions say little.", "",
                  "| task | Real (Full) | Non-FT | trivial | p vs Non-FT | p vs trivial | control |", "|---|---|---|---|---|---|---|"]
        for c in control.itertuples(index=False):
            score = {r.condition: r.score for r in table[table["task"] == c.task].itertuples(index=False)}
            trivial = f"{score[TRIVIAL]:.3f}" if TRIVIAL in score else "-"
            lines.append(f"| {task_title(c.task)} | {score['real_full']:.3f} | {score['nonft']:.3f} | "
                         f"{trivial} | {_p(c.p_vs_nonft)} | {_p(c.p_vs_trivial)} | "
                         f"{'passes' if c.passes else 'FAILS'} |")

    lines += ["", "## Details", "",
              "| task | condition | score | 95% CI | n | p vs best synthetic | p vs Non-FT | p vs trivial | distinct "
              "predictions | train examples | loss fell |" + (" degenerate |" if degenerate is not None else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if degenerate is not None else "")]
    for r in table.itertuples(index=False):
        p = "best" if r.is_best_synthetic else _p(r.p_vs_best_synthetic)
        distinct = "-" if pd.isna(r.distinct_predictions) else int(r.distinct_predictions)
        size = "-" if pd.isna(r.train_examples) else int(r.train_examples)
        fell = "-" if pd.isna(r.loss_fell) else ("yes" if r.loss_fell else "**no**")
        flag = "" if degenerate is None else (" **yes** |" if (r.task, r.condition) in degenerate else " - |")
        lines.append(f"| {r.task} | {r.label} | {r.score:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n} | {p} | "
                     f"{_p(r.p_vs_nonft)} | {_p(r.p_vs_trivial)} | {distinct} | {size} | {fell} |{flag}")

    notes = []
    for r in table.itertuples(index=False):
        if not pd.isna(r.loss_fell) and not bool(r.loss_fell):
            notes.append(f"- {task_title(r.task)} / {r.label}: the training loss did not fall "
                         "(see the training curves figure): its score does not describe a trained model.")
        if degenerate is not None:
            if (r.task, r.condition) in degenerate:
                notes.append(f"- {task_title(r.task)} / {r.label}: degenerate outputs, "
                             f"{degenerate[(r.task, r.condition)]}; the claims resting on it are inconclusive.")
        elif not pd.isna(r.distinct_predictions) and int(r.distinct_predictions) <= 1 and r.condition != TRIVIAL \
                and r.n > 1:
            notes.append(f"- {task_title(r.task)} / {r.label}: the same prediction for all {r.n} "
                         "examples (a constant model).")
    closed = [t for t in tasks if ((table["task"] == t) & (table["condition"] == CLOSED_BOOK)).any()]
    if closed:
        label = condition_label(closed[0], CLOSED_BOOK)
        notes.append(f"- {label}: the base model given the question without the documents (same chat template, "
                     "instruction minus the documents, decoding and budget): what parametric memory answers.")
        for t in closed:
            note = _closed_book_note(t)
            if note:
                notes.append(f"- ‡ {task_title(t)} / {label}: not a memory baseline: {note}.")
    if TRIVIAL in set(table["condition"]):
        from synthctx.evaluate.baselines import trivial_description

        notes.append("- Trivial baseline: " + "; ".join(
            f"{task_title(t)}: {trivial_description(t)}" for t in tasks) + ".")
    if notes:
        lines += ["", "## Notes", "", *notes]
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
        colors = ["#1f4e79" if b else ("#7f7f7f" if base_condition(c) in ("real_full", "real_limited", "nonft",
                                                                          CLOSED_BOOK, TRIVIAL)
                                       else "#8fb3d9")
                  for b, c in zip(sub["is_best_synthetic"], sub["condition"])]
        err = np.vstack([sub["score"] - sub["ci_low"], sub["ci_high"] - sub["score"]]).clip(min=0)
        ax.bar(range(len(sub)), sub["score"], yerr=err, color=colors, capsize=3)
        for i, r in sub.iterrows():
            mark = "†" if r["significantly_worse"] else ""
            ax.text(i, r["ci_high"] + 0.01, f"{r['score']:.2f}{mark}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(sub)), sub["label"], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, max(1.0, float(sub["ci_high"].max()) + 0.1))
        ax.set_title(task_title(task))
        ax.set_ylabel("score (F1)")
    fig.suptitle(f"Table 1: {table['model'].iloc[0]} (dark: best synthetic; †: significantly worse)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def task_extras(task: str, eval_path: str, real_full_path: str, curve_paths: Mapping[str, str],
                min_loss_drop: float) -> TaskExtras:
    """The trivial baseline's scores on the eval split, and each trained condition's training-set
    size (from its training curve's metadata) and loss health."""
    from synthctx.data.examples import read_examples
    from synthctx.evaluate.baselines import trivial_predictions
    from synthctx.evaluate.metrics import score_prediction
    from synthctx.schema import read_metadata
    from synthctx.train.health import loss_health

    eval_examples = read_examples(eval_path)
    predictions = trivial_predictions(task, eval_examples, read_examples(real_full_path))
    trivial = {ex["example_id"]: score_prediction(task, p, ex)[0] for ex, p in zip(eval_examples, predictions)}
    sizes, fell = {}, {}
    for condition, path in curve_paths.items():
        curve = read_table(path, "train_curve")
        summary = read_metadata(path).get("summary") or {}
        if "examples" not in summary:
            raise ArtifactError(f"{path}: metadata field 'summary.examples' missing (train it again)")
        sizes[condition] = int(summary["examples"])
        fell[condition] = loss_health(curve["loss"].tolist(), min_loss_drop).fell
    return TaskExtras(trivial_scores=trivial, train_examples=sizes, loss_fell=fell)


def make_table1(prediction_paths: Sequence[str], table_path: str, markdown_path: str, figure_path: str,
                settings: Mapping[str, Any], extras: Mapping[str, TaskExtras] | None = None) -> pd.DataFrame:
    """Entry point of the ``table1`` rule."""
    predictions = {}
    for task, path in zip(settings["tasks"], prediction_paths, strict=True):
        frame = read_table(path, "predictions")
        found = set(frame["task"])
        if found != {task}:
            raise ArtifactError(f"{path}: field 'task' is {sorted(found)}, expected {task!r}")
        predictions[task] = frame
    table = build_table1(predictions, settings["model"], settings["synthetic"], settings["real"],
                         int(settings["resamples"]), float(settings["alpha"]), int(settings["seed"]), extras,
                         evaluation=settings.get("evaluation", ["nonft"]), user=settings.get("user"),
                         recipes=settings.get("recipes"))
    meta = provenance(seed=settings["seed"], model=settings["model"], resamples=settings["resamples"],
                      alpha=settings["alpha"], inputs=[str(p) for p in prediction_paths])
    write_table(table, table_path, "table1", meta)
    degenerate = None
    if "degenerate" in settings:  # the claims page's rule and keys (claims.alpha, claims.min_distinct_fraction)
        from synthctx.analysis.claims import degenerate_flags

        rule = settings["degenerate"]
        degenerate = degenerate_flags(table, float(rule["alpha"]), float(rule["min_distinct_fraction"]))
    md = table1_markdown(table, float(settings["alpha"]), int(settings["resamples"]), degenerate)
    Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
    Path(markdown_path).write_text(md)
    plot_table1(table, figure_path)
    return table
