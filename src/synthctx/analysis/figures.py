"""Figure 3 (similarity vs downstream score) and the layer x head heatmaps."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from synthctx.evaluate.table1 import condition_label


def _label(task: str, condition: str) -> str:
    """Table 1's name of a condition, compact (SummHay's low-expression needle is "Simplified")."""
    return condition_label(task, condition).replace(" / ", "/")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def correlation_label(row: Mapping | None) -> str:
    """A panel title for one correlations row, n beside rho: ``rho=0.90 (n=5), exact p=0.083``."""
    if row is None:
        return "rho=n/a (n=0)"
    rho, n = float(row["spearman_rho"]), int(row["n_conditions"])
    if not math.isfinite(rho):
        return f"rho=n/a (n={n})"
    method = {"exact": "exact ", "permutation": "perm. "}.get(str(row["p_method"]), "")
    return f"rho={_fmt(rho)} (n={n}), {method}p={float(row['p_value']):.3f}"


def figure3(similarity: pd.DataFrame, correlations: pd.DataFrame, synthetic: Sequence[str], path: str,
            measures: Sequence[str] = ("cosine", "recall_topk")) -> None:
    """Scatter of each measure (rows) against the downstream score per task (columns).

    Retrieval heads only (SummHay: citation heads); the synthetic conditions are the points
    the correlation uses; Real (Limited) is drawn hollow for reference when present. An extra
    training recipe's conditions (``<base>__<recipe>`` in ``synthetic``) get their own rows of
    panels, against their recipe's Real (Full) and with their recipe's correlations.
    """
    from synthctx.study import recipe_condition, recipe_of, recipe_suffix, recipes_of, task_title

    plt = _pyplot()
    sim = similarity[similarity["head_kind"] == "retrieval"]
    tasks = list(dict.fromkeys(sim["task"]))
    recipes = recipes_of(synthetic)
    panels = [(measure, recipe) for recipe in recipes for measure in measures]
    fig, axes = plt.subplots(len(panels), max(1, len(tasks)), figsize=(4 * max(1, len(tasks)), 3.4 * len(panels)),
                             squeeze=False)
    for col, task in enumerate(tasks):
        group = sim[sim["task"] == task]
        for row, (measure, recipe) in enumerate(panels):
            ax = axes[row][col]
            suffix = recipe_suffix(recipe)
            limited, full = (c if recipe is None else recipe_condition(c, recipe) for c in ("real_limited",
                                                                                            "real_full"))
            points = group[group["condition"].isin([c for c in synthetic if recipe_of(c) == recipe])]
            ax.scatter(points[measure], points["score"], color="tab:blue")
            for _, p in points.iterrows():
                ax.annotate(_label(task, p["condition"]), (p[measure], p["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if not np.isfinite(points[measure].to_numpy(dtype=float)).any():
                ax.text(0.5, 0.5, "undefined: the Real (Full) model\nhas no head with a positive score",
                        transform=ax.transAxes, ha="center", va="center", fontsize=8, color="tab:gray")
            ref = group[group["condition"] == limited]
            if not ref.empty:
                ax.scatter(ref[measure], ref["score"], facecolors="none", edgecolors="tab:gray",
                           label=_label(task, limited))
            corr = correlations[(correlations["task"] == task) & (correlations["measure"] == measure + suffix)]
            ax.set_title(f"{task_title(task)}: {correlation_label(corr.iloc[0] if len(corr) else None)}", fontsize=10)
            # the recipe's own Real (Full) where it trained one (synthctx.analysis.similarity.reference_groups)
            reference = _label(task, full) if recipe is not None and (group["condition"] == full).any() \
                else _label(task, "real_full")
            ax.set_xlabel(measure.replace("_", " ") + f" to {reference}")
            ax.set_ylabel("downstream score")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmap_grid(matrices: Mapping[tuple[str, str], np.ndarray], conditions: Sequence[str], head_kinds: Sequence[str],
                 title: str, path: str, task: str) -> None:
    """Grid of layer x head score maps of one task: one row per head kind, one column per
    condition (named as in Table 1)."""
    plt = _pyplot()
    ncols, nrows = len(conditions), len(head_kinds)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols + 1.2, 3.4 * nrows), squeeze=False,
                             constrained_layout=True)
    for r, kind in enumerate(head_kinds):
        # one colour scale per head kind (insight and retrieval scores have different ranges)
        vmax = max([float(m.max()) for (k, _), m in matrices.items() if k == kind] + [1e-9])
        image = None
        for c, condition in enumerate(conditions):
            ax = axes[r][c]
            matrix = matrices.get((kind, condition))
            if matrix is None:
                ax.axis("off")
                continue
            image = ax.imshow(matrix, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=vmax,
                              interpolation="nearest")
            ax.set_title(f"{_label(task, condition)}\n{kind}", fontsize=8)
            if r == nrows - 1:
                ax.set_xlabel("head", fontsize=7)
            if c == 0:
                ax.set_ylabel("layer", fontsize=7)
            ax.tick_params(labelsize=6)
        if image is not None:
            fig.colorbar(image, ax=axes[r].tolist(), shrink=0.9, label=f"{kind} score")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
