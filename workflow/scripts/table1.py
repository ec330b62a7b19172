"""Table 1 of one model: score per task and condition, bootstrap CIs, daggers.

Input:  results/eval/{model}/{task}/predictions.parquet for every task (predictions).
Output: results/tables/{model}/table1.parquet (table1), results/tables/{model}/table1.md,
        results/figures/{model}/table1.png.
Feeds:  Table 1 of the report; scores for the head-similarity correlations.
"""

from synthctx.evaluate.table1 import make_table1
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
table = make_table1(list(sm.input.predictions), sm.output.table, sm.output.markdown, sm.output.figure, sm.params.settings)
log.info("Table 1: %d rows", len(table))
