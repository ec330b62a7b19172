# Functions of train.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of train.smk.


def train_settings_params(wildcards):
    """The config slice a training run depends on (and nothing else)."""
    return {
        "train": dict(config["train"]),
        "seed": config["study"]["seed"],
        # The load_model settings of the model (RoPE theta, context budget, dtype, attention).
        "model_spec": load_settings(wildcards.model),
    }
