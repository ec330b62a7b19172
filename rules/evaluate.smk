# Evaluate stage: greedy decoding of the base model and every adapter on each task's real
# eval split (one job per model x task, one vLLM engine serving all LoRA adapters), then
# Table 1 per model.

# Evaluation-only conditions decoded with the base model in each evaluate job (study.evaluation_conditions):
# nonft and, when listed, closed_book (the question without the documents). Never trained, never
# head-scored, knocked out or patched (CONDITIONS, which heads and causal expand, holds nonft only).
EVALUATION_ONLY = study_vocabulary.evaluation_conditions(config)


def eval_settings(wildcards):
    """The config slice an evaluation depends on (and nothing else)."""
    return {
        "model": wildcards.model,
        "model_spec": load_settings(wildcards.model),
        "max_new_tokens": config["evaluate"]["max_new_tokens"][wildcards.task],
        "batch_size": config["evaluate"]["batch_size"],
        "vllm": {k: config["generation"]["vllm"][k] for k in ("gpu_memory_utilization", "enforce_eager")},
        "seed": config["study"]["seed"],
        "evaluation_conditions": list(EVALUATION_ONLY),
    }


def adapter_args(wildcards):
    return " ".join(f"--adapter {c}={adapter_dir(wildcards.model, wildcards.task, c)}"
                    for c in task_trained(wildcards.task))


# The interpreter is part of the command (code), not of params: the backend key below
# decides which environment runs the job.
EVAL_BACKEND = "vllm" if use_vllm(config["evaluate"]["backend"]) else "hf"
EVAL_PYTHON = job_python(config["evaluate"]["backend"])


rule evaluate_task:
    input:
        eval="results/data/{model}/{task}/eval.parquet",
        model=ancient("resources/models/{model}/config.json"),
        adapters=lambda wc: [f"{adapter_dir(wc.model, wc.task, c)}/adapter_model.safetensors"
                             for c in task_trained(wc.task)],
        adapter_configs=lambda wc: [f"{adapter_dir(wc.model, wc.task, c)}/adapter_config.json"
                                    for c in task_trained(wc.task)],
    output:
        predictions="results/eval/{model}/{task}/predictions.parquet",
    log:
        "logs/evaluate_task/{model}/{task}.log",
    benchmark:
        "logs/evaluate_task/{model}/{task}.benchmark.tsv"
    conda:
        "../envs/vllm.yaml" if EVAL_BACKEND == "vllm" else "../envs/torch.yaml"
    # On the critical path to Table 1 and the analyses (see train_adapter).
    priority: 10
    threads: 2
    resources:
        mem_mb=16000,
        runtime="2h",
        gpu=gpu_resources(),
    params:
        settings=lambda wc: json.dumps(eval_settings(wc), sort_keys=True),
        adapters=adapter_args,
        backend=EVAL_BACKEND,
    shell:
        EVAL_PYTHON + " " + SCRIPTS_DIR + "/evaluate_task.py --eval {input.eval:q}"
        " --model-dir resources/models/{wildcards.model} {params.adapters}"
        " --settings {params.settings:q} --backend {params.backend} --out {output.predictions:q}"
        " > {log:q} 2>&1"


def training_curve_paths(model):
    """Every trained condition's training curve, task by task in task_trained order."""
    return [f"{adapter_dir(model, t, c)}/train_curve.parquet" for t in TASKS for c in task_trained(t)]


rule table1:
    input:
        predictions=expand("results/eval/{{model}}/{task}/predictions.parquet", task=TASKS),
        # The trivial baseline is scored on the eval split, from the Real (Full) answers.
        eval=expand("results/data/{{model}}/{task}/eval.parquet", task=TASKS),
        real_full=expand("results/data/{{model}}/{task}/train/real_full.parquet", task=TASKS),
        curves=lambda wc: training_curve_paths(wc.model),
    output:
        table="results/tables/{model}/table1.parquet",
        markdown="results/tables/{model}/table1.md",
        figure=report(
            "results/figures/{model}/table1.png",
            caption="../report/table1.rst",
            category="Table 1",
            labels={"model": "{model}", "figure": "Table 1"},
        ),
    log:
        "logs/table1/{model}.log",
    conda:
        "../envs/torch.yaml"
    localrule: True
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


rule training_curves:
    input:
        curves=lambda wc: training_curve_paths(wc.model),
    output:
        figure=report(
            "results/figures/{model}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"model": "{model}", "figure": "Training curves"},
        ),
    log:
        "logs/training_curves/{model}.log",
    conda:
        "../envs/torch.yaml"
    localrule: True
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


def evaluate_targets(model):
    return [
        f"results/tables/{model}/table1.parquet",
        f"results/tables/{model}/table1.md",
        f"results/figures/{model}/table1.png",
        f"results/figures/{model}/training_curves.png",
    ]
