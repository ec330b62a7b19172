"""The claims page: every claim of the paper checked against this run, with a verdict.

One row per claim (C1-C8, and CB for the closed-book baseline) and task (and condition or
measure where a claim has several): what the run measured, the statistic with its
uncertainty and n, the paper's number beside it, a verdict and the rule that decided it.

Verdict rules (:func:`decide`, the one place they live), applied in this order:

1. **cannot evaluate** (with the reason): an input was not built, or the quantity the claim
   needs does not exist (a Real (Full) model without any head with a positive score, an empty
   head set, a Spearman rho over fewer than 3 points...).
2. **inconclusive (positive control fails)**: the claim rests on a task's Real (Full) model
   and that model does not beat Non-FT and the trivial baseline (Table 1's positive control,
   one-sided paired bootstrap p < ``claims.alpha``): fine-tuning did not teach the task.
3. **inconclusive (degenerate outputs)**: a fine-tuned condition the claim rests on is
   degenerate (:func:`degenerate_reason`): its predictions are (nearly) constant (distinct
   predictions / n below ``claims.min_distinct_fraction``, or one prediction for every
   example) or it does not beat its task's trivial baseline (one-sided p >= ``claims.alpha``).
   Non-FT is a reference, never a condition a claim rests on.
4. **holds** when the test in the claim's direction gives p < ``claims.alpha``;
   **contradicted** when the test in the opposite direction does; otherwise
   **inconclusive at this n**. Each row names its test in ``rule``.

Tests: paired bootstrap over examples (``evaluate.bootstrap_resamples`` resamples, seeded from
``study.seed``): p in a direction is the fraction of resamples whose statistic is not on that
side of 0 (Koehn 2004, as Table 1); intervals are percentile intervals at ``claims.alpha``.
C4 reads Figure 3's two-sided exact permutation p with the sign of rho; C8 a hypergeometric
test of the NIAH top-K overlap against two random K-sets of heads.

Extra training recipes (config ``training_recipes``, e.g. LoRA on every linear layer): C1-C6
are checked again under each, on its own conditions (``<base>__<recipe>``) with its own Real
(Full) model as the reference, the positive control, the head comparisons and the patching
donor (C6) included. Their rows have the claim id ``"C1 [<recipe label>]"`` and follow the main
recipe's rows of the same claim, so the page shows whether each claim holds under both recipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from synthctx.provenance import derived_seed
from synthctx.schema import SCHEMAS, read_table
from synthctx.study import CLOSED_BOOK  # the closed-book baseline's condition (the question only)
from synthctx.study import base_condition, recipe_condition, recipe_of, recipe_suffix, recipes_of
from synthctx.tasks import get_task

HOLDS = "holds"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive at this n"
CANNOT = "cannot evaluate"
DEGENERATE = "inconclusive (degenerate outputs)"
CONTROL_FAILS = "inconclusive (positive control fails)"
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, CANNOT, DEGENERATE, CONTROL_FAILS)

TRIVIAL = "trivial"
NONFT = "nonft"
REAL_FULL = "real_full"

CLAIMS = {
    "C1": "Real (Full) scores above the best synthetic condition",
    "C2": "the best synthetic condition scores above Non-FT (synthetic context extension helps)",
    "C3": "a synthetic-data model has fewer heads with a positive retrieval score than Real (Full)",
    "C4": "head similarity to Real (Full) correlates positively with the score across synthetic conditions",
    "C5": "knocking out the top-K retrieval heads lowers the score more than K random heads",
    "C6": "patching the Intersection heads of Real (Full) raises a synthetic model's score, and more than Random",
    "C7": "retrieval heads are task-specific: cross-task cosine below the within-task split-half cosine",
    "C8": "NIAH retrieval heads are stable across disjoint needle sets",
    "CB": "parametric memory does not explain the score: Real (Full) scores above the closed-book base model "
          "(the question without the documents)",
}

# The claims checked again under each extra training recipe (claim id "C1 [<recipe label>]").
RECIPE_CLAIMS = ("C1", "C2", "C3", "C4", "C5", "C6")


def base_claim_id(claim_id: str) -> str:
    """``C1`` of ``C1 [all modules]``."""
    return claim_id.split(" [", 1)[0]


# The paper's numbers that hold for every task (../shared/reference/STUDY.md section 8,
# paper-method.md section 6); per-task numbers live in each task module's ``paper_numbers``.
PAPER: dict[str, str] = {
    "C5": "large drop for top-10 heads, < 0.05 for 10 random heads (Figure 4)",
    "C7": "low off-diagonal cosines (Table 2; values not published)",
    "C8": "Wu et al.: retrieval heads are universal and sparse (no number in this paper)",
}


def paper_number(claim_id: str, task: str, subject: str = "") -> str:
    """The paper's number for a claim: the task module's (``paper_numbers``, keyed by claim id
    or ``claim:subject``), else the task-independent one."""
    from synthctx.tasks import task_names

    numbers = dict(getattr(get_task(task), "paper_numbers", {}) or {}) if task in task_names() else {}
    for key in (f"{claim_id}:{subject}", claim_id):
        if key in numbers:
            return numbers[key]
    return PAPER.get(claim_id, "not reported")


def condition_label(task: str, condition: str) -> str:
    """A condition's row label, from the study's vocabulary (the same as Table 1's)."""
    from synthctx.study import condition_label as study_label

    return study_label(condition, task)


class Verdict(NamedTuple):
    verdict: str
    reason: str
    rule: str


def decide(p_holds: float, p_contradicts: float, alpha: float, test: str, *, cannot: str | None = None,
           control: str | None = None, degenerate: str | None = None) -> Verdict:
    """The verdict of one claim row (the rules of the module docstring, in their order)."""
    if cannot:
        return Verdict(CANNOT, cannot, "the claim needs this input or quantity")
    if control:
        return Verdict(CONTROL_FAILS, control, f"Real (Full) must beat Non-FT and the trivial baseline (p < {alpha})")
    if degenerate:
        return Verdict(DEGENERATE, degenerate, "a condition it rests on has (nearly) constant predictions or does "
                                               f"not beat the trivial baseline (p < {alpha})")
    holds = p_holds is not None and np.isfinite(p_holds) and p_holds < alpha
    contradicts = p_contradicts is not None and np.isfinite(p_contradicts) and p_contradicts < alpha
    if holds and not contradicts:
        return Verdict(HOLDS, "", f"{test}: p = {p_holds:.4f} < alpha = {alpha}")
    if contradicts and not holds:
        return Verdict(CONTRADICTED, "", f"{test}, opposite direction: p = {p_contradicts:.4f} < alpha = {alpha}")
    return Verdict(INCONCLUSIVE, "", f"{test}: neither direction has p < alpha = {alpha} "
                                     f"(p = {_fmt(p_holds, 4)} / opposite {_fmt(p_contradicts, 4)})")


def degenerate_reason(row: Mapping[str, Any], alpha: float, min_distinct_fraction: float | None = None,
                      trivial_score: float | None = None) -> str | None:
    """Why a Table 1 row's condition is degenerate, or None: (nearly) constant predictions
    (one prediction for every example, or distinct / n < ``min_distinct_fraction``), or not
    beating the task's trivial baseline (one-sided paired bootstrap p >= ``alpha``). The trivial
    row itself is never degenerate."""
    if row["condition"] == TRIVIAL:
        return None
    reasons = []
    n, distinct = int(row["n"]), row["distinct_predictions"]
    if not pd.isna(distinct) and n > 1:
        distinct = int(distinct)
        if distinct <= 1:
            reasons.append(f"the same prediction for all {n} examples")
        elif min_distinct_fraction is not None and distinct / n < min_distinct_fraction:
            reasons.append(f"nearly constant: {distinct} distinct predictions of {n} (< {min_distinct_fraction:g} n)")
    p = row["p_vs_trivial"]
    if not pd.isna(p) and not p < alpha:
        versus = f"{row['score']:.3f} vs {trivial_score:.3f}, " if trivial_score is not None else ""
        reasons.append(f"does not beat the trivial baseline ({versus}p = {p:.3f})")
    return "; ".join(reasons) or None


def degenerate_flags(table1: pd.DataFrame, alpha: float, min_distinct_fraction: float | None) -> dict[tuple[str, str], str]:
    """(task, condition) -> reason, for every degenerate row of Table 1 (Table 1's notes and the claims)."""
    flags = {}
    for task, sub in table1.groupby("task", sort=False):
        trivial = sub.loc[sub["condition"] == TRIVIAL, "score"]
        trivial_score = float(trivial.iloc[0]) if len(trivial) else None
        for _, row in sub.iterrows():
            reason = degenerate_reason(row, alpha, min_distinct_fraction, trivial_score)
            if reason:
                flags[(str(task), str(row["condition"]))] = reason
    return flags


def control_failures(table1: pd.DataFrame, alpha: float, reference: str = REAL_FULL) -> dict[str, str]:
    """task -> why its Real (Full) model (``reference``: a recipe's own) fails the positive
    control (tasks that pass are absent)."""
    from synthctx.evaluate.table1 import positive_control

    out = {}
    scores = {(r.task, r.condition): r.score for r in table1.itertuples(index=False)}
    for c in positive_control(table1, alpha, reference).itertuples(index=False):
        if c.passes:
            continue
        trivial = scores.get((c.task, TRIVIAL))
        name = "Real (Full)" if reference == REAL_FULL else condition_label(c.task, reference)
        out[c.task] = (f"{name} {scores[(c.task, reference)]:.3f} vs Non-FT "
                       f"{scores[(c.task, NONFT)]:.3f} "
                       f"(p = {_fmt(c.p_vs_nonft, 3)})" + (f", vs trivial {trivial:.3f} (p = {_fmt(c.p_vs_trivial, 3)})"
                                                           if trivial is not None else ""))
    return out


# ---------------------------------------------------------------- statistics


class Paired(NamedTuple):
    statistic: float
    ci_low: float
    ci_high: float
    p_holds: float  # fraction of resamples with statistic <= 0
    p_contradicts: float  # fraction of resamples with statistic >= 0
    n: int


def _weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap multiplicities (resamples x n): how often each example is drawn."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.repeat(np.arange(resamples), n), idx.reshape(-1)), 1.0)
    return weights


def _summarise(observed: float, boot: np.ndarray, alpha: float, n: int) -> Paired:
    finite = boot[np.isfinite(boot)]
    low, high = (np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if finite.size else (math.nan, math.nan))
    # a resample where the statistic is undefined supports neither direction
    return Paired(float(observed), float(low), float(high), float(np.mean(~(boot > 0))),
                  float(np.mean(~(boot < 0))), n)


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int, seed: int, alpha: float) -> Paired:
    """mean(a - b) over paired examples, its percentile interval and both one-sided p-values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired difference needs two equal, non-empty score vectors ({a.shape} vs {b.shape})")
    diff = a - b
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    return _summarise(float(diff.mean()), diff[idx].mean(axis=1), alpha, diff.size)


def positive_head_difference(real: np.ndarray, other: np.ndarray, resamples: int, seed: int,
                             alpha: float) -> Paired:
    """Heads with a positive mean score: Real (Full) minus another model, paired bootstrap over
    examples. ``real``/``other``: (examples x heads) scores of the same examples, rows of
    examples that do not count for a model zeroed (a head is positive when some counted example
    credits it). Resampling drops examples, so both resampled counts shrink; the interval is of
    their difference."""
    real, other = np.asarray(real, dtype=float), np.asarray(other, dtype=float)
    observed = int((real.sum(0) > 0).sum()) - int((other.sum(0) > 0).sum())
    n = real.shape[0]
    boot = []
    for start in range(0, resamples, 1000):
        w = _weights(n, min(1000, resamples - start), derived_seed(seed, start))
        boot.append(((w @ real) > 0).sum(1) - ((w @ other) > 0).sum(1))
    return _summarise(observed, np.concatenate(boot).astype(float), alpha, n)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (resamples x heads) arrays (NaN where a row is all zero)."""
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(1) / np.where(norm > 0, norm, 1), np.nan)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(_cosine_rows(a[None, :], b[None, :])[0])


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of n examples into two disjoint halves (the first gets floor(n / 2))."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def split_half_margin(own: np.ndarray, others: Mapping[str, np.ndarray], resamples: int, seed: int,
                      alpha: float) -> tuple[Paired, float, float, str]:
    """Within-task agreement minus the highest cross-task cosine.

    ``own``: (examples x heads) counted scores of one task, split once into two seeded halves;
    within = cosine of the halves' mean vectors. Cross = the largest cosine of ``own``'s mean
    vector with another task's (``others``). Bootstrap: each half and each other task resampled
    on its own, so the halves stay disjoint. Returns (margin, within, cross, the closest task)."""
    first, second = split_halves(own.shape[0], derived_seed(seed, "split"))
    a, b = own[first], own[second]
    within = _cosine(a.mean(0), b.mean(0))
    crosses = {name: _cosine(own.mean(0), m.mean(0)) for name, m in others.items()}
    finite = {k: v for k, v in crosses.items() if np.isfinite(v)}
    closest = max(finite, key=finite.get) if finite else ""
    cross = finite[closest] if finite else math.nan
    boot = []
    for start in range(0, resamples, 1000):
        size = min(1000, resamples - start)
        wa = _weights(a.shape[0], size, derived_seed(seed, "a", start))
        wb = _weights(b.shape[0], size, derived_seed(seed, "b", start))
        ma, mb = wa @ a, wb @ b
        within_b = _cosine_rows(ma, mb)
        full = ma + mb
        cross_b = np.full(size, -np.inf)
        for name, m in others.items():
            wo = _weights(m.shape[0], size, derived_seed(seed, "other", name, start))
            c = _cosine_rows(full, wo @ m)
            cross_b = np.fmax(cross_b, c)
        cross_b[~np.isfinite(cross_b)] = np.nan
        boot.append(within_b - cross_b)
    return _summarise(within - cross, np.concatenate(boot), alpha, own.shape[0]), within, cross, closest


