"""Training health: did a run's loss fall at all?

A LoRA run whose loss stays flat (learning rate too low for the step count, labels that carry no
signal, a broken data set) still writes an adapter, and Table 1 would compare its score as if the
model had been trained. The check is deliberately simple and scale-free: the mean loss of the last
tenth of the optimizer steps against the mean of the first tenth (at least one step each).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger("synthctx.train")


@dataclass(frozen=True)
class LossHealth:
    steps: int
    first_loss: float  # mean over the first tenth of the steps
    last_loss: float  # mean over the last tenth
    relative_drop: float  # (first - last) / first
    fell: bool

    def describe(self) -> str:
        return (f"loss {self.first_loss:.3f} -> {self.last_loss:.3f} over {self.steps} steps "
                f"({100 * self.relative_drop:+.1f}% drop)")


def loss_health(losses: Sequence[float], min_relative_drop: float) -> LossHealth:
    """Whether the loss fell by at least ``min_relative_drop`` (a fraction of its start)."""
    values = [float(v) for v in losses]
    if not values:
        raise ValueError("training curve has no steps")
    window = max(1, len(values) // 10)
    first = sum(values[:window]) / window
    last = sum(values[-window:]) / window
    drop = (first - last) / first if first > 0 else 0.0
    # One step cannot show a fall: it is reported as not fallen rather than silently passed.
    fell = len(values) > 1 and drop >= min_relative_drop
    return LossHealth(len(values), first, last, drop, fell)


def warn_if_loss_did_not_fall(losses: Sequence[float], min_relative_drop: float, what: str) -> LossHealth:
    """Log a warning naming ``what`` when the run's loss did not fall; returns the check."""
    health = loss_health(losses, min_relative_drop)
    if health.fell:
        log.info("%s: %s", what, health.describe())
    else:
        log.warning("%s: training loss did not fall by %.0f%%: %s; its scores do not measure a trained model",
                    what, 100 * min_relative_drop, health.describe())
    return health


def plot_training_curves(curves, path, model: str, min_relative_drop: float) -> list[LossHealth]:
    """One panel per task, every condition's loss per optimizer step in it (raw and a running mean).

    ``curves``: ``{task: {condition: train_curve frame}}``. Conditions whose loss did not fall are
    drawn dashed and named in the legend. Returns the health of every run, in order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthctx.evaluate.table1 import condition_label
    from synthctx.study import task_title

    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    checks = []
    for ax, task in zip(axes[0], tasks):
        for i, (condition, frame) in enumerate(curves[task].items()):
            losses = frame["loss"].to_numpy(dtype=float)
            health = warn_if_loss_did_not_fall(losses, min_relative_drop, f"{model}/{task}/{condition}")
            checks.append(health)
            color = plt.cm.tab10(i % 10)
            window = max(1, len(losses) // 10)
            smooth = [losses[max(0, k - window + 1): k + 1].mean() for k in range(len(losses))]
            label = condition_label(task, condition) + ("" if health.fell else " (loss did not fall)")
            ax.plot(frame["step"], losses, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(frame["step"], smooth, color=color, linewidth=1.6, label=label,
                    linestyle="-" if health.fell else "--")
        ax.set_title(task_title(task))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (target tokens)")
        ax.legend(fontsize=6)
    fig.suptitle(f"Training curves: {model} (faint: per step; solid: running mean over a tenth of the run)",
                 fontsize=9)
    fig.tight_layout()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return checks
