# Train stage: one fine-tuning run per (model, task, condition); identical hyper-parameters
# for every condition of a model (config `train:`), only the training data differs.
# Resumable checkpoints live in results/{study}/checkpoints/ (never inside the declared outputs,
# which Snakemake removes when a job fails).


include: "functions/train.smk"


rule train_adapter:
    input:
        # a recipe condition trains on its base condition's file (study.base_condition)
        data=lambda wc: train_data(wc.model, wc.task, study_vocabulary.base_condition(wc.condition)),
        model=ancient("resources/models/{model}/config.json"),
    output:
        adapter=study_path("adapters/{model}/{task}/{condition}/adapter_model.safetensors"),
        adapter_config=study_path("adapters/{model}/{task}/{condition}/adapter_config.json"),
        curve=study_path("adapters/{model}/{task}/{condition}/train_curve.parquet"),
    log:
        study_path("logs/train_adapter/{model}/{task}/{condition}.log"),
    benchmark:
        study_path("logs/train_adapter/{model}/{task}/{condition}.benchmark.tsv")
    wildcard_constraints:
        condition=study_vocabulary.wildcard_pattern(TRAINED + USER + RECIPE),
    # Trainings and evaluations are the long chain to Table 1 and the analyses: scheduled before
    # the single-thread jobs (heads, causal) that can fill the other core later (the default
    # study once ended with one core idle while the last training and evaluation ran).
    priority: 10
    conda:
        "../envs/torch.yaml"
    # One thread: two single-thread trainings side by side finish in 90 s where one
    # two-thread training takes 60 s (2 cores, BENCHMARKS.md); on a GPU node threads barely matter.
    threads: 1
    resources:
        mem_mb=16000,
        runtime="4h",
        gpu=gpu_resources(),
    params:
        settings=train_settings_params,
        checkpoint_dir=study_path("checkpoints/{model}/{task}/{condition}"),
    script:
        "../workflow/scripts/train_adapter.py"
