# Functions of analysis.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of analysis.smk.


def task_head_files(model, task):
    return [f"results/heads/{model}/{task}/{condition}.parquet" for condition in task_conditions(task)]


def analysis_targets(model):
    return [
        f"results/analysis/{model}/similarity.parquet",
        f"results/analysis/{model}/correlations.parquet",
        f"results/figures/{model}/figure3.png",
        f"results/tables/{model}/table2.parquet",
        f"results/tables/{model}/table2.md",
        f"results/tables/{model}/niah_heads.md",
    ] + [f"results/figures/{model}/heatmap_{task}.png" for task in TASKS]