def overlap_test(top1: set, top2: set, total: int) -> tuple[float, float]:
    """Hypergeometric p of a top-K overlap: P(X >= overlap) and P(X <= overlap) for two random
    sets of the same sizes among ``total`` heads."""
    from scipy.stats import hypergeom

    overlap = len(top1 & top2)
    dist = hypergeom(total, len(top1), len(top2))
    return float(dist.sf(overlap - 1)), float(dist.cdf(overlap))


# ---------------------------------------------------------------- inputs


@dataclass
class ClaimPaths:
    """Where each input of the claims page lives (one study model)."""

    table1: str
    predictions: dict[str, str] = field(default_factory=dict)  # task -> predictions
    head_examples: dict[tuple[str, str], str] = field(default_factory=dict)  # (task, condition)
    correlations: str = ""
    table2: str = ""
    knockout: dict[tuple[str, str], str] = field(default_factory=dict)  # (task, condition)
    patching: dict[tuple[str, str], str] = field(default_factory=dict)  # (task, synthetic)
    table3: str = ""
    niah: tuple[str, str] = ("", "")

    def all(self) -> list[str]:
        paths = [self.table1, *self.predictions.values(), *self.head_examples.values(), self.correlations,
                 self.table2, *self.knockout.values(), *self.patching.values(), self.table3, *self.niah]
        return [p for p in paths if p]


