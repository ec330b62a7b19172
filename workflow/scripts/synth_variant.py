"""Assemble one synthetic variant of one task for one target model.

Input:  results/{study}/synth/{task}/pool.parquet (document_pool; none for a task without a pool),
        resources/models/{model}/ (the
        target model's tokenizer: examples are fitted to its context_tokens budget).
Output: results/{study}/data/{model}/{task}/train/{synthetic}.parquet (examples, split train,
        condition = variant) and results/{study}/data/{model}/{task}/stats/{synthetic}.parquet
        (dataset_stats: counts, token lengths, needle depth, rejects per reason).
Feeds:  fine-tuning of the synthetic conditions, hence Table 1, Figure 3, Tables 3/11.
"""

from pathlib import Path

from synthctx.synth.variants import build_variant_files

build_variant_files(
    task=snakemake.wildcards.task,  # noqa: F821 - injected by Snakemake
    variant=snakemake.wildcards.synthetic,  # noqa: F821
    # no pool input for a task that writes none (Task.writes_pool)
    pool_path=snakemake.input.pool if snakemake.input.get("pool") else None,  # noqa: F821
    model_dir=str(Path(snakemake.input.model).parent),  # noqa: F821
    examples_path=snakemake.output.examples,  # noqa: F821
    stats_path=snakemake.output.stats,  # noqa: F821
    model=snakemake.wildcards.model,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    examples=snakemake.params.examples,  # noqa: F821
    context_tokens=snakemake.params.context_tokens,  # noqa: F821
    task_data=snakemake.params.task_data,  # noqa: F821
    log_path=snakemake.log[0],  # noqa: F821
)
