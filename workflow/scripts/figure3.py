"""Figure 3: Spearman correlation of head similarity with the downstream score.

Input:   results/{study}/analysis/{model}/similarity.parquet.
Outputs: results/{study}/analysis/{model}/correlations.parquet (kind correlations),
         results/{study}/figures/{model}/figure3.png.
"""

from synthctx.analysis.run import run_correlations
from synthctx.logging_utils import setup_logging
from synthctx.study import register_user_labels

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
register_user_labels(sm.params.user_labels)  # labels of the user datasets
run_correlations(similarity_path=sm.input[0], synthetic=sm.params.synthetic, output=sm.output.table,
                 figure=sm.output.figure, seed=sm.params.seed)
