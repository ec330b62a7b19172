"""The synthetic-data scorecard: rank candidate training sets by the retrieval heads of a cheap probe.

A researcher with several candidate synthetic datasets for a long-context task wants to know
which one will work before paying for fine-tuning on all of them at full size. The paper's
answer (its rebuttal): retrieval heads identified on about 40 real examples, and a candidate
assessed with a few hundred training examples. Here, per task:

* every candidate (:func:`scorecard_candidates`: the study's trained non-real conditions, the
  built-in synthetic variants and the user's datasets) gets a *probe*: the study's LoRA training
  on at most ``scorecard.train_examples`` of its examples (:func:`capped_examples`), then the
  study's head detection on the first ``scorecard.real_examples`` real eval examples (capped by
  the task's head-ranking part of the eval split). The reference is a Real (Full) probe trained
  the same way. Probes are the study's own rules (``train_adapter.py`` and ``heads.py``) with
  another output folder; where a probe's settings equal the full study's (:func:`probe_reuse`)
  the study's artifacts are used instead of recomputing them.
* per candidate: cosine and top-K recall of its head vector against the reference's
  (:mod:`synthctx.analysis.similarity`), with percentile bootstrap intervals over the real
  examples, resampled jointly for candidate and reference from the per-example head scores
  (the claims page's bootstrap, :mod:`synthctx.analysis.claims`), the rank and the probe's cost
  (job-seconds of its train and heads jobs, from the Snakemake benchmark files);
* the stability of the reference's head ranking against the number of real examples
  (:func:`stability_curve`): how many examples ``scorecard.real_examples`` needs;
* when the full study has run, the Spearman correlation of the scorecard with Table 1 and the
  scorecard's cost as a fraction of the study's (:func:`vs_study_rows`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from synthctx import study as vocabulary
from synthctx.analysis import similarity as sim
from synthctx.analysis.claims import _counted_matrix, _cosine_rows, _summarise, _weights
from synthctx.provenance import derived_seed

log = logging.getLogger("synthctx.scorecard")

REFERENCE = "real_full"
RANK_MEASURES = ("cosine", "recall_topk")
# Bootstrap weights are drawn in blocks of this many resamples (memory: block x examples).
BLOCK = 1000


# ---------------------------------------------------------------- what is probed, and how


def _empty(kind: str) -> pd.DataFrame:
    """A table of ``kind`` with its columns and no rows (nothing to report, schema still checked)."""
    from synthctx.schema import SCHEMAS

    return SCHEMAS[kind].empty_table().to_pandas()


def scorecard_candidates(config: Mapping[str, Any], task: str) -> list[str]:
    """The candidates of one task: the conditions the study trains for ``task`` that are not
    real data (built-in synthetic variants, then the user's datasets with a file for the task).

    The one place the scorecard takes its candidate list from: it asks the registry for the
    task's trained conditions (``synthctx.study.trained_conditions``, which adds the ``datasets:``
    conditions covering the task) and drops the real ones."""
    study = config["study"]
    names = vocabulary.trained_conditions(config, task)
    real = set(study["real_conditions"]) | set(vocabulary.BUILTIN_REAL)
    # an extra training recipe's conditions (training_recipes) are the same data trained another way, not candidates
    return [n for n in names if n not in real and n != vocabulary.NONFT and vocabulary.recipe_of(n) is None]


def probed_conditions(config: Mapping[str, Any], task: str) -> list[str]:
    """The reference (Real (Full)) followed by the task's candidates."""
    return [REFERENCE] + [c for c in scorecard_candidates(config, task) if c != REFERENCE]


def ranking_examples(config: Mapping[str, Any], task: str) -> int:
    """The task's head-ranking part of the eval split (heads.examples / heads.task_examples)."""
    from synthctx.causal.eval_split import task_examples

    return task_examples(config["heads"], task)


def real_examples(config: Mapping[str, Any], task: str) -> int:
    """Real eval examples a probe's head detection decodes: the first ``scorecard.real_examples``
    of the eval split, capped by the task's head-ranking part (never the causal examples)."""
    return min(int(config["scorecard"]["real_examples"]), ranking_examples(config, task))


