"""Similarity of every condition's retrieval heads to the Real (Full) model's, with Table 1 scores.

Inputs:  results/{study}/heads/{model}/{task}/{condition}.parquet (all tasks, all conditions),
         results/{study}/eval/{model}/{task}/predictions.parquet (downstream score per condition).
Output:  results/{study}/analysis/{model}/similarity.parquet (kind head_similarity).
Feeds:   Figure 3 (rule figure3).
"""

from synthctx.analysis.run import run_similarity
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
run_similarity(
    model=sm.wildcards.model, head_files=list(sm.input.heads), prediction_files=list(sm.input.predictions),
    top_k=sm.params.top_k, threshold=sm.params.threshold, output=sm.output[0],
)
