# Functions of causal.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of causal.smk.


def ranking_examples(task):
    """Eval examples that rank the heads: the first N of the split (heads.examples)."""
    return task_examples(config["heads"], task)


def causal_examples(task):
    """Eval examples the causal tests run on: the N after the ranking part (causal.examples)."""
    return task_examples(CAUSAL, task)


def head_scores(model, task, condition):
    return study_path(f"heads/{model}/{task}/{condition}.parquet")


def causal_adapter(model, task, condition):
    """Adapter weights of a condition (none for the base model, nonft)."""
    if condition == "nonft":
        return []
    return f"{adapter_dir(model, task, condition)}/adapter_model.safetensors"


def patch_donor(recipient):
    """The model whose heads are patched into ``recipient``: the Real (Full) model trained under
    the same recipe (study.recipe_reference: real_full for a main-recipe condition)."""
    return study_vocabulary.recipe_reference(recipient)


def figure4_targets(model):
    return [study_path(f"figures/{model}/figure4.png"), study_path(f"causal/{model}/knockout_summary.parquet")]


def table3_targets(model):
    return [study_path(f"tables/{model}/table3.md"), study_path(f"tables/{model}/table3.parquet")]


def causal_targets(model):
    return figure4_targets(model) + table3_targets(model)
