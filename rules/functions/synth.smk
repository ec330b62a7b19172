# Functions of synth.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of synth.smk.


def synth_pool_params(wildcards):
    """The config slice a pool depends on: sampling, size, seed, validation, generator and its engine."""
    gen = config["generation"]
    return {
        "backend": "vllm" if SYNTH_ON_VLLM else "hf",
        "seed": config["study"]["seed"],
        "pool_size": gen["pool_size"],
        "temperature": gen["temperature"],
        "top_p": gen["top_p"],
        "max_new_tokens": gen["max_new_tokens"],
        "request_batch": gen["request_batch"],
        # haystack_documents, max_template_overlap: only the tasks whose pools use them depend on
        # them (SummHay sizes its topics for one haystack; only it has insight paraphrases)
        **get_task(wildcards.task).pool_settings(config),
        "dtype": model_spec(GENERATOR)["dtype"],
        "vllm": json.dumps(gen.get("vllm", {}), sort_keys=True) if SYNTH_ON_VLLM else "{}",
    }


def variant_pool(wildcards):
    """The variant's pool input: the task's pool, or none for a task that writes none (Task.writes_pool)."""
    if get_task(wildcards.task).writes_pool:
        return {"pool": study_path(f"synth/{wildcards.task}/pool.parquet")}
    return {}


def synth_task_data(task):
    """Keys of config `data.<task>` the synthetic examples follow (document counts only)."""
    return {k: config["data"][task][k] for k in get_task(task).synth_data_keys}


def synth_targets(model):
    """Every synthetic training set (and its stats) of ``model``."""
    return [
        path
        for task in TASKS
        for synthetic in SYNTHETIC
        for path in (train_data(model, task, synthetic), study_path(f"data/{model}/{task}/stats/{synthetic}.parquet"))
    ]
