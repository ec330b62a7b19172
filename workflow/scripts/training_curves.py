"""Training curves of one model: loss per optimizer step, every condition of a task in one panel.

Input:  results/{study}/adapters/{model}/{task}/{condition}/train_curve.parquet for every trained condition.
Output: results/{study}/figures/{model}/training_curves.png.
Feeds:  the report's training-health figure; logs a warning for each run whose loss did not fall
        (Table 1 flags the same runs in its notes).
"""

from synthctx.logging_utils import setup_logging
from synthctx.study import register_user_labels
from synthctx.schema import read_table
from synthctx.train.health import plot_training_curves

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
settings = sm.params.settings
register_user_labels(settings["user_labels"])  # labels of the user datasets
curves = {}
for (task, condition), path in zip(settings["runs"], sm.input.curves, strict=True):
    curves.setdefault(task, {})[condition] = read_table(path, "train_curve")
checks = plot_training_curves(curves, sm.output.figure, settings["model"], float(settings["min_loss_drop"]))
log.info("%d of %d runs' loss fell", sum(c.fell for c in checks), len(checks))