def study_set_bound(config: Mapping[str, Any], task: str, condition: str) -> int | None:
    """The most examples the full study's train set of ``condition`` can hold, from the config
    alone (None: not bounded by config, e.g. Real (Full) without a max_train_examples or a
    user dataset, whose size only its file knows)."""
    found = vocabulary.get_condition(condition)
    if condition == REFERENCE:
        bound = vocabulary.task_data_settings(config, task)[2]
        return None if bound is None else int(bound)
    if found is not None and found.kind == "synthetic":
        return int(config["generation"]["examples_per_variant"])
    return None


def probe_reuse(config: Mapping[str, Any], task: str, condition: str) -> tuple[bool, bool]:
    """(training reused, head scores reused) of one probe.

    Training is the full study's when the study trains ``condition`` for ``task`` and the probe
    would train on the whole of the same set: ``scorecard.train_examples`` is null, or at least
    the most examples the study's set can hold (:func:`study_set_bound`; the cap then leaves
    the set as it is, and training is deterministic given the set, the hyper-parameters and the
    seed). Head scores are the study's when training is, and the probe decodes the same real
    examples: ``scorecard.real_examples`` reaches the task's head-ranking part (the study's
    ``heads`` job decodes exactly that part, with the same heads settings)."""
    cap = config["scorecard"]["train_examples"]
    trained = condition == REFERENCE and REFERENCE in config["study"]["real_conditions"]
    trained = trained or condition in scorecard_candidates(config, task)
    bound = study_set_bound(config, task, condition)
    train = trained and (cap is None or (bound is not None and int(cap) >= bound))
    heads = train and real_examples(config, task) == ranking_examples(config, task)
    return train, heads


def capped_examples(examples: Sequence[Mapping[str, Any]], cap: int | None, seed: int) -> list[Mapping[str, Any]]:
    """At most ``cap`` of ``examples``: a seeded choice, kept in the set's order (all when the
    set is not larger than the cap, or the cap is None)."""
    if cap is None or len(examples) <= int(cap):
        return list(examples)
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), size=int(cap), replace=False))
    return [examples[int(i)] for i in chosen]


def write_capped_set(*, source: str, output: str, cap: int | None, seed: int, model: str, task: str,
                     condition: str) -> int:
    """Entry point of rule ``scorecard_train_set``: the probe's training examples."""
    from synthctx.data.examples import read_examples, write_examples
    from synthctx.provenance import provenance
    from synthctx.schema import ArtifactError

    examples = read_examples(source)
    if not examples:
        raise ArtifactError(f"{source}: no training examples for the {condition} probe")
    chosen = capped_examples(examples, cap, derived_seed(seed, "scorecard", model, task, condition))
    write_examples(chosen, output, provenance(
        seed=seed, model=model, task=task, condition=condition, source=source, cap=cap,
        source_examples=len(examples), example_ids=[str(e["example_id"]) for e in chosen]))
    log.info("%s/%s/%s: %d of %d training examples (cap %s)", model, task, condition, len(chosen), len(examples), cap)
    return len(chosen)


# ---------------------------------------------------------------- statistics


def topk_masks(vectors: np.ndarray, k: int) -> np.ndarray:
    """Row-wise :func:`synthctx.analysis.similarity.top_k_heads` as a boolean mask: the k best
    heads with a positive score of each row (ties: lower index first)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=float))
    order = np.argsort(-vectors, axis=1, kind="stable")[:, :k]
    rows = np.arange(vectors.shape[0])[:, None]
    mask = np.zeros(vectors.shape, dtype=bool)
    mask[rows, order] = vectors[rows, order] > 0
    return mask


def _recall_rows(candidate: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-K recall |H_cand & H_ref| / |H_ref| (NaN where H_ref is empty)."""
    a, b = topk_masks(candidate, k), topk_masks(reference, k)
    size = b.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(size > 0, (a & b).sum(1) / np.where(size > 0, size, 1), np.nan)


def example_ids(frame: pd.DataFrame, head_kind: str) -> list[str]:
    """Decoded example ids of one head kind, in the file's (eval split) order."""
    return [str(e) for e in frame[frame["head_kind"] == head_kind]["example_id"]]