def head_examples_path(results: str, model: str, task: str, condition: str) -> str:
    """The heads stage's per-example scores (``head_example_scores``) of one model."""
    return f"{results}/heads/{model}/{task}/per_example/{condition}.parquet"


def study_paths(results: str, model: str, tasks: Sequence[str], synthetic: Sequence[str],
                knockout_conditions: Sequence[str], patch_conditions: Sequence[str],
                trained: Callable[[str], Sequence[str]] | None = None) -> ClaimPaths:
    """The standard artifact paths (docs/DESIGN.md) of one model's study under ``results``.
    ``trained``: the conditions trained for a task (a user dataset covers only its own tasks;
    None: every condition everywhere); knockout and patching paths exist only for those, and
    the head scores of a recipe condition (``<base>__<recipe>``) of Real (Full) or a synthetic
    condition where ``trained`` lists one."""
    def of(task: str, conditions: Sequence[str]) -> list[str]:
        return [c for c in conditions if trained is None or c in trained(task) or c == "nonft"]

    def with_recipes(task: str, conditions: Sequence[str]) -> list[str]:
        derived = [c for c in (trained(task) if trained is not None else [])
                   if recipe_of(c) and base_condition(c) in conditions]
        return [*conditions, *derived]

    return ClaimPaths(
        table1=f"{results}/tables/{model}/table1.parquet",
        predictions={t: f"{results}/eval/{model}/{t}/predictions.parquet" for t in tasks},
        head_examples={(t, c): head_examples_path(results, model, t, c) for t in tasks
                       for c in with_recipes(t, [REAL_FULL, *synthetic])},
        correlations=f"{results}/analysis/{model}/correlations.parquet",
        table2=f"{results}/tables/{model}/table2.parquet",
        knockout={(t, c): f"{results}/causal/{model}/{t}/{c}/knockout.parquet" for t in tasks
                  for c in of(t, knockout_conditions)},
        patching={(t, c): f"{results}/causal/{model}/{t}/{c}/patching.parquet" for t in tasks
                  for c in of(t, patch_conditions)},
        table3=f"{results}/tables/{model}/table3.parquet",
        niah=(f"{results}/heads/{model}/niah/set1.parquet", f"{results}/heads/{model}/niah/set2.parquet"),
    )


