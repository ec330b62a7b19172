"""Figure 4: score drop when a model's top-K retrieval heads (vs K random heads) are masked.

Inputs:  results/{study}/causal/{model}/{task}/{condition}/knockout.parquet for every task and
         condition (Real (Full) and the synthetic ones).
Outputs: results/{study}/figures/{model}/figure4.png; results/{study}/causal/{model}/knockout_summary.parquet
         (intervention_summary: paired-bootstrap deltas, intervals, p-values).
Feeds:   Figure 4.
"""

from synthctx.causal.summary import write_figure4
from synthctx.logging_utils import setup_logging
from synthctx.study import register_user_labels

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
register_user_labels(sm.params.user_labels)  # labels of the user datasets
summary = write_figure4(list(sm.input), sm.output.figure, sm.output.summary, model=sm.wildcards.model,
                        resamples=sm.params.resamples, alpha=sm.params.alpha, seed=sm.params.seed)
log.info("figure 4 from %d knockout tables:\n%s", len(sm.input), summary.to_string())
