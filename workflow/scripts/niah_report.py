"""NIAH report: the strongest heads of each needle set and their top-K overlap.

Inputs:  results/{study}/heads/{model}/niah/set1.parquet, set2.parquet.
Output:  results/{study}/tables/{model}/niah_heads.md.
"""

from synthctx.analysis.run import run_niah_report
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
run_niah_report(model=sm.wildcards.model, set1=sm.input.set1, set2=sm.input.set2, top_k=sm.params.top_k,
                output=sm.output[0])
