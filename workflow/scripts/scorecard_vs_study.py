"""Does the scorecard predict the full study? Spearman with Table 1 and the cost fraction, per task.

Input:  results/{study}/scorecard/{model}/{task}/scorecard.parquet (every task),
        results/{study}/tables/{model}/table1.parquet; the study's train_adapter and evaluate_task
        benchmark files (params) for its cost.
Output: results/{study}/scorecard/{model}/vs_study.parquet (kind scorecard_vs_study), vs_study.md.
Feeds:  the Scorecard section of the report.
"""

from synthctx.analysis.scorecard import run_vs_study
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
run_vs_study(
    model=sm.wildcards.model,
    scorecard_files=dict(zip(sm.params.tasks, sm.input.scorecards)),
    table1_path=sm.input.table1,
    study_costs={t: list(v) for t, v in dict(sm.params.study_costs).items()},
    seed=sm.params.seed,
    goal=sm.params.goal,
    table_path=sm.output.table,
    markdown_path=sm.output.markdown,
)
