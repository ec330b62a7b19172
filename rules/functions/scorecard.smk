# Functions of scorecard.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of scorecard.smk.


def scorecard_dir(model, task, condition):
    return study_path(f"scorecard/{model}/{task}/{condition}")


def _reuse(task, condition):
    return scorecard_lib.probe_reuse(config, task, condition)


def probe_train_set(model, task, condition):
    """The probe's training examples: the study's set itself when training is reused."""
    if _reuse(task, condition)[0]:
        return train_data(model, task, condition)
    return f"{scorecard_dir(model, task, condition)}/train.parquet"


def probe_adapter_dir(model, task, condition):
    if _reuse(task, condition)[0]:
        return adapter_dir(model, task, condition)
    return f"{scorecard_dir(model, task, condition)}/adapter"


def probe_head_examples(model, task, condition):
    """The probe's per-example head scores: the study's when its heads job is the probe's."""
    if _reuse(task, condition)[1]:
        return study_path(f"heads/{model}/{task}/per_example/{condition}.parquet")
    return f"{scorecard_dir(model, task, condition)}/per_example.parquet"


def probe_costs(model, task, condition):
    """Benchmark files of the jobs that made the probe (the study's where reused)."""
    train, heads = _reuse(task, condition)
    return {
        "train": (
            study_path(f"logs/train_adapter/{model}/{task}/{condition}.benchmark.tsv")
            if train
            else study_path(f"logs/scorecard/train/{model}/{task}/{condition}.benchmark.tsv")
        ),
        "heads": (
            study_path(f"logs/heads/{model}/{task}/{condition}.benchmark.tsv")
            if heads
            else study_path(f"logs/scorecard/heads/{model}/{task}/{condition}.benchmark.tsv")
        ),
    }


def study_trained(task):
    """The full study's trained conditions of a task: its real ones and the scorecard's candidates."""
    return list(REAL) + scorecard_lib.scorecard_candidates(config, task)


def scorecard_files(model, task):
    base = study_path(f"scorecard/{model}/{task}")
    return {
        "table": f"{base}/scorecard.parquet",
        "markdown": f"{base}/scorecard.md",
        "figure": study_path(f"figures/{model}/scorecard_{task}.png"),
        "stability": f"{base}/stability.parquet",
        "stability_figure": study_path(f"figures/{model}/scorecard_stability_{task}.png"),
    }


def scorecard_targets(model):
    return [f for task in TASKS for f in scorecard_files(model, task).values()]


def scorecard_vs_study_targets(model):
    return [study_path(f"scorecard/{model}/vs_study.parquet"), study_path(f"scorecard/{model}/vs_study.md")]
