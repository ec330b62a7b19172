# Data stage: the three real tasks in their original formats -> normalized examples fitted
# to each model's context budget (eval split, Real (Full), Real (Limited), stats).
# Raw files come from raw_data.local_dir, or from the download rules below when it is null.

# Where each dataset's original files are published (used only when raw_data.local_dir is null).
LITM_RAW = "https://github.com/nelson-liu/lost-in-the-middle/raw/HEAD/qa_data"
SUMMHAY_RAW = "https://github.com/salesforce/summary-of-a-haystack/raw/HEAD/data"
MUSIQUE_DRIVE_ID = "1tGdADlNjWFaHLeZZGShh2IRcpO6Lv24h"


def raw_files(task):
    """The raw files of a task, relative to the raw data folder (config raw_data)."""
    return get_task(task).raw_files(config["raw_data"][task])


def real_data_params(wildcards):
    """The config slice build_real_data depends on (and nothing else)."""
    return {
        "task_config": {k: v for k, v in config["data"][wildcards.task].items() if k != "eval_examples"},
        # a task may override the study-wide count (MuSiQue's local sample has 59 three-hop questions)
        "eval_examples": config["data"][wildcards.task].get("eval_examples", config["data"]["eval_examples"]),
        "max_train_examples": config["data"].get("max_train_examples"),
        "limited_fraction": config["data"]["limited_fraction"],
        "seed": config["study"]["seed"],
        "context_tokens": config["models"][wildcards.model]["context_tokens"],
    }


rule build_real_data:
    input:
        raw=lambda wc: [raw_path(f) for f in raw_files(wc.task)],
        model="resources/models/{model}/config.json",
    output:
        eval="results/data/{model}/{task}/eval.parquet",
        real_full="results/data/{model}/{task}/train/real_full.parquet",
        real_limited="results/data/{model}/{task}/train/real_limited.parquet",
        stats="results/data/{model}/{task}/stats/real.parquet",
    log:
        "logs/build_real_data/{model}/{task}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
    params:
        settings=real_data_params,
        raw_files=lambda wc: raw_files(wc.task),
    script:
        "../workflow/scripts/build_real_data.py"


# ---- downloads (only requested when raw_data.local_dir is null) --------------------------


rule download_raw_mdqa:
    # e.g. mdqa/nq-open-20_total_documents_gold_at_0.jsonl.gz from qa_data/20_total_documents/
    output:
        "resources/raw/mdqa/nq-open-{n}_total_documents_{setting}.jsonl.gz",
    log:
        "logs/download_raw/mdqa/nq-open-{n}_total_documents_{setting}.log",
    wildcard_constraints:
        n="[0-9]+",
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="20m",
    params:
        url=lambda wc: f"{LITM_RAW}/{wc.n}_total_documents/nq-open-{wc.n}_total_documents_{wc.setting}.jsonl.gz",
    shell:
        "curl -fsSL --retry 3 -o {output}.part {params.url:q} 2> {log} && gzip -t {output}.part && mv {output}.part {output}"


rule download_raw_summhay:
    output:
        "resources/raw/summhay/{haystack}.json",
    log:
        "logs/download_raw/summhay/{haystack}.log",
    wildcard_constraints:
        haystack="topic_(news|conv)[0-9]+",
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="20m",
    params:
        url=lambda wc: f"{SUMMHAY_RAW}/{wc.haystack}.json",
    shell:
        "curl -fsSL --retry 3 -o {output}.part {params.url:q} 2> {log} && mv {output}.part {output}"


rule download_raw_musique_archive:
    # The official release is a Google Drive zip (StonyBrookNLP/musique download_data.sh).
    output:
        temp("resources/raw/musique/musique_v1.0.zip"),
    log:
        "logs/download_raw/musique/archive.log",
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="30m",
    params:
        url=f"https://drive.usercontent.google.com/download?id={MUSIQUE_DRIVE_ID}&export=download&confirm=t",
    shell:
        "curl -fsSL --retry 3 -o {output}.part {params.url:q} 2> {log} && unzip -tq {output}.part >> {log} "
        "&& mv {output}.part {output}"


rule download_raw_musique:
    input:
        "resources/raw/musique/musique_v1.0.zip",
    output:
        "resources/raw/musique/musique_ans_v1.0_{split}.jsonl",
    log:
        "logs/download_raw/musique/{split}.log",
    wildcard_constraints:
        split="train|dev|test",
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="10m",
    shell:
        # The archive keeps its files under data/; match on the name to be layout-agnostic.
        "unzip -p {input} '*musique_ans_v1.0_{wildcards.split}.jsonl' > {output}.part 2> {log} "
        "&& test -s {output}.part && mv {output}.part {output}"


# ---- the user's own training sets (config datasets:, docs/user-datasets.md) ---------------


def user_dataset_file(wildcards):
    """The user's file of one (condition, task), read in place."""
    files = config["datasets"][wildcards.condition]["files"]
    if wildcards.task not in files:
        _config_error(f"datasets.{wildcards.condition}.files", f"no file for task {wildcards.task!r} (it has "
                      f"{sorted(files)}): nothing may request this condition for that task")
    return files[wildcards.task]


def user_dataset_params(wildcards):
    """What the import depends on: the file's content (sha256, so a changed file re-runs the import
    and everything after it, even with an old mtime), the budget and the task's needle keys. Not
    the label: it is display only (USER_LABELS reaches the rules that draw it)."""
    from synthctx.data.user import file_sha256

    source = user_dataset_file(wildcards)
    return {
        "task": wildcards.task,
        "condition": wildcards.condition,
        # a missing file: Snakemake's missing-input error names it
        "sha256": file_sha256(source) if Path(source).is_file() else "",
        "context_tokens": config["models"][wildcards.model]["context_tokens"],
        "task_config": {k: config["data"][wildcards.task][k] for k in get_task(wildcards.task).needle_data_keys},
    }


rule import_user_dataset:
    input:
        source=user_dataset_file,
        model=ancient("resources/models/{model}/config.json"),
    output:
        examples="results/data/{model}/{task}/train/{condition}.parquet",
    log:
        "logs/import_user_dataset/{model}/{task}/{condition}.log",
    wildcard_constraints:
        condition=study_vocabulary.wildcard_pattern(USER),
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        settings=user_dataset_params,
    script:
        "../workflow/scripts/import_user_dataset.py"
