# Functions of evaluate.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of evaluate.smk.


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
    return " ".join(
        f"--adapter {c}={adapter_dir(wildcards.model, wildcards.task, c)}" for c in task_trained(wildcards.task)
    )


def training_curve_paths(model):
    """Every trained condition's training curve, task by task in task_trained order."""
    return [f"{adapter_dir(model, t, c)}/train_curve.parquet" for t in TASKS for c in task_trained(t)]


def table1_targets(model):
    return [
        study_path(f"tables/{model}/table1.parquet"),
        study_path(f"tables/{model}/table1.md"),
        study_path(f"figures/{model}/table1.png"),
    ]


def training_curves_targets(model):
    return [study_path(f"figures/{model}/training_curves.png")]


def evaluate_targets(model):
    return table1_targets(model) + training_curves_targets(model)
