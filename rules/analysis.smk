# analysis stage: head similarity and its correlation with downstream scores (Figure 3),
# cross-task similarity (Table 2), heatmaps and the NIAH report (STUDY.md section 6).


include: "functions/analysis.smk"


rule similarity:
    input:
        heads=lambda wc: [f for task in TASKS for f in task_head_files(wc.model, task)],
        predictions=lambda wc: [f"results/eval/{wc.model}/{task}/predictions.parquet" for task in TASKS],
    output:
        "results/analysis/{model}/similarity.parquet",
    log:
        "logs/analysis/{model}/similarity.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        top_k=config["heads"]["top_k"],
        threshold=config["heads"]["threshold"],
    script:
        "../workflow/scripts/analysis_similarity.py"


rule correlations:
    input:
        "results/analysis/{model}/similarity.parquet",
    output:
        table="results/analysis/{model}/correlations.parquet",
        figure=report(
            "results/figures/{model}/figure3.png",
            caption="../report/figure3.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        "logs/analysis/{model}/figure3.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        # user datasets are synthetic-like points of the Spearman (docs/user-datasets.md); so are
        # their and the synthetic conditions' recipe variants, in their recipe's own Spearman
        synthetic=SYNTHETIC + USER + RECIPE_POINTS,
        user_labels=USER_LABELS,
        # seeds the Spearman permutation test (used only above EXACT_MAX_N conditions)
        seed=STUDY["seed"],
    script:
        "../workflow/scripts/figure3.py"


rule cross_task_table:
    input:
        lambda wc: [f"results/heads/{wc.model}/{task}/real_full.parquet" for task in TASKS],
    output:
        table="results/tables/{model}/table2.parquet",
        markdown=report(
            "results/tables/{model}/table2.md",
            caption="../report/table2.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        "logs/analysis/{model}/table2.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    script:
        "../workflow/scripts/table2.py"


rule heatmap:
    input:
        lambda wc: task_head_files(wc.model, wc.task),
    output:
        report(
            "results/figures/{model}/heatmap_{task}.png",
            caption="../report/heatmap.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        "logs/analysis/{model}/heatmap_{task}.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        user_labels=USER_LABELS,
    script:
        "../workflow/scripts/heatmap.py"


rule niah_report:
    input:
        set1="results/heads/{model}/niah/set1.parquet",
        set2="results/heads/{model}/niah/set2.parquet",
    output:
        report(
            "results/tables/{model}/niah_heads.md",
            caption="../report/niah.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        "logs/analysis/{model}/niah.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        top_k=config["heads"]["top_k"],
    script:
        "../workflow/scripts/niah_report.py"


# Named targets (no wildcards): `snakemake figure3`, `table2`, `heatmaps`, `niah`, for every study model.
rule figure3:
    input:
        [f"results/figures/{m}/figure3.png" for m in MODELS],
        [f"results/analysis/{m}/correlations.parquet" for m in MODELS],


rule table2:
    input:
        [f"results/tables/{m}/table2.{ext}" for m in MODELS for ext in ("parquet", "md")],


rule heatmaps:
    input:
        [f"results/figures/{m}/heatmap_{task}.png" for m in MODELS for task in TASKS],


rule niah:
    input:
        [f"results/tables/{m}/niah_heads.md" for m in MODELS],
