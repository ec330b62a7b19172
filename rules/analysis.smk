# analysis stage: head similarity and its correlation with downstream scores (Figure 3),
# cross-task similarity (Table 2), heatmaps and the NIAH report (STUDY.md section 6).


include: "functions/analysis.smk"


rule similarity:
    input:
        heads=lambda wc: [f for task in TASKS for f in task_head_files(wc.model, task)],
        predictions=lambda wc: [study_path(f"eval/{wc.model}/{task}/predictions.parquet") for task in TASKS],
    output:
        study_path("analysis/{model}/similarity.parquet"),
    log:
        study_path("logs/analysis/{model}/similarity.log"),
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
        study_path("analysis/{model}/similarity.parquet"),
    output:
        table=study_path("analysis/{model}/correlations.parquet"),
        figure=report(
            study_path("figures/{model}/figure3.png"),
            caption="../report/figure3.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        study_path("logs/analysis/{model}/figure3.log"),
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
        lambda wc: [study_path(f"heads/{wc.model}/{task}/real_full.parquet") for task in TASKS],
    output:
        table=study_path("tables/{model}/table2.parquet"),
        markdown=report(
            study_path("tables/{model}/table2.md"),
            caption="../report/table2.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        study_path("logs/analysis/{model}/table2.log"),
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
            study_path("figures/{model}/heatmap_{task}.png"),
            caption="../report/heatmap.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        study_path("logs/analysis/{model}/heatmap_{task}.log"),
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
        set1=study_path("heads/{model}/niah/set1.parquet"),
        set2=study_path("heads/{model}/niah/set2.parquet"),
    output:
        report(
            study_path("tables/{model}/niah_heads.md"),
            caption="../report/niah.rst",
            category="Retrieval heads",
            subcategory="{model}",
        ),
    log:
        study_path("logs/analysis/{model}/niah.log"),
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
        [f for m in MODELS for f in figure3_targets(m)],


rule table2:
    input:
        [f for m in MODELS for f in table2_targets(m)],


rule heatmaps:
    input:
        [f for m in MODELS for f in heatmap_targets(m)],


rule niah:
    input:
        [f for m in MODELS for f in niah_targets(m)],
