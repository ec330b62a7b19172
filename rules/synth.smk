# Synth stage (STUDY.md section 3): one LLM-written document pool per task (generated once,
# shared by the variants and by every target model), then the five synthetic variants per
# model x task, fitted to that model's context budget.


include: "functions/synth.smk"


GENERATOR = config["generation"]["generator_model"]
# The pool job runs with the interpreter of the generation backend's environment. It is a
# global referenced as {SYNTH_POOL_PYTHON} in the command, so the rule's code (the raw shell
# text) and its params stay the same wherever that environment lives: no spurious reruns.
# The job's stdout/stderr (vLLM's engine log, our log lines, tqdm) all go to the rule's log.
SYNTH_POOL_PYTHON = job_python(config["generation"]["backend"])
SYNTH_ON_VLLM = use_vllm(config["generation"]["backend"])


rule synth_pool:
    input:
        model=ancient(f"{model_dir(GENERATOR)}/config.json"),
    output:
        pool=study_path("synth/{task}/pool.parquet"),
    log:
        study_path("logs/synth_pool/{task}.log"),
    benchmark:
        study_path("logs/synth_pool/{task}.benchmark.tsv")
    conda:
        ("../envs/vllm.yaml" if on_gpu() else "../envs/vllm-cpu.yaml") if SYNTH_ON_VLLM else "../envs/torch.yaml"
    # vLLM's CPU engine serves with one torch thread; HF generate would use more, but one
    # thread per pool lets two pools share a 2-core machine.
    threads: 1
    resources:
        mem_mb=8000,
        runtime="60m",
        gpu=gpu_resources(),
    params:
        settings=synth_pool_params,
        generator=GENERATOR,
        python=SYNTH_POOL_PYTHON,
        script=f"{SCRIPTS_DIR}/synth_pool.py",
    shell:
        "{params.python} {params.script:q} --task {wildcards.task}"
        ' --output {output.pool:q} --model-dir "$(dirname {input.model:q})" --generator-model {params.generator}'
        " --backend {params.settings[backend]} --seed {params.settings[seed]}"
        " --pool-size {params.settings[pool_size]} --temperature {params.settings[temperature]}"
        " --top-p {params.settings[top_p]} --max-new-tokens {params.settings[max_new_tokens]}"
        " --dtype {params.settings[dtype]} --vllm-settings {params.settings[vllm]:q}"
        " --request-batch {params.settings[request_batch]}"
        " --haystack-documents {params.settings[haystack_documents]}"
        " --max-template-overlap {params.settings[max_template_overlap]}"
        " > {log:q} 2>&1"


rule synth_variant:
    input:
        unpack(variant_pool),
        model=ancient("resources/models/{model}/config.json"),
    output:
        examples=study_path("data/{model}/{task}/train/{synthetic}.parquet"),
        stats=study_path("data/{model}/{task}/stats/{synthetic}.parquet"),
    log:
        study_path("logs/synth_variant/{model}/{task}/{synthetic}.log"),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        seed=config["study"]["seed"],
        examples=config["generation"]["examples_per_variant"],
        context_tokens=lambda wc: model_spec(wc.model)["context_tokens"],
        task_data=lambda wc: synth_task_data(wc.task),
    script:
        "../workflow/scripts/synth_variant.py"
