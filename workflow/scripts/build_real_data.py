"""Build the real-data examples of one task for one model.

Inputs:  the task's raw files in their original formats (snakemake.input.raw: MDQA
         Lost-in-the-Middle JSONL.gz, MuSiQue JSONL/JSON array, SummHay haystack JSON) and
         the prepared model (snakemake.input.model: its tokenizer counts the budget).
Outputs: results/{study}/data/{model}/{task}/eval.parquet, train/real_full.parquet,
         train/real_limited.parquet (kind examples) and stats/real.parquet (dataset_stats).
Feeds:   every later stage: Real (Full)/(Limited) rows of Table 1 (training), the eval
         split of Table 1, head detection (Figure 3, Table 2) and the causal tests.
"""

from pathlib import Path

from synthctx.data.build import run_build_real_data
from synthctx.logging_utils import setup_logging

log = setup_logging(snakemake.log[0])  # noqa: F821 - injected by Snakemake
data = run_build_real_data(
    task=snakemake.wildcards.task,  # noqa: F821
    raw_files=list(snakemake.input.raw),  # noqa: F821
    model_dir=str(Path(snakemake.input.model).parent),  # noqa: F821
    outputs=dict(snakemake.output),  # noqa: F821
    params=snakemake.params.settings,  # noqa: F821
    model=snakemake.wildcards.model,  # noqa: F821
    log_path=snakemake.log[0],  # noqa: F821
)
log.info("%s: %d eval, %d real_full, %d real_limited examples", data.task, len(data.eval), len(data.real_full),
         len(data.real_limited))
