# Functions of claims.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of claims.smk.


def claims_paths(model):
    """Every input of one model's claims page (standard artifact paths, docs/DESIGN.md)."""
    return study_paths(STUDY_DIR, model, TASKS, SYNTHETIC, KNOCKOUT_CONDITIONS, PATCH_CONDITIONS, task_trained)


def claims_targets(model):
    return [study_path(f"reports/{model}/claims.md"), study_path(f"reports/{model}/claims.parquet")]
