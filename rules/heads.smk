# heads stage: retrieval-head detection (STUDY.md section 5) on the real eval split of every
# task, for every condition's model (trained adapters; the base model for "nonft"), and in
# Wu et al.'s needle-in-a-haystack setting.


include: "functions/heads.smk"


from synthctx.causal.eval_split import task_examples


rule heads:
    input:
        model=lambda wc: f"{model_dir(wc.model)}/config.json",
        eval=lambda wc: eval_data(wc.model, wc.task),
        adapter=lambda wc: (
            []
            if wc.condition == "nonft"
            else f"{adapter_dir(wc.model, wc.task, wc.condition)}/adapter_model.safetensors"
        ),
    output:
        scores=study_path("heads/{model}/{task}/{condition}.parquet"),
        # every decoded example's score of every head (bootstrap intervals, split halves: claims)
        examples=study_path("heads/{model}/{task}/per_example/{condition}.parquet"),
    log:
        study_path("logs/heads/{model}/{task}/{condition}.log"),
    benchmark:
        study_path("logs/heads/{model}/{task}/{condition}.benchmark.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime="2h",
        gpu=gpu_resources(),
    params:
        model_dir=lambda wc: model_dir(wc.model),
        adapter_dir=lambda wc: "" if wc.condition == "nonft" else adapter_dir(wc.model, wc.task, wc.condition),
        settings=lambda wc: load_settings(wc.model),
        heads=lambda wc: {
            k: v
            # examples: this task's ranking part of the eval split (heads.task_examples), the
            # causal tests take the examples after it (synthctx.causal.eval_split)
            for k, v in {**heads_settings(), "examples": task_examples(config["heads"], wc.task)}.items()
            if k
            in (
                "examples",
                "max_new_tokens",
                "success_only",
                "success_threshold",
                "token_match",
                "success_metric",
                "batch_size",
            )
        },
        seed=STUDY["seed"],
    script:
        "../workflow/scripts/heads.py"


rule niah_heads:
    input:
        model=lambda wc: f"{model_dir(wc.model)}/config.json",
    output:
        set1=study_path("heads/{model}/niah/set1.parquet"),
        set2=study_path("heads/{model}/niah/set2.parquet"),
    log:
        study_path("logs/heads/{model}/niah.log"),
    benchmark:
        study_path("logs/heads/{model}/niah.benchmark.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime="2h",
        gpu=gpu_resources(),
    params:
        model_dir=lambda wc: model_dir(wc.model),
        settings=lambda wc: load_settings(wc.model),
        heads=lambda wc: {
            k: v
            for k, v in heads_settings().items()
            if k in ("max_new_tokens", "success_only", "success_threshold", "token_match", "niah", "batch_size")
        },
        seed=STUDY["seed"],
    script:
        "../workflow/scripts/niah_heads.py"


# Named target: `snakemake retrieval_heads` detects the heads of every model, task and condition.
rule retrieval_heads:
    input:
        [f for m in MODELS for f in heads_targets(m)],
