# Functions of analysis.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of analysis.smk.


def task_head_files(model, task):
    return [study_path(f"heads/{model}/{task}/{condition}.parquet") for condition in task_conditions(task)]


def figure3_targets(model):
    return [study_path(f"figures/{model}/figure3.png"), study_path(f"analysis/{model}/correlations.parquet")]


def table2_targets(model):
    return [study_path(f"tables/{model}/table2.parquet"), study_path(f"tables/{model}/table2.md")]


def heatmap_targets(model):
    return [study_path(f"figures/{model}/heatmap_{task}.png") for task in TASKS]


def niah_targets(model):
    return [study_path(f"tables/{model}/niah_heads.md")]


def analysis_targets(model):
    return (
        [study_path(f"analysis/{model}/similarity.parquet")]
        + figure3_targets(model)
        + table2_targets(model)
        + niah_targets(model)
        + heatmap_targets(model)
    )
