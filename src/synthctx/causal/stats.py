"""Paired bootstrap over examples for the causal tables (Figure 4, Table 3).

Resample the example set with replacement (the same indices for both systems), recompute the
mean difference ``treated - baseline``; the interval is the percentile interval of that
difference and the p-value is two-sided: twice the smaller fraction of resampled differences
on either side of zero (capped at 1), so a difference of exactly zero everywhere gives p = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    score: float
    baseline_score: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_bootstrap(treated: Sequence[float], baseline: Sequence[float], resamples: int, seed: int,
                     alpha: float = 0.05) -> PairedResult:
    a = np.asarray(treated, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired bootstrap needs two equal-length non-empty score lists, got {a.shape} and {b.shape}")
    if resamples < 1:
        raise ValueError("paired bootstrap needs at least one resample")
    diff = a - b
    rng = np.random.default_rng(seed)
    # Chunked so 10,000 resamples of a large eval set stay small in memory.
    deltas = []
    for start in range(0, resamples, 1000):
        n = min(1000, resamples - start)
        idx = rng.integers(0, diff.size, size=(n, diff.size))
        deltas.append(diff[idx].mean(axis=1))
    boot = np.concatenate(deltas)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return PairedResult(float(a.mean()), float(b.mean()), float(diff.mean()), float(low), float(high), p)