class _Inputs:
    """Reads each input once; a missing file gives None and a 'not built' reason."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], pd.DataFrame | None] = {}
        self.missing: list[str] = []

    def get(self, path: str, kind: str) -> pd.DataFrame | None:
        if (path, kind) not in self._cache:
            if path and Path(path).exists():
                self._cache[(path, kind)] = read_table(path, kind)
            else:
                self._cache[(path, kind)] = None
                if path:
                    self.missing.append(path)
        return self._cache[(path, kind)]


def not_built(path: str) -> str:
    return f"input not built: {path}"


# ---------------------------------------------------------------- the page


@dataclass
class _Context:
    model: str
    tasks: list[str]
    synthetic: list[str]
    alpha: float
    resamples: int
    seed: int
    top_k: int
    min_distinct_fraction: float
    paths: ClaimPaths
    inputs: _Inputs
    table1: pd.DataFrame | None = None
    flags: dict[tuple[str, str], str] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    # an extra training recipe's pass (None: the main recipe): its name and label, its Real (Full)
    recipe: str | None = None
    recipe_label: str = ""
    real_full: str = REAL_FULL

    def seed_of(self, *parts) -> int:
        extra = () if self.recipe is None else (self.recipe,)
        return derived_seed(self.seed, "claims", self.model, *parts, *extra)

    def claim_id(self, claim_id: str) -> str:
        return claim_id if self.recipe is None else f"{claim_id} [{self.recipe_label}]"

    def label(self, task: str, condition: str) -> str:
        return condition_label(task, condition)

    def degenerate(self, task: str, conditions: Sequence[str]) -> str | None:
        found = [f"{self.label(task, c)}: {self.flags[(task, c)]}" for c in conditions if (task, c) in self.flags]
        return "; ".join(found) or None

    def add(self, claim_id: str, task: str, subject: str, measured: str, stat: Paired | None, test: str, *,
            p_holds: float = math.nan, p_contradicts: float = math.nan, statistic: float = math.nan,
            n: int | None = None, cannot: str | None = None, rests_on_real: bool = False,
            rests_on: Sequence[str] = ()) -> None:
        if stat is not None:
            statistic, p_holds, p_contradicts, n = stat.statistic, stat.p_holds, stat.p_contradicts, stat.n
        control = self.controls.get(task) if rests_on_real else None
        degenerate = self.degenerate(task, list(rests_on) + ([self.real_full] if rests_on_real else []))
        verdict = decide(p_holds, p_contradicts, self.alpha, test, cannot=cannot, control=control,
                         degenerate=degenerate)
        claim = CLAIMS[claim_id] + ("" if self.recipe is None else f" (training recipe: {self.recipe_label})")
        self.rows.append({
            "model": self.model, "claim_id": self.claim_id(claim_id), "claim": claim, "task": task, "subject": subject,
            "measured": measured, "statistic": float(statistic),
            "ci_low": stat.ci_low if stat is not None else math.nan,
            "ci_high": stat.ci_high if stat is not None else math.nan,
            "p_holds": float(p_holds), "p_contradicts": float(p_contradicts), "n": n,
            "paper": paper_number(claim_id, task, subject), "verdict": verdict.verdict, "reason": verdict.reason,
            "rule": verdict.rule,
        })


def _scores_by_condition(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.pivot_table(index="example_id", columns="condition", values="score", aggfunc="first")


def _best_synthetic(ctx: _Context, task: str, scores: pd.DataFrame | None) -> str | None:
    if ctx.table1 is not None:
        best = ctx.table1[(ctx.table1["task"] == task) & ctx.table1["is_best_synthetic"]
                          & ctx.table1["condition"].map(lambda c: recipe_of(str(c)) == ctx.recipe)]
        if len(best):
            return str(best["condition"].iloc[0])
    if scores is not None:
        present = [c for c in ctx.synthetic if c in scores.columns]
        if present:
            means = scores[present].mean()
            return max(present, key=lambda c: (means[c], -present.index(c)))
    return None


def _table1_row(ctx: _Context, task: str, condition: str) -> pd.Series | None:
    if ctx.table1 is None:
        return None
    rows = ctx.table1[(ctx.table1["task"] == task) & (ctx.table1["condition"] == condition)]
    return rows.iloc[0] if len(rows) else None


def _score_claims(ctx: _Context) -> None:
    """C1 (Real (Full) > best synthetic), C2 (best synthetic > Non-FT) and CB (closed book)."""
    test = "one-sided paired bootstrap over eval examples"
    for task in ctx.tasks:
        frame = ctx.inputs.get(ctx.paths.predictions.get(task, ""), "predictions")
        scores = _scores_by_condition(frame) if frame is not None else None
        best = _best_synthetic(ctx, task, scores)
        for claim_id, better, worse in (("C1", ctx.real_full, best), ("C2", best, NONFT)):
            rests_on = [c for c in (better, worse) if c not in (None, NONFT)]
            if best is None:
                ctx.add(claim_id, task, "", "", None, test,
                        cannot=not_built(ctx.paths.table1) if ctx.table1 is None else "no synthetic condition scored")
                continue
            subject = f"{ctx.label(task, better)} vs {ctx.label(task, worse)}"
            if scores is not None and {better, worse} <= set(scores.columns):
                stat = paired_difference(scores[better].to_numpy(), scores[worse].to_numpy(), ctx.resamples,
                                         ctx.seed_of(claim_id, task), ctx.alpha)
                measured = (f"{scores[better].mean():.3f} vs {scores[worse].mean():.3f} "
                            f"(difference {stat.statistic:+.3f})")
                ctx.add(claim_id, task, subject, measured, stat, test, rests_on_real=claim_id == "C1",
                        rests_on=rests_on)
                continue
            b, w = _table1_row(ctx, task, better), _table1_row(ctx, task, worse)
            if b is None or w is None:
                ctx.add(claim_id, task, subject, "", None, test, cannot=not_built(ctx.paths.predictions.get(task, "")))
                continue
            # Table 1 alone: only one direction's p exists (the other needs the predictions)
            if claim_id == "C1":
                p_h, p_c, which = math.nan, float(b["p_vs_best_synthetic"]), "Table 1's p that the best synthetic wins"
            else:
                p_h, p_c, which = float(b["p_vs_nonft"]), math.nan, "Table 1's p against Non-FT"
            ctx.add(claim_id, task, subject, f"{b['score']:.3f} vs {w['score']:.3f}", None,
                    f"{test} ({which}; predictions not built: the other direction is untested)",
                    p_holds=p_h, p_contradicts=p_c, statistic=float(b["score"] - w["score"]), n=int(b["n"]),
                    rests_on_real=claim_id == "C1", rests_on=rests_on)
    if ctx.recipe is None:
        _closed_book_claims(ctx)


def _closed_book_note(task: str) -> str | None:
    from synthctx.tasks import get_task

    try:
        return get_task(task).closed_book_note
    except ValueError:
        return None


def _metric_mean(frame: pd.DataFrame, condition: str, metric: str) -> float:
    import json

    values = [json.loads(m).get(metric) for m in frame.loc[frame["condition"] == condition, "metrics"]]
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


def _closed_book_claims(ctx: _Context) -> None:
    """CB: how much of each task's Real (Full) score the closed-book base model (the question
    without the documents) reaches: its score and interval beside Non-FT and Real (Full); the
    verdict tests Real (Full) > closed book. A task whose closed-book score cannot measure memory
    (``Task.closed_book_note``: SummHay) is not applicable, with its score shown."""
    test = "one-sided paired bootstrap over eval examples (Real (Full) - closed book)"
    present = ctx.table1 is not None and (ctx.table1["condition"] == CLOSED_BOOK).any()
    if not present:
        ctx.add("CB", "all", "", "", None, test,
                cannot="not run in this study (no closed_book condition)" if ctx.table1 is not None
                else not_built(ctx.paths.table1))
        return
    for task in ctx.tasks:
        closed, real = _table1_row(ctx, task, CLOSED_BOOK), _table1_row(ctx, task, REAL_FULL)
        nonft = _table1_row(ctx, task, NONFT)
        subject = f"{ctx.label(task, REAL_FULL)} vs {ctx.label(task, CLOSED_BOOK)}"
        if closed is None or real is None:
            ctx.add("CB", task, subject, "", None, test, cannot="no closed_book or Real (Full) row in Table 1")
            continue
        share = closed["score"] / real["score"] if real["score"] > 0 else math.nan
        measured = (f"closed book {closed['score']:.3f} [{closed['ci_low']:.3f}, {closed['ci_high']:.3f}] vs "
                    + (f"Non-FT {nonft['score']:.3f}, " if nonft is not None else "")
                    + f"Real (Full) {real['score']:.3f}: memory reaches {_fmt(100 * share, 0)}% of the Real (Full) "
                      "score")
        frame = ctx.inputs.get(ctx.paths.predictions.get(task, ""), "predictions")
        metric = getattr(get_task(task), "paper_closed_book_metric", None)
        if frame is not None and metric:
            measured += (f"; {metric} (the paper's measure): closed book "
                         f"{_fmt(_metric_mean(frame, CLOSED_BOOK, metric), 3)}, Real (Full) "
                         f"{_fmt(_metric_mean(frame, REAL_FULL, metric), 3)}")
        note = _closed_book_note(task)
        if note:
            ctx.add("CB", task, subject, measured, None, test, statistic=float(real["score"] - closed["score"]),
                    n=int(closed["n"]), cannot=f"not applicable: {note}")
            continue
        scores = _scores_by_condition(frame) if frame is not None else None
        if scores is not None and {CLOSED_BOOK, REAL_FULL} <= set(scores.columns):
            stat = paired_difference(scores[REAL_FULL].to_numpy(), scores[CLOSED_BOOK].to_numpy(), ctx.resamples,
                                     ctx.seed_of("CB", task), ctx.alpha)
            ctx.add("CB", task, subject, measured, stat, test, rests_on_real=True)
        else:
            ctx.add("CB", task, subject, measured, None, test, statistic=float(real["score"] - closed["score"]),
                    cannot=not_built(ctx.paths.predictions.get(task, "")))


def _counted_matrix(frame: pd.DataFrame, head_kind: str, example_ids: Sequence[str] | None = None) -> np.ndarray:
    """(examples x heads) scores of one head kind, rows of examples that did not count zeroed;
    ``example_ids`` fixes the row order (examples absent from the frame: zero rows)."""
    part = frame[frame["head_kind"] == head_kind]
    if part.empty:
        return np.zeros((0, 0))
    width = int(part["layers"].iloc[0]) * int(part["heads"].iloc[0])
    by_id = {str(e): (bool(c), np.asarray(s, dtype=float)) for e, c, s in
             zip(part["example_id"], part["counted"], part["scores"])}
    ids = list(example_ids) if example_ids is not None else list(by_id)
    out = np.zeros((len(ids), width))
    for i, e in enumerate(ids):
        if e in by_id and by_id[e][0]:
            out[i] = by_id[e][1]
    return out


def _head_claims(ctx: _Context) -> None:
    """C3: positive heads of each synthetic model vs Real (Full), per task."""
    test = "one-sided paired bootstrap over head-detection examples"
    for task in ctx.tasks:
        real_path = ctx.paths.head_examples.get((task, ctx.real_full), "")
        real = ctx.inputs.get(real_path, "head_example_scores")
        for condition in ctx.synthetic:
            path = ctx.paths.head_examples.get((task, condition), "")
            other = ctx.inputs.get(path, "head_example_scores")
            subject = ctx.label(task, condition)
            if real is None or other is None:
                ctx.add("C3", task, subject, "", None, test, cannot=not_built(real_path if real is None else path))
                continue
            ids = sorted(set(real["example_id"]) & set(other["example_id"]))
            a, b = _counted_matrix(real, "retrieval", ids), _counted_matrix(other, "retrieval", ids)
            if a.size == 0 or not (a.sum(0) > 0).any():
                ctx.add("C3", task, subject, "", None, test,
                        cannot="the Real (Full) model has no head with a positive retrieval score")
                continue
            stat = positive_head_difference(a, b, ctx.resamples, ctx.seed_of("C3", task, condition), ctx.alpha)
            measured = (f"positive heads: Real (Full) {int((a.sum(0) > 0).sum())}, {subject} "
                        f"{int((b.sum(0) > 0).sum())} (of {a.shape[1]})")
            ctx.add("C3", task, subject, measured, stat, test, rests_on_real=True, rests_on=[condition])


def undefined_rho_reason(n: int, measure: str) -> str:
    """Why Figure 3's Spearman rho over ``n`` finite (similarity, score) pairs is undefined."""
    if n < 3:
        return (f"Spearman rho undefined: {n} finite (similarity, score) pairs, it needs 3 (a Real (Full) "
                "model without positive heads gives none)")
    # n pairs but no rank order: every condition has the same similarity or the same score
    return (f"Spearman rho undefined: the {measure} or the score is the same for all {n} synthetic "
            "conditions (a rank correlation needs both to vary)")


