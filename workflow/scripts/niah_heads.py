"""Needle-in-a-haystack retrieval heads of the base model, on two disjoint needle sets.

Inputs:  resources/models/{model}/ (prepared model); haystacks are generated procedurally.
Outputs: results/{study}/heads/{model}/niah/set1.parquet, set2.parquet (kind head_scores).
Feeds:   results/{study}/tables/{model}/niah_heads.md (rule niah).
"""

from synthctx.heads.niah import run_niah_heads

sm = snakemake  # noqa: F821 - injected by Snakemake
run_niah_heads(
    model_dir=sm.params.model_dir,
    outputs=[sm.output.set1, sm.output.set2],
    model_name=sm.wildcards.model,
    model_settings=sm.params.settings,
    heads=sm.params.heads,
    seed=sm.params.seed,
    log_path=sm.log[0],
)
