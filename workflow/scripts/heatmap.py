"""Layer x head retrieval-score heatmaps of one task: every condition side by side.

Inputs:  results/{study}/heads/{model}/{task}/{condition}.parquet for every condition.
Output:  results/{study}/figures/{model}/heatmap_{task}.png.
"""

from synthctx.analysis.run import run_heatmap
from synthctx.logging_utils import setup_logging
from synthctx.study import register_user_labels

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
register_user_labels(sm.params.user_labels)  # labels of the user datasets
run_heatmap(model=sm.wildcards.model, task=sm.wildcards.task, head_files=list(sm.input), output=sm.output[0])