def _correlation_claims(ctx: _Context) -> None:
    """C4: Figure 3's Spearman rho of cosine and of top-K recall with the score."""
    test = "Figure 3's two-sided exact permutation p with the sign of rho"
    frame = ctx.inputs.get(ctx.paths.correlations, "correlations")
    for task in ctx.tasks:
        for measure in ("cosine", "recall_topk"):
            if frame is None:
                ctx.add("C4", task, measure, "", None, test, cannot=not_built(ctx.paths.correlations))
                continue
            # the recipe's own Spearman (Figure 3)
            row = frame[(frame["task"] == task) & (frame["measure"] == measure + recipe_suffix(ctx.recipe))]
            if row.empty:
                ctx.add("C4", task, measure, "", None, test, cannot=f"no {measure} correlation for {task}")
                continue
            r = row.iloc[0]
            rho, p, n = float(r["spearman_rho"]), float(r["p_value"]), int(r["n_conditions"])
            if not np.isfinite(rho):
                ctx.add("C4", task, measure, f"n = {n} synthetic conditions with a finite {measure}", None, test,
                        n=n, cannot=undefined_rho_reason(n, measure))
                continue
            ctx.add("C4", task, measure, f"Spearman rho {rho:+.3f} over {n} synthetic conditions", None,
                    f"{test} ({r['p_method']})", p_holds=p if rho > 0 else 1.0, p_contradicts=p if rho < 0 else 1.0,
                    statistic=rho, n=n, rests_on_real=True)


