"""Table 2: cross-task cosine similarity of the Real (Full) models' head-score vectors.

Inputs:  results/{study}/heads/{model}/{task}/real_full.parquet for every task (SummHay: insight and
         retrieval heads).
Outputs: results/{study}/tables/{model}/table2.parquet (kind cross_task), results/{study}/tables/{model}/table2.md.
"""

from synthctx.analysis.run import run_table2
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
run_table2(model=sm.wildcards.model, head_files=list(sm.input), output=sm.output.table, markdown=sm.output.markdown)
