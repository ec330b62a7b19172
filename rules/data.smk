# Data stage: the three real tasks in their original formats -> normalized examples fitted
# to each model's context budget (eval split, Real (Full), Real (Limited), stats).
# Raw files come from raw_data.local_dir, or from the download rules below when it is null.

# With raw_data.local_dir null the study reads the files raw_data.downloads lists (each pinned to
# a commit or release and checked against its sha256), fetched by the download rules below.
# (A config that replaces raw_data whole and reads local files may leave downloads out.)
DOWNLOADS = config["raw_data"].get("downloads") or {"verify": True, "archives": {}}


def raw_files(task):
    """The raw files of a task, relative to the raw data folder: the task module's names under
    raw_data.<task> in raw_data.local_dir, or (local_dir null) the files raw_data.downloads.<task> fetches."""
    if not config["raw_data"]["local_dir"]:
        return [entry["file"] for entry in DOWNLOADS.get(task, [])]
    return get_task(task).raw_files(config["raw_data"][task])


def download_entry(task, file):
    """(index, entry) of raw_data.downloads.<task> that fetches ``file`` (a rule output name)."""
    for index, entry in enumerate(DOWNLOADS.get(task, [])):
        if entry["file"] == file:
            return index, entry
    raise ValueError(f"raw_data.downloads.{task}: no entry for {file}")


def download_params(task, kind="file"):
    """Params of a download job: the entry's URL, sha256 (and its config key) or archive member."""

    def params(wildcards):
        if kind == "archive":
            entry, key = DOWNLOADS["archives"][wildcards.archive], f"raw_data.downloads.archives.{wildcards.archive}"
            return {"url": entry["url"], "sha256": entry.get("sha256"), "key": f"{key}.sha256", "member": ""}
        index, entry = download_entry(task, f"{task}/{wildcards.name}")
        if entry.get("archive"):
            return {"url": "", "sha256": None, "key": "", "member": Path(entry["file"]).name}
        return {"url": entry["url"], "sha256": entry.get("sha256"), "member": "",
                "key": f"raw_data.downloads.{task}[{index}].sha256"}

    return params


def download_names(task):
    """Wildcard constraint: exactly the file names raw_data.downloads.<task> lists."""
    names = [re.escape(Path(e["file"]).name) for e in DOWNLOADS.get(task, [])]
    return "|".join(names) if names else "(?!)"


for _task in TASKS if DOWNLOADS else ():
    if not config["raw_data"]["local_dir"] and not DOWNLOADS.get(_task):
        _config_error(f"raw_data.downloads.{_task}", "raw_data.local_dir is null but no file to download is listed")
    for _index, _entry in enumerate(DOWNLOADS.get(_task) or []):
        _where = f"raw_data.downloads.{_task}[{_index}]"
        if not _entry["file"].startswith(f"{_task}/"):
            _config_error(f"{_where}.file", f"{_entry['file']!r} must lie under {_task}/")
        if bool(_entry.get("url")) == bool(_entry.get("archive")):
            _config_error(_where, "give either url (with sha256) or archive (a key of raw_data.downloads.archives)")
        if _entry.get("archive") and _entry["archive"] not in DOWNLOADS["archives"]:
            _config_error(f"{_where}.archive", f"{_entry['archive']!r} is not under raw_data.downloads.archives")


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
    output:
        "resources/raw/mdqa/{name}",
    log:
        "logs/download_raw/mdqa/{name}.log",
    wildcard_constraints:
        name=download_names("mdqa"),
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="20m",
    params:
        entry=download_params("mdqa"),
        verify=DOWNLOADS["verify"],
    script:
        "../workflow/scripts/download_raw.py"


rule download_raw_summhay:
    output:
        "resources/raw/summhay/{name}",
    log:
        "logs/download_raw/summhay/{name}.log",
    wildcard_constraints:
        name=download_names("summhay"),
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="20m",
    params:
        entry=download_params("summhay"),
        verify=DOWNLOADS["verify"],
    script:
        "../workflow/scripts/download_raw.py"


rule download_raw_musique_archive:
    # The official release is a Google Drive zip (StonyBrookNLP/musique download_data.sh).
    output:
        temp("resources/raw/{archive}"),
    log:
        "logs/download_raw/{archive}.log",
    wildcard_constraints:
        archive="|".join(map(re.escape, DOWNLOADS["archives"])) or "(?!)",
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="30m",
    params:
        entry=download_params("musique", kind="archive"),
        verify=DOWNLOADS["verify"],
    script:
        "../workflow/scripts/download_raw.py"


rule download_raw_musique:
    input:
        archive=lambda wc: f"resources/raw/{download_entry('musique', f'musique/{wc.name}')[1]['archive']}",
    output:
        "resources/raw/musique/{name}",
    log:
        "logs/download_raw/musique/{name}.log",
    wildcard_constraints:
        name=download_names("musique"),
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="10m",
    params:
        entry=download_params("musique"),
        verify=DOWNLOADS["verify"],
    script:
        "../workflow/scripts/download_raw.py"


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
