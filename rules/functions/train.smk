# Functions of train.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of train.smk.


def train_settings_params(wildcards):
    """The config slice a training run depends on (and nothing else): a recipe condition's
    differs from its base's in the LoRA target modules only (study.recipe_train_settings)."""
    return {
        "train": study_vocabulary.recipe_train_settings(config, wildcards.condition),
        "seed": config["study"]["seed"],
        # The load_model settings of the model (RoPE theta, context budget, dtype, attention).
        "model_spec": load_settings(wildcards.model),
    }