def _per_example_interventions(frame: pd.DataFrame, intervention: str) -> pd.Series:
    part = frame[frame["intervention"] == intervention]
    return part.groupby("example_id")["score"].mean()


def _n_heads(frame: pd.DataFrame, intervention: str) -> int:
    import json

    sizes = [len(json.loads(h)) for h in frame.loc[frame["intervention"] == intervention, "heads"]]
    return max(sizes) if sizes else 0


def _causal_claims(ctx: _Context) -> None:
    """C5 (knockout top-K vs random) and C6 (patching Intersection vs Orig. and vs Random)."""
    test = "one-sided paired bootstrap over causal examples"
    if ctx.recipe is not None:
        _recipe_causal_claims(ctx, test)
        return
    for (task, condition), path in ctx.paths.knockout.items():
        if recipe_of(condition) is not None:
            continue  # under its recipe's pass
        _knockout_claim(ctx, task, condition, path, test)
    for (task, condition), path in ctx.paths.patching.items():
        if recipe_of(condition) is not None:
            continue  # under its recipe's pass
        _patching_claim(ctx, task, condition, path, test)


def _patching_claim(ctx: _Context, task: str, condition: str, path: str, test: str) -> None:
    """One C6 row: the Intersection heads of the recipient's recipe's Real (Full) model patched in,
    vs the unpatched recipient and vs Random heads."""
    summary = ctx.inputs.get(ctx.paths.table3, "intervention_summary") if ctx.paths.table3 else None
    subject = ctx.label(task, condition)
    frame = ctx.inputs.get(path, "intervention_predictions")
    if frame is None:
        measured = ""
        if summary is not None:
            rows = summary[(summary["task"] == task) & (summary["condition"] == condition)].set_index("intervention")
            if "patch_intersection" in rows.index:
                r = rows.loc["patch_intersection"]
                rand = rows["score"].get("patch_random", math.nan)
                measured = (f"Table 3: Orig. {r['baseline_score']:.3f}, Inter. {r['score']:.3f} "
                            f"({int(r['n_heads'])} heads), Rand. {_fmt(rand, 3)}")
        ctx.add("C6", task, subject, measured, None, test, cannot=not_built(path))
        return
    k = _n_heads(frame, "patch_intersection")
    if k == 0:
        ctx.add("C6", task, subject, "", None, test, cannot="no head is in both models' top-K sets (empty "
                                                             "Intersection)", rests_on_real=True)
        return
    none, inter, rand = (_per_example_interventions(frame, i)
                         for i in ("none", "patch_intersection", "patch_random"))
    ids = none.index
    gain = paired_difference(inter.loc[ids].to_numpy(), none.to_numpy(), ctx.resamples,
                             ctx.seed_of("C6", task, condition, "orig"), ctx.alpha)
    margin = paired_difference(inter.loc[ids].to_numpy(), rand.loc[ids].to_numpy(), ctx.resamples,
                               ctx.seed_of("C6", task, condition, "random"), ctx.alpha)
    measured = (f"Orig. {none.mean():.3f}, Inter. {inter.loc[ids].mean():.3f} ({k} heads), Rand. "
                f"{rand.loc[ids].mean():.3f}; statistic: Inter. - Orig. (Inter. - Rand. {margin.statistic:+.3f}, "
                f"p = {margin.p_holds:.4f})")
    # both parts must hold (intersection-union: the larger p); either part contradicts (Bonferroni)
    ctx.add("C6", task, subject, measured, gain._replace(p_holds=max(gain.p_holds, margin.p_holds),
                                                         p_contradicts=min(1.0, 2 * min(gain.p_contradicts,
                                                                                        margin.p_contradicts))),
            f"{test}, Inter. > Orig. and Inter. > Rand. (larger p; opposite: Bonferroni of the two)",
            rests_on_real=True, rests_on=[condition])


def _knockout_claim(ctx: _Context, task: str, condition: str, path: str, test: str) -> None:
    """One C5 row: knocking out a model's own top-K heads vs K random heads."""
    subject = ctx.label(task, condition)
    frame = ctx.inputs.get(path, "intervention_predictions")
    if frame is None:
        ctx.add("C5", task, subject, "", None, test, cannot=not_built(path))
        return
    k = _n_heads(frame, "knockout_topk")
    if k == 0:
        ctx.add("C5", task, subject, "", None, test, cannot="the model has no head with a positive retrieval "
                                                             "score to knock out")
        return
    none, top, rand = (_per_example_interventions(frame, i) for i in ("none", "knockout_topk", "knockout_random"))
    ids = none.index
    stat = paired_difference(rand.loc[ids].to_numpy(), top.loc[ids].to_numpy(), ctx.resamples,
                             ctx.seed_of("C5", task, condition), ctx.alpha)
    measured = (f"drop top-{k} {none.mean() - top.loc[ids].mean():+.3f}, drop {_n_heads(frame, 'knockout_random')}"
                f" random {none.mean() - rand.loc[ids].mean():+.3f} (statistic: the difference)")
    ctx.add("C5", task, subject, measured, stat, test, rests_on_real=condition == ctx.real_full, rests_on=[condition])


