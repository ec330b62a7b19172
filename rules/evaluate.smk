# Evaluate stage: greedy decoding of the base model and every adapter on each task's real
# eval split (one job per model x task, one vLLM engine serving all LoRA adapters), then
# Table 1 per model.


include: "functions/evaluate.smk"


# Evaluation-only conditions decoded with the base model in each evaluate job (study.evaluation_conditions):
# nonft and, when listed, closed_book (the question without the documents). Never trained, never
# head-scored, knocked out or patched (task_conditions, which heads and causal expand, holds nonft only).
EVALUATION_ONLY = study_vocabulary.evaluation_conditions(config)


# The backend key decides which environment's interpreter runs the job (params.python).
EVAL_BACKEND = "vllm" if use_vllm(config["evaluate"]["backend"]) else "hf"
EVAL_PYTHON = job_python(config["evaluate"]["backend"])


rule evaluate_task:
    input:
        eval=study_path("data/{model}/{task}/eval.parquet"),
        model=ancient("resources/models/{model}/config.json"),
        adapters=lambda wc: [
            f"{adapter_dir(wc.model, wc.task, c)}/adapter_model.safetensors" for c in task_trained(wc.task)
        ],
        adapter_configs=lambda wc: [
            f"{adapter_dir(wc.model, wc.task, c)}/adapter_config.json" for c in task_trained(wc.task)
        ],
    output:
        predictions=study_path("eval/{model}/{task}/predictions.parquet"),
    log:
        study_path("logs/evaluate_task/{model}/{task}.log"),
    benchmark:
        study_path("logs/evaluate_task/{model}/{task}.benchmark.tsv")
    # On the critical path to Table 1 and the analyses (see train_adapter).
    priority: 10
    conda:
        "../envs/vllm.yaml" if EVAL_BACKEND == "vllm" else "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime="2h",
        gpu=gpu_resources(),
    params:
        settings=lambda wc: json.dumps(eval_settings(wc), sort_keys=True),
        adapters=adapter_args,
        backend=EVAL_BACKEND,
        python=EVAL_PYTHON,
        script=f"{SCRIPTS_DIR}/evaluate_task.py",
    shell:
        "{params.python} {params.script:q} --eval {input.eval:q}"
        ' --model-dir "$(dirname {input.model:q})" {params.adapters}'
        " --settings {params.settings:q} --backend {params.backend} --out {output.predictions:q}"
        " > {log:q} 2>&1"


rule score_table:
    input:
        predictions=expand(study_path("eval/{{model}}/{task}/predictions.parquet"), task=TASKS),
        # The trivial baseline is scored on the eval split, from the Real (Full) answers.
        eval=expand(study_path("data/{{model}}/{task}/eval.parquet"), task=TASKS),
        real_full=expand(study_path("data/{{model}}/{task}/train/real_full.parquet"), task=TASKS),
        curves=lambda wc: training_curve_paths(wc.model),
    output:
        table=study_path("tables/{model}/table1.parquet"),
        markdown=study_path("tables/{model}/table1.md"),
        figure=report(
            study_path("figures/{model}/table1.png"),
            caption="../report/table1.rst",
            category="Table 1",
            labels={"model": "{model}", "figure": "Table 1"},
        ),
    log:
        study_path("logs/table1/{model}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="20m",
    params:
        settings=lambda wc: {
            "model": wc.model,
            "tasks": list(TASKS),
            "synthetic": list(SYNTHETIC),
            "real": list(REAL),
            "evaluation": list(EVALUATION_ONLY),
            # the user datasets of each task (trained after the built-in conditions: task_trained)
            "user": {t: study_vocabulary.user_condition_names(config, t) for t in TASKS},
            # the recipe conditions of each task (training_recipes; trained last: task_trained)
            "recipes": {t: study_vocabulary.recipe_condition_names(config, t) for t in TASKS},
            "user_labels": USER_LABELS,
            "resamples": config["evaluate"]["bootstrap_resamples"],
            "alpha": config["evaluate"]["alpha"],
            "seed": config["study"]["seed"],
            "min_loss_drop": config["evaluate"]["min_loss_drop"],
            # the degenerate-output flags: the claims page's rule and keys
            "degenerate": {k: config["claims"][k] for k in ("alpha", "min_distinct_fraction")},
        },
    script:
        "../workflow/scripts/table1.py"


rule training_curves_figure:
    input:
        curves=lambda wc: training_curve_paths(wc.model),
    output:
        figure=report(
            study_path("figures/{model}/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
            labels={"model": "{model}", "figure": "Training curves"},
        ),
    log:
        study_path("logs/training_curves/{model}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        settings=lambda wc: {
            "model": wc.model,
            "runs": [[t, c] for t in TASKS for c in task_trained(t)],
            "user_labels": USER_LABELS,
            "min_loss_drop": config["evaluate"]["min_loss_drop"],
        },
    script:
        "../workflow/scripts/training_curves.py"


# Named targets (no wildcards): `snakemake table1`, `training_curves`, for every study model.
rule table1:
    input:
        [f for m in MODELS for f in table1_targets(m)],


rule training_curves:
    input:
        [f for m in MODELS for f in training_curves_targets(m)],
