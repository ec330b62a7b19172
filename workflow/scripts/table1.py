"""Table 1 of one model: score per task and condition, bootstrap CIs, daggers, positive control.

Input:  results/{study}/eval/{model}/{task}/predictions.parquet for every task (predictions);
        results/{study}/data/{model}/{task}/eval.parquet and train/real_full.parquet (the trivial baseline:
        cite every document / the most frequent Real (Full) answer);
        results/{study}/adapters/{model}/{task}/{condition}/train_curve.parquet (training-set sizes, loss health).
Output: results/{study}/tables/{model}/table1.parquet (table1), results/{study}/tables/{model}/table1.md,
        results/{study}/figures/{model}/table1.png.
Feeds:  Table 1 of the report; scores for the head-similarity correlations.
"""

from synthctx.evaluate.table1 import make_table1, task_extras
from synthctx.logging_utils import setup_logging
from synthctx.study import register_user_labels

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
settings = sm.params.settings
register_user_labels(settings["user_labels"])  # labels of the user datasets
curves = iter(sm.input.curves)  # task by task, each in the rule's task_trained order
extras = {}
for i, task in enumerate(settings["tasks"]):
    trained = (list(settings["real"]) + list(settings["synthetic"]) + list(settings["user"].get(task, []))
               + list(settings.get("recipes", {}).get(task, [])))
    task_curves = {condition: next(curves) for condition in trained}
    extras[task] = task_extras(task, sm.input.eval[i], sm.input.real_full[i], task_curves,
                               float(settings["min_loss_drop"]))
table = make_table1(list(sm.input.predictions), sm.output.table, sm.output.markdown, sm.output.figure, settings, extras)
log.info("Table 1: %d rows", len(table))
for row in table[table["loss_fell"].eq(False).fillna(False)].itertuples(index=False):
    log.warning("%s/%s: training loss did not fall (Table 1 notes it)", row.task, row.condition)