def _recipe_causal_claims(ctx: _Context, test: str) -> None:
    """C5 and C6 under an extra recipe: its conditions named in causal.knockout_conditions and
    causal.patch_conditions (patched with the recipe's own Real (Full) heads; one row saying so
    where the recipe has none)."""
    knocked = [(key, path) for key, path in ctx.paths.knockout.items() if recipe_of(key[1]) == ctx.recipe]
    for (task, condition), path in knocked:
        _knockout_claim(ctx, task, condition, path, test)
    if not knocked:
        ctx.add("C5", "all", "", "", None, test, cannot="no condition of this recipe is in causal.knockout_conditions")
    patched = [(key, path) for key, path in ctx.paths.patching.items() if recipe_of(key[1]) == ctx.recipe]
    for (task, condition), path in patched:
        _patching_claim(ctx, task, condition, path, test)
    if not patched:
        ctx.add("C6", "all", "", "", None, test, cannot="no condition of this recipe is in causal.patch_conditions")


def _table2_rows(tasks) -> list[tuple[str, str, str]]:
    """(Table 2 row name, task, head kind) of every task's rows (the task modules say which)."""
    return [(name, task, kind) for task in tasks for name, kind in get_task(task).rows_of_table2()]


def _specificity_claims(ctx: _Context) -> None:
    """C7: within-task split-half cosine vs Table 2's cross-task cosine, per Table 2 row."""
    test = "one-sided bootstrap over examples (each half and task resampled on its own)"
    table2 = ctx.inputs.get(ctx.paths.table2, "cross_task") if ctx.paths.table2 else None
    rows = _table2_rows(ctx.tasks)
    matrices: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    for name, task, kind in rows:
        path = ctx.paths.head_examples.get((task, REAL_FULL), "")
        frame = ctx.inputs.get(path, "head_example_scores")
        if frame is None:
            missing[name] = not_built(path)
            continue
        part = frame[(frame["head_kind"] == kind) & frame["counted"]]
        matrices[name] = _counted_matrix(part, kind)
    for name, task, kind in rows:
        published = ""
        if table2 is not None:
            off = table2[(table2["row"] == name) & (table2["column"] != name)].dropna(subset=["cosine"])
            if len(off):
                top = off.loc[off["cosine"].idxmax()]
                published = f"Table 2: largest off-diagonal cosine {top['cosine']:.3f} (vs {top['column']})"
        if name in missing:
            ctx.add("C7", name, "", published, None, test, cannot=missing[name] +
                    " (the within-task split-half agreement needs per-example head scores)")
            continue
        own = matrices[name]
        others = {k: m for k, m in matrices.items() if k != name and m.size and (m.sum(0) > 0).any()}
        if own.shape[0] < 2 or not (own.sum(0) > 0).any():
            why = (f"{own.shape[0]} counted example(s): two halves need 2" if own.shape[0] < 2
                   else "the Real (Full) model has no head with a positive score")
            ctx.add("C7", name, "", published, None, test, cannot=why, n=own.shape[0])
            continue
        if not others:
            ctx.add("C7", name, "", published, None, test, cannot="no other task's Real (Full) head vector with a "
                                                                   "positive score to compare", n=own.shape[0])
            continue
        stat, within, cross, closest = split_half_margin(own, others, ctx.resamples, ctx.seed_of("C7", name),
                                                         ctx.alpha)
        measured = (f"split-half cosine {within:.3f} vs largest cross-task cosine {cross:.3f} (vs {closest})"
                    + (f"; {published}" if published else ""))
        ctx.add("C7", name, "", measured, stat, test, rests_on_real=True)


def _niah_claim(ctx: _Context) -> None:
    from synthctx.analysis import similarity as sim

    test = "one-sided hypergeometric test of the top-K overlap against two random K-sets"
    set1, set2 = (ctx.inputs.get(p, "head_scores") if p else None for p in ctx.paths.niah)
    if set1 is None or set2 is None:
        ctx.add("C8", "niah", "", "", None, test, cannot=not_built(ctx.paths.niah[0 if set1 is None else 1]))
        return
    v1, v2 = sim.head_vector(set1, "niah"), sim.head_vector(set2, "niah")
    top1, top2 = sim.top_k_heads(v1, ctx.top_k), sim.top_k_heads(v2, ctx.top_k)
    n = int(set1["n_examples"].iloc[0]) + int(set2["n_examples"].iloc[0])
    if not top1 or not top2:
        ctx.add("C8", "niah", "", "", None, test, n=n, cannot="a needle set has no head with a positive score")
        return
    p_h, p_c = overlap_test(top1, top2, len(v1))
    overlap = len(top1 & top2)
    measured = (f"top-{ctx.top_k} overlap {overlap}/{min(len(top1), len(top2))} of {len(v1)} heads "
                f"(chance {len(top1) * len(top2) / len(v1):.2f}); cosine(set1, set2) {sim.cosine(v1, v2):.3f}")
    ctx.add("C8", "niah", "", measured, None, test, p_holds=p_h, p_contradicts=p_c, statistic=float(overlap), n=n)


