# synthctx: when does fine-tuning on synthetic long-context data work, and why?
# A reproduction of Zhao, Yin & Durrett, "Understanding Synthetic Context Extension via
# Retrieval Heads" (ICML 2025). See README.md for the DAG and the figure/table targets.

from snakemake.utils import min_version, validate

# 9.20: runtime values from profiles are read as minutes again (snakemake#4039).
min_version("9.20")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/synth.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/heads.smk"
include: "rules/analysis.smk"
include: "rules/causal.smk"
include: "rules/claims.smk"
include: "rules/scorecard.smk"


rule all:
    default_target: True
    input:
        all_targets(),