def score_candidates(reference: pd.DataFrame, candidates: Mapping[str, pd.DataFrame], head_kind: str, *,
                     top_k: int, resamples: int, alpha: float, seed: int) -> dict[str, dict[str, Any]]:
    """Cosine and top-K recall of each candidate's heads against the reference's, with
    percentile bootstrap intervals over the real examples.

    ``reference`` / ``candidates``: ``head_example_scores`` frames of probes that decoded the
    same real examples. A resample draws examples with replacement once and applies the draw to
    the reference and every candidate alike (paired). A head vector is the sum of the counted
    examples' score rows, which has the direction (cosine) and the order (top-K) of the mean."""
    ids = example_ids(reference, head_kind)
    ref = _counted_matrix(reference, head_kind, ids)
    out: dict[str, dict[str, Any]] = {}
    if ref.size == 0:
        raise ValueError(f"no {head_kind!r} examples in the reference probe's head scores")
    for condition, frame in candidates.items():
        missing = sorted(set(ids) - set(example_ids(frame, head_kind)))
        if missing:
            raise ValueError(f"{condition}: its probe did not decode the reference's real examples {missing[:5]} "
                             f"({head_kind} heads): probes must score the same examples")
        mat = _counted_matrix(frame, head_kind, ids)
        cos_boot, rec_boot = [], []
        for start in range(0, resamples, BLOCK):
            w = _weights(len(ids), min(BLOCK, resamples - start), derived_seed(seed, "scorecard", head_kind, start))
            rb, cb = w @ ref, w @ mat
            cos_boot.append(_cosine_rows(cb, rb))
            rec_boot.append(_recall_rows(cb, rb, top_k))
        vec, real = mat.sum(0), ref.sum(0)
        cos = _summarise(sim.cosine(vec, real), np.concatenate(cos_boot), alpha, len(ids))
        rec = _summarise(sim.recall(sim.top_k_heads(vec, top_k), sim.top_k_heads(real, top_k)),
                         np.concatenate(rec_boot), alpha, len(ids))
        out[condition] = {
            "cosine": cos.statistic, "cosine_ci_low": cos.ci_low, "cosine_ci_high": cos.ci_high,
            "recall_topk": rec.statistic, "recall_ci_low": rec.ci_low, "recall_ci_high": rec.ci_high,
            "positive_heads": sim.positive_heads(vec), "real_examples": len(ids),
            "counted_examples": int(frame[(frame["head_kind"] == head_kind) & frame["example_id"].isin(ids)]
                                    ["counted"].sum()),
        }
    return out


def rank_candidates(scores: Mapping[str, Mapping[str, float]], rank_by: str, order: Sequence[str]) -> dict[str, int]:
    """Rank 1 = most similar to the reference by ``rank_by``; ties (and NaN, ranked last) are
    broken by the other measure, then by ``order`` (display order)."""
    if rank_by not in RANK_MEASURES:
        raise ValueError(f"scorecard.rank_by: {rank_by!r} is not one of {RANK_MEASURES}")
    other = [m for m in RANK_MEASURES if m != rank_by][0]

    def key(name: str):
        first, second = scores[name][rank_by], scores[name][other]
        return (-first if math.isfinite(first) else math.inf, -second if math.isfinite(second) else math.inf,
                list(order).index(name) if name in order else len(order))

    return {name: i + 1 for i, name in enumerate(sorted(scores, key=key))}