def build_claims(paths: ClaimPaths, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """The claims table of one model, and the inputs that were not built."""
    frame, ctx = _build(paths, settings)
    return frame, list(dict.fromkeys(ctx.inputs.missing))


def _build(paths: ClaimPaths, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, _Context]:
    from synthctx.study import register_user_labels

    register_user_labels(settings.get("user_labels") or {})  # the recipe conditions' labels
    inputs = _Inputs()
    ctx = _Context(model=str(settings["model"]), tasks=list(settings["tasks"]), synthetic=list(settings["synthetic"]),
                   alpha=float(settings["alpha"]), resamples=int(settings["resamples"]), seed=int(settings["seed"]),
                   top_k=int(settings["top_k"]), min_distinct_fraction=float(settings["min_distinct_fraction"]),
                   paths=paths, inputs=inputs)
    ctx.table1 = inputs.get(paths.table1, "table1")
    if ctx.table1 is not None:
        ctx.flags = degenerate_flags(ctx.table1, ctx.alpha, ctx.min_distinct_fraction)
        ctx.controls = control_failures(ctx.table1, ctx.alpha)
    for part in (_score_claims, _head_claims, _correlation_claims, _causal_claims, _specificity_claims, _niah_claim):
        part(ctx)
    for recipe_ctx in _recipe_contexts(ctx, settings):
        for part in (_score_claims, _head_claims, _correlation_claims, _causal_claims):
            part(recipe_ctx)
    frame = pd.DataFrame(ctx.rows, columns=SCHEMAS["claims"].names)
    frame["n"] = frame["n"].astype("Int32")
    order = {c: i for i, c in enumerate(CLAIMS)}
    # stable: each claim's main-recipe rows, then the same claim under each extra recipe
    frame = frame.sort_values("claim_id", key=lambda s: s.map(lambda c: order[base_claim_id(c)]),
                              kind="stable").reset_index(drop=True)
    return frame, ctx


def _recipe_contexts(ctx: _Context, settings: Mapping[str, Any]) -> list[_Context]:
    """One context per extra training recipe of the study (the recipes of the conditions in
    ``settings["trained"]``): its synthetic conditions, its Real (Full) as reference and positive
    control; rows and inputs shared with the main pass."""
    from dataclasses import replace

    from synthctx.study import get_condition

    trained = [c for names in (settings.get("trained") or {}).values() for c in names]
    out = []
    for recipe in recipes_of(trained)[1:]:  # the extra recipes (the main one, None, first)
        real_full = recipe_condition(REAL_FULL, recipe)
        found = next((get_condition(c) for c in trained if recipe_of(c) == recipe and get_condition(c)), None)
        controls = control_failures(ctx.table1, ctx.alpha, real_full) if ctx.table1 is not None else {}
        out.append(replace(ctx, recipe=recipe, recipe_label=found.recipe_label if found is not None else recipe,
                           real_full=real_full, controls=controls,
                           synthetic=[recipe_condition(c, recipe) for c in ctx.synthetic
                                      if recipe_condition(c, recipe) in trained]))
    return out


def _fmt(value, digits: int) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _uncertainty(row) -> str:
    if np.isfinite(row.ci_low):
        return f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]; p {_fmt(row.p_holds, 4)}"
    if np.isfinite(row.p_holds) or np.isfinite(row.p_contradicts):
        return f"p {_fmt(row.p_holds, 4)} (opposite {_fmt(row.p_contradicts, 4)})"
    return "-"


def _verdict_cell(row) -> str:
    return f"**{row.verdict}**" + (f": {row.reason}" if row.reason else "")


def claims_markdown(frame: pd.DataFrame, settings: Mapping[str, Any], flags: Mapping[tuple[str, str], str],
                    controls: Mapping[str, str], missing: Sequence[str]) -> str:
    alpha = float(settings["alpha"])
    lines = [f"# Claims of the paper checked by this run: {settings['model']}", "",
             "Zhao, Yin & Durrett (ICML 2025). One row per claim and task (and condition or measure). Paper: "
             "Llama-3-8B-Instruct / Mistral-7B-Instruct-v0.1 (STUDY.md section 8). Uncertainty: the "
             f"{100 * (1 - alpha):.0f}% percentile bootstrap interval of the statistic and the one-sided p "
             f"that decided ({settings['resamples']} resamples), or the test's p-values.", "",
             "Verdicts: **holds** / **contradicted** when the test in the claim's (the opposite) direction has "
             f"p < alpha = {alpha}; **inconclusive at this n** otherwise; **cannot evaluate** when an input or the "
             "quantity is missing (with why); **inconclusive (positive control fails)** when the claim rests on a "
             "task's Real (Full) model that does not beat Non-FT and the trivial baseline; **inconclusive "
             "(degenerate outputs)** when a fine-tuned condition it rests on gives (nearly) constant predictions "
             f"(distinct / n < {settings['min_distinct_fraction']}) or does not beat the trivial baseline.", "",
             "## Summary", "", "| claim | what the paper says | verdicts |", "|---|---|---|"]
    ids = list(dict.fromkeys(frame["claim_id"]))
    for base, text in CLAIMS.items():
        # the claim, then the same claim under each extra training recipe (rows follow the main ones)
        for claim_id in [base, *[c for c in ids if c != base and base_claim_id(c) == base]]:
            part = frame[frame["claim_id"] == claim_id]
            counts = part["verdict"].value_counts()
            summary = ", ".join(f"{v}: {int(counts[v])}" for v in VERDICTS if v in counts) or "-"
            lines.append(f"| {claim_id} | {text} | {summary} |")
    lines += ["", "## Every row", "",
              "| claim | task | subject | measured | statistic | uncertainty | n | paper | verdict | rule |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in frame.itertuples(index=False):
        n = "-" if pd.isna(row.n) else int(row.n)
        lines.append(f"| {row.claim_id} | {row.task} | {row.subject or '-'} | {row.measured or '-'} | "
                     f"{_fmt(row.statistic, 3)} | {_uncertainty(row)} | {n} | {row.paper} | {_verdict_cell(row)} | "
                     f"{row.rule} |")
    lines += ["", "## Positive control and degenerate conditions (Table 1)", ""]
    if controls:
        lines += [f"- {task}: positive control fails: {why}" for task, why in controls.items()]
    lines += [f"- {task} / {condition_label(task, c)}: degenerate: {why}" for (task, c), why in flags.items()]
    if not controls and not flags:
        lines.append("- every task's positive control passes and no condition is degenerate")
    if missing:
        lines += ["", "## Inputs not built", "", *[f"- `{p}`" for p in missing]]
    return "\n".join(lines) + "\n"


def make_claims(paths: ClaimPaths, table_path: str, markdown_path: str, settings: Mapping[str, Any],
                log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Entry point of the ``claims`` rule: claims.parquet and claims.md."""
    from synthctx.provenance import provenance
    from synthctx.schema import write_table

    frame, ctx = _build(paths, settings)
    missing = list(dict.fromkeys(ctx.inputs.missing))
    alpha, fraction = ctx.alpha, ctx.min_distinct_fraction
    meta = provenance(seed=settings["seed"], model=settings["model"], alpha=alpha, min_distinct_fraction=fraction,
                      resamples=settings["resamples"], top_k=settings["top_k"], inputs=paths.all(), missing=missing)
    write_table(frame, table_path, "claims", meta)
    text = claims_markdown(frame, settings, ctx.flags, ctx.controls, missing)
    Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(markdown_path).with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(markdown_path)
    if log:
        for row in frame.itertuples(index=False):
            log(f"{row.claim_id} {row.task} {row.subject}: {row.verdict} {row.reason}")
    return frame
