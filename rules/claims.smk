# claims stage: the reproduction report. Every claim of the paper (C1-C8, and the closed-book
# baseline) checked against this run's tables, head scores and causal tests, with a verdict
# (synthctx.analysis.claims holds the verdict rules).


include: "functions/claims.smk"


from synthctx.analysis.claims import study_paths


rule claims_report:
    input:
        lambda wc: claims_paths(wc.model).all(),
    output:
        markdown=report(
            study_path("reports/{model}/claims.md"),
            caption="../report/claims.rst",
            category="Claims",
            labels={"model": "{model}", "page": "Claims of the paper: verdicts"},
        ),
        table=study_path("reports/{model}/claims.parquet"),
    log:
        study_path("logs/claims/{model}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="15m",
    params:
        settings=lambda wc: {
            "model": wc.model,
            "tasks": list(TASKS),
            "synthetic": list(SYNTHETIC),
            "knockout_conditions": list(KNOCKOUT_CONDITIONS),
            "patch_conditions": list(PATCH_CONDITIONS),
            # per task, the conditions trained for it (a user dataset covers only its own tasks)
            "trained": {t: task_trained(t) for t in TASKS},
            # labels of the user datasets and the recipe conditions ("C1 [all modules]" rows)
            "user_labels": USER_LABELS,
            "alpha": config["claims"]["alpha"],
            "min_distinct_fraction": config["claims"]["min_distinct_fraction"],
            "resamples": config["evaluate"]["bootstrap_resamples"],
            "top_k": config["heads"]["top_k"],
            "seed": STUDY["seed"],
        },
    script:
        "../workflow/scripts/claims.py"


# Named target: `snakemake claims` writes every study model's claims page.
rule claims:
    input:
        [f for m in MODELS for f in claims_targets(m)],
