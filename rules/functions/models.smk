# Functions of models.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of models.smk.


def tokenizer_source(model):
    """random_init models: the models: entry (prepared first) or directory whose tokenizer they
    borrow; None for the other source kinds."""
    source = config["models"][model]["source"]
    if source["kind"] != "random_init":
        return None
    borrowed = source["tokenizer_from"]
    return ("entry", borrowed) if borrowed in config["models"] else ("dir", borrowed)


def tokenizer_input(wildcards):
    """The borrowed tokenizer's model as an input, so that it is prepared before (and a
    re-prepared tokenizer model re-builds this one)."""
    borrowed = tokenizer_source(wildcards.model)
    return [f"{model_dir(borrowed[1])}/config.json"] if borrowed and borrowed[0] == "entry" else []


def tokenizer_dir_param(wildcards):
    borrowed = tokenizer_source(wildcards.model)
    if borrowed is None:
        return ""
    return model_dir(borrowed[1]) if borrowed[0] == "entry" else borrowed[1]
