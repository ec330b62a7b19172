"""The synthetic-data scorecard of one (model, task): candidates ranked by their probe's heads.

Input:  every probe's per-example head scores (results/{study}/scorecard/{model}/{task}/{condition}/
        per_example.parquet, or the study's results/{study}/heads/{model}/{task}/per_example/{condition}.parquet
        where the probe is the study's) and training sets; benchmark files (params) for the cost.
Output: results/{study}/scorecard/{model}/{task}/scorecard.parquet (kind scorecard), scorecard.md,
        stability.parquet (kind scorecard_stability); results/{study}/figures/{model}/scorecard_{task}.png,
        scorecard_stability_{task}.png.
Feeds:  the Scorecard section of the report; rule scorecard_compare (against Table 1).
"""

from synthctx.analysis.scorecard import run_scorecard
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
conditions = list(sm.params.conditions)
run_scorecard(
    model=sm.wildcards.model,
    task=sm.wildcards.task,
    example_files=dict(zip(conditions, sm.input.examples)),
    train_files=dict(zip(conditions, sm.input.train_sets)),
    costs=dict(sm.params.costs),
    reuse=dict(sm.params.reuse),
    labels=dict(sm.params.labels),
    settings=dict(sm.params.settings),
    table_path=sm.output.table,
    markdown_path=sm.output.markdown,
    figure_path=sm.output.figure,
    stability_path=sm.output.stability,
    stability_figure=sm.output.stability_figure,
    log_line=log.info,
)
