"""Table 3: synthetic-data models with Real (Full) heads patched in, vs unpatched.

Inputs:  results/{study}/causal/{model}/{task}/{synthetic}/patching.parquet for every task and
         synthetic condition.
Outputs: results/{study}/tables/{model}/table3.md and table3.parquet (intervention_summary).
Feeds:   Table 3.
"""

from synthctx.causal.summary import write_table3
from synthctx.logging_utils import setup_logging
from synthctx.study import register_user_labels

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
register_user_labels(sm.params.user_labels)  # labels of the user datasets
summary = write_table3(list(sm.input), sm.output.markdown, sm.output.table, model=sm.wildcards.model,
                       resamples=sm.params.resamples, alpha=sm.params.alpha, seed=sm.params.seed)
log.info("table 3 from %d patching tables:\n%s", len(sm.input), summary.to_string())