def stability_curve(matrix: np.ndarray, sizes: Sequence[int], *, top_k: int, draws: int, alpha: float,
                    seed: int) -> list[dict[str, Any]]:
    """Agreement of the head ranking between two sets of n real examples, for each n of
    ``sizes`` up to the examples available.

    ``matrix``: (examples x heads) counted scores of the reference probe. For each n, ``draws``
    seeded pairs of two disjoint random subsets of n examples (where 2n fits; else two
    independent bootstrap resamples of n, marked ``bootstrap``: they share examples, so they
    overstate the agreement). Per pair: cosine of the two head vectors and the top-K overlap
    |A & B| / max(|A|, |B|); the mean and the percentile interval over the pairs in which both
    vectors are non-zero."""
    matrix = np.asarray(matrix, dtype=float)
    available = matrix.shape[0]
    rows = []
    for n in sorted({int(s) for s in sizes}):
        if n < 1 or n > available:
            continue
        rng = np.random.default_rng(derived_seed(seed, "stability", n))
        wa, wb = np.zeros((draws, available)), np.zeros((draws, available))
        method = "disjoint" if 2 * n <= available else "bootstrap"
        for d in range(draws):
            if method == "disjoint":
                perm = rng.permutation(available)
                wa[d, perm[:n]], wb[d, perm[n:2 * n]] = 1.0, 1.0
            else:
                np.add.at(wa[d], rng.integers(0, available, n), 1.0)
                np.add.at(wb[d], rng.integers(0, available, n), 1.0)
        va, vb = wa @ matrix, wb @ matrix
        cos = _cosine_rows(va, vb)
        ma, mb = topk_masks(va, top_k), topk_masks(vb, top_k)
        larger = np.maximum(ma.sum(1), mb.sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = np.where(larger > 0, (ma & mb).sum(1) / np.where(larger > 0, larger, 1), np.nan)
        defined = np.isfinite(cos)
        c, o = cos[defined], overlap[defined]
        q = (alpha / 2, 1 - alpha / 2)
        rows.append({
            "n": n, "available": available, "method": method, "draws": int(defined.sum()),
            "cosine_mean": float(c.mean()) if c.size else math.nan,
            "cosine_low": float(np.quantile(c, q[0])) if c.size else math.nan,
            "cosine_high": float(np.quantile(c, q[1])) if c.size else math.nan,
            "overlap_mean": float(o.mean()) if o.size else math.nan,
            "overlap_low": float(np.quantile(o, q[0])) if o.size else math.nan,
            "overlap_high": float(np.quantile(o, q[1])) if o.size else math.nan,
        })
    return rows


def benchmark_seconds(path: str | None) -> float:
    """Wall seconds of a job from its Snakemake benchmark file (NaN when there is none: e.g. a
    job run before benchmarks were declared)."""
    from pathlib import Path

    if not path or not Path(path).exists():
        return math.nan
    frame = pd.read_csv(path, sep="\t")
    if "s" not in frame.columns or frame.empty:
        return math.nan
    return float(frame["s"].iloc[0])


# ---------------------------------------------------------------- the scorecard of one task


def build_scorecard(*, model: str, task: str, example_files: Mapping[str, str], train_files: Mapping[str, str],
                    costs: Mapping[str, Mapping[str, str]], reuse: Mapping[str, Sequence[bool]],
                    labels: Mapping[str, str], settings: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scorecard rows, stability rows) of one task from the probes' per-example head scores.

    ``example_files``: condition -> ``head_example_scores`` file (the reference under
    :data:`REFERENCE`); ``train_files``: condition -> the probe's training set; ``costs``:
    condition -> {"train": benchmark file, "heads": benchmark file}; ``reuse``: condition ->
    (train reused, heads reused); ``settings``: top_k, resamples, alpha, seed, rank_by,
    stability_sizes, stability_draws."""
    import pyarrow.parquet as pq

    from synthctx.schema import read_table

    frames = {c: read_table(p, "head_example_scores") for c, p in example_files.items()}
    reference = frames[REFERENCE]
    candidates = {c: f for c, f in frames.items() if c != REFERENCE}
    top_k, seed = int(settings["top_k"]), int(settings["seed"])
    rows, stability = [], []
    for head_kind in sorted(reference["head_kind"].unique()):
        kind_seed = derived_seed(seed, model, task, head_kind)
        scored = score_candidates(reference, {REFERENCE: reference, **candidates}, head_kind, top_k=top_k,
                                  resamples=int(settings["resamples"]), alpha=float(settings["alpha"]), seed=kind_seed)
        ranks = rank_candidates({c: scored[c] for c in candidates}, settings["rank_by"], list(candidates))
        for condition, values in scored.items():
            train_s = benchmark_seconds(costs.get(condition, {}).get("train"))
            heads_s = benchmark_seconds(costs.get(condition, {}).get("heads"))
            train_reused, heads_reused = reuse[condition]
            rows.append({
                "model": model, "task": task, "head_kind": head_kind, "condition": condition,
                "label": labels.get(condition, condition),
                "role": "reference" if condition == REFERENCE else "candidate",
                "rank": ranks.get(condition), **values,
                "train_examples": pq.read_metadata(train_files[condition]).num_rows,
                "train_reused": bool(train_reused), "heads_reused": bool(heads_reused),
                "cost_train_s": train_s, "cost_heads_s": heads_s, "cost_s": train_s + heads_s,
            })
        ids = example_ids(reference, head_kind)
        for row in stability_curve(_counted_matrix(reference, head_kind, ids), settings["stability_sizes"],
                                   top_k=top_k, draws=int(settings["stability_draws"]),
                                   alpha=float(settings["alpha"]), seed=kind_seed):
            stability.append({"model": model, "task": task, "head_kind": head_kind, **row})
    table = pd.DataFrame(rows)
    table["rank"] = pd.array(table["rank"], dtype="Int32")
    table = table.sort_values(["head_kind", "rank"], na_position="first", kind="stable").reset_index(drop=True)
    stab = pd.DataFrame(stability) if stability else _empty("scorecard_stability")
    return table, stab


def _ci(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if math.isfinite(low) else f"{value:.3f}"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) else "n/a"


def scorecard_markdown(table: pd.DataFrame, stability: pd.DataFrame, settings: Mapping[str, Any]) -> str:
    """The scorecard of one task: the ranked candidates per head kind, then the stability table."""
    model, task = table["model"].iloc[0], table["task"].iloc[0]
    level = 100 * (1 - float(settings["alpha"]))
    lines = [f"# Synthetic-data scorecard: {vocabulary.task_title(task)} ({model})", "",
             f"Each candidate is a cheap probe: LoRA on at most {settings['train_examples']} of its examples (the "
             f"study's hyper-parameters), then head detection on {int(table['real_examples'].max())} real eval "
             f"examples. Cosine and top-{settings['top_k']} recall of its head vector against the Real (Full) probe's, "
             f"with {level:.0f}% percentile bootstrap intervals ({settings['resamples']} resamples of the real "
             f"examples, drawn jointly for candidate and reference). Rank by {settings['rank_by']}. Cost: "
             "job-seconds of the probe's training and head-detection jobs (Snakemake benchmarks); a reused probe "
             "is the full study's job (same set, settings and examples).", ""]
    for head_kind, part in table.groupby("head_kind", sort=True):
        lines += [f"## {head_kind} heads", "",
                  "| rank | condition | cosine | recall@K | positive heads | train ex. | real ex. (counted) "
                  "| cost s (train + heads) | reused |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in part.itertuples():
            rank = "ref." if pd.isna(r.rank) else str(int(r.rank))
            reused = {(True, True): "train + heads", (True, False): "train"}.get((r.train_reused, r.heads_reused),
                                                                                 "no")
            lines.append(f"| {rank} | {r.label} | {_ci(r.cosine, r.cosine_ci_low, r.cosine_ci_high)} | "
                         f"{_ci(r.recall_topk, r.recall_ci_low, r.recall_ci_high)} | {r.positive_heads} | "
                         f"{r.train_examples} | {r.real_examples} ({r.counted_examples}) | {_seconds(r.cost_s)} "
                         f"({_seconds(r.cost_train_s)} + {_seconds(r.cost_heads_s)}) | {reused} |")
        lines.append("")
    lines += ["## How many real examples are enough", "",
              "Agreement of the reference probe's head ranking between two disjoint random sets of n real examples "
              f"({settings['stability_draws']} draws; `bootstrap`: two resamples of n, used where 2n exceeds the "
              f"examples, which share examples and overstate agreement): cosine and top-{settings['top_k']} overlap, "
              f"mean [{level:.0f}% of draws].", ""]
    if stability.empty:
        lines += ["No size of `scorecard.stability_sizes` fits the reference probe's examples.", ""]
    else:
        lines += ["| head kind | n | method | draws | cosine | top-K overlap |", "|---|---|---|---|---|---|"]
        for r in stability.itertuples():
            lines.append(f"| {r.head_kind} | {r.n} of {r.available} | {r.method} | {r.draws} | "
                         f"{_ci(r.cosine_mean, r.cosine_low, r.cosine_high)} | "
                         f"{_ci(r.overlap_mean, r.overlap_low, r.overlap_high)} |")
        lines.append("")
    return "\n".join(lines)


def plot_scorecard(table: pd.DataFrame, path: str) -> None:
    """The ranked candidates with their intervals: one row of panels (cosine, recall) per head kind."""
    from synthctx.analysis.figures import _pyplot

    plt = _pyplot()
    kinds = sorted(table["head_kind"].unique())
    fig, axes = plt.subplots(len(kinds), 2, figsize=(10, 1.2 + 0.45 * table["condition"].nunique() * len(kinds)),
                             squeeze=False)
    for i, kind in enumerate(kinds):
        part = table[(table["head_kind"] == kind) & (table["role"] == "candidate")].sort_values("rank")
        y = np.arange(len(part))[::-1]
        for j, (measure, low, high) in enumerate((("cosine", "cosine_ci_low", "cosine_ci_high"),
                                                  ("recall_topk", "recall_ci_low", "recall_ci_high"))):
            ax = axes[i][j]
            values = part[measure].to_numpy(dtype=float)
            err = np.vstack([values - part[low].to_numpy(dtype=float), part[high].to_numpy(dtype=float) - values])
            ax.errorbar(np.nan_to_num(values), y, xerr=np.nan_to_num(np.abs(err)), fmt="o", capsize=3)
            ax.set_yticks(y)
            ax.set_yticklabels([f"{int(r)}. {label}" for r, label in zip(part["rank"], part["label"])])
            ax.set_xlim(0, 1.02)
            ax.set_xlabel(f"{measure} vs Real (Full) probe ({kind} heads)")
    task = table["task"].iloc[0]
    fig.suptitle(f"Scorecard: {vocabulary.task_title(task)} ({table['model'].iloc[0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_stability(stability: pd.DataFrame, path: str, title: str) -> None:
    """Cosine and top-K overlap between two sets of n real examples, against n."""
    from synthctx.analysis.figures import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    for kind, part in stability.groupby("head_kind", sort=True):
        for ax, (measure, low, high) in zip(axes, (("cosine_mean", "cosine_low", "cosine_high"),
                                                  ("overlap_mean", "overlap_low", "overlap_high"))):
            line, = ax.plot(part["n"], part[measure], marker="o", label=f"{kind} heads")
            ax.fill_between(part["n"], part[low], part[high], alpha=0.2, color=line.get_color())
            boot = part[part["method"] == "bootstrap"]
            if not boot.empty:  # resamples sharing examples: open markers
                ax.plot(boot["n"], boot[measure], "o", mfc="white", color=line.get_color())
    sizes = sorted(stability["n"].unique()) if not stability.empty else []
    for ax, name in zip(axes, ("cosine", "top-K overlap")):
        ax.set_xlabel("real examples n per set (open: bootstrap resamples)")
        ax.set_ylabel(name)
        ax.set_ylim(0, 1.02)
        if sizes:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(sizes))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
            ax.legend(loc="lower right")
    if stability.empty:
        axes[0].text(0.5, 0.5, "no subset size fits", ha="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_scorecard(*, model: str, task: str, example_files: Mapping[str, str], train_files: Mapping[str, str],
                  costs: Mapping[str, Mapping[str, str]], reuse: Mapping[str, Sequence[bool]],
                  labels: Mapping[str, str], settings: Mapping[str, Any], table_path: str, markdown_path: str,
                  figure_path: str, stability_path: str, stability_figure: str,
                  log_line: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Entry point of rule ``scorecard_task``."""
    from pathlib import Path

    from synthctx.provenance import provenance
    from synthctx.schema import write_table

    table, stability = build_scorecard(model=model, task=task, example_files=example_files, train_files=train_files,
                                       costs=costs, reuse=reuse, labels=labels, settings=settings)
    meta = provenance(seed=int(settings["seed"]), model=model, task=task, settings=dict(settings),
                      example_files=dict(example_files), reuse={c: list(v) for c, v in reuse.items()})
    for r in table.itertuples():
        (log_line or log.info)(f"{task} {r.head_kind} {r.condition}: rank {r.rank} cosine {r.cosine:.3f} "
                               f"[{r.cosine_ci_low:.3f}, {r.cosine_ci_high:.3f}] recall {r.recall_topk:.3f} "
                               f"cost {r.cost_s:.1f} s")
    plot_scorecard(table, figure_path)
    plot_stability(stability, stability_figure, f"Head-ranking stability: {vocabulary.task_title(task)} ({model})")
    write_table(stability, stability_path, "scorecard_stability", meta)
    Path(markdown_path).write_text(scorecard_markdown(table, stability, settings))
    write_table(table, table_path, "scorecard", meta)
    return table


# ---------------------------------------------------------------- against the full study


def vs_study_rows(*, model: str, scorecards: Mapping[str, pd.DataFrame], table1: pd.DataFrame,
                  study_costs: Mapping[str, Sequence[str]], seed: int) -> list[dict[str, Any]]:
    """Per task, head kind and measure: Spearman of the candidates' scorecard measure with their
    full-study Table 1 score (the candidates in both; Figure 3's exact permutation p), and the
    scorecard's cost (its probes, reference included, each counted once) over the study's
    (``study_costs[task]``: benchmark files of the task's trainings and evaluation job)."""
    rows = []
    for task, card in scorecards.items():
        t1 = table1[table1["task"] == task].set_index("condition")["score"]
        probes = card.drop_duplicates("condition")
        scorecard_s = float(probes["cost_s"].sum(min_count=len(probes)))
        study_s = float(np.sum([benchmark_seconds(p) for p in study_costs.get(task, [])])) if study_costs.get(task) \
            else math.nan
        for head_kind, part in card[card["role"] == "candidate"].groupby("head_kind", sort=True):
            part = part[part["condition"].isin(t1.index)]
            for measure in RANK_MEASURES:
                result = sim.spearman(part[measure].tolist(), [float(t1[c]) for c in part["condition"]],
                                      derived_seed(seed, "scorecard_vs_study", model, task, head_kind, measure))
                rows.append({"model": model, "task": task, "head_kind": head_kind, "measure": measure,
                             "spearman_rho": result.rho, "p_value": result.p_value, "n_conditions": result.n,
                             "p_method": result.p_method, "scorecard_seconds": scorecard_s, "study_seconds": study_s,
                             "cost_fraction": scorecard_s / study_s if study_s > 0 else math.nan})
    return rows


def vs_study_markdown(frame: pd.DataFrame, goal: float) -> str:
    lines = [f"# Does the scorecard predict the full study? ({frame['model'].iloc[0] if len(frame) else ''})", "",
             "Spearman rho of each scorecard measure with the candidates' Table 1 score (two-sided permutation p, "
             "exact up to 8 candidates), and the scorecard's cost (every probe's training + head-detection "
             "job-seconds, the reference's included) as a fraction of the full study's training + evaluation "
             f"job-seconds for the task (goal: at most {100 * goal:.0f}%).", "",
             "| task | head kind | measure | rho | p (method) | n | scorecard s | study s | cost fraction |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        rho = f"{r.spearman_rho:.3f}" if math.isfinite(r.spearman_rho) else "n/a"
        p = f"{r.p_value:.4f} ({r.p_method})" if math.isfinite(r.p_value) else f"n/a ({r.p_method})"
        frac = (f"{100 * r.cost_fraction:.1f}%" + (" (over the goal)" if r.cost_fraction > goal else "")
                if math.isfinite(r.cost_fraction) else "n/a")
        lines.append(f"| {vocabulary.task_title(r.task)} | {r.head_kind} | {r.measure} | {rho} | {p} | "
                     f"{r.n_conditions} | {_seconds(r.scorecard_seconds)} | {_seconds(r.study_seconds)} | {frac} |")
    return "\n".join(lines) + "\n"


def run_vs_study(*, model: str, scorecard_files: Mapping[str, str], table1_path: str,
                 study_costs: Mapping[str, Sequence[str]], seed: int, goal: float, table_path: str,
                 markdown_path: str) -> pd.DataFrame:
    """Entry point of rule ``scorecard_vs_study``."""
    from pathlib import Path

    from synthctx.provenance import provenance
    from synthctx.schema import read_table, write_table

    cards = {task: read_table(p, "scorecard") for task, p in scorecard_files.items()}
    frame = pd.DataFrame(vs_study_rows(model=model, scorecards=cards, table1=read_table(table1_path, "table1"),
                                       study_costs=study_costs, seed=seed))
    if frame.empty:
        frame = _empty("scorecard_vs_study")
    Path(markdown_path).write_text(vs_study_markdown(frame, goal))
    write_table(frame, table_path, "scorecard_vs_study",
                provenance(seed=seed, model=model, scorecards=dict(scorecard_files), table1=table1_path, goal=goal))
    return frame
