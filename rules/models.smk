# Models: turn each config model source into a plain safetensors directory, once.


include: "functions/models.smk"


# An earlier version linked resources/models/<m> to a local source's directory; Snakemake would
# delete that directory's config.json through the link before re-running prepare_model.
for _name, _spec in config["models"].items():
    if _spec["source"]["kind"] == "local" and Path(model_dir(_name)).is_symlink():
        _config_error(
            f"models.{_name}.source.path",
            f"{model_dir(_name)} is a symlink into "
            f"{os.readlink(model_dir(_name))}; remove the link itself (rm {model_dir(_name)}, "
            "no trailing slash), the workflow now copies or hard-links the files",
        )


rule prepare_model:
    input:
        tokenizer=tokenizer_input,
    output:
        config="resources/models/{model}/config.json",
    log:
        "logs/prepare_model/{model}.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        # random_init holds one 4 GiB shard of bf16 weights at a time.
        mem_mb=8000,
        runtime="30m",
    params:
        source=lambda wc: config["models"][wc.model]["source"],
        tokenizer_dir=tokenizer_dir_param,
    script:
        "../workflow/scripts/prepare_model.py"
