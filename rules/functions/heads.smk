# Functions of heads.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of heads.smk.


def heads_settings():
    """The heads: config slice a detection job depends on.

    Defaults for keys config.yaml may lack: token_match (normalized | exact, see
    synthctx.heads.retrieval; stripped is normalized's earlier name) and success_metric (score = the Table 1 metric, or a metric name
    of synthctx.evaluate.metrics.score_prediction such as best_subspan_em).
    """
    return {"token_match": "normalized", "success_metric": "score", **config["heads"]}


def heads_targets(model):
    targets = [
        study_path(f"heads/{model}/{task}/{condition}.parquet") for task in TASKS for condition in task_conditions(task)
    ]
    targets += [study_path(f"heads/{model}/niah/set1.parquet"), study_path(f"heads/{model}/niah/set2.parquet")]
    return targets
