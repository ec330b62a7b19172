# Functions of heads.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of heads.smk.


def heads_settings():
    """The heads: config slice a detection job depends on (token_match: normalized | exact, see
    synthctx.heads.retrieval; success_metric: score = the Table 1 metric, or a metric name of the
    task's score, per task). token_match and success_metric come first: the key order of the
    params that studies already ran with, so they do not re-run."""
    heads = config["heads"]
    return {"token_match": heads["token_match"], "success_metric": heads["success_metric"], **heads}


def heads_targets(model):
    targets = [
        study_path(f"heads/{model}/{task}/{condition}.parquet") for task in TASKS for condition in task_conditions(task)
    ]
    targets += [study_path(f"heads/{model}/niah/set1.parquet"), study_path(f"heads/{model}/niah/set2.parquet")]
    return targets
