# Models: turn each config model source into a plain safetensors directory, once.


rule prepare_model:
    output:
        config="resources/models/{model}/config.json",
    log:
        "logs/prepare_model/{model}.log",
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=8000,
        runtime="30m",
    params:
        source=lambda wc: config["models"][wc.model]["source"],
    script:
        "../workflow/scripts/prepare_model.py"
