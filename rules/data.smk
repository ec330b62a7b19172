# Data stage: the study's real tasks in their original formats -> normalized examples fitted
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


# Every file raw_data.downloads lists, by its path under the raw data folder: (task, index in the
# task's list, entry). The task registry names the lists; the generic rules below fetch them.
DOWNLOAD_FILES = {
    entry["file"]: (task, index, entry)
    for task in study_vocabulary.task_names()
    for index, entry in enumerate(DOWNLOADS.get(task) or [])
}


def download_input(wildcards):
    """An archive member's job needs the (downloaded, checked) archive; a URL's job nothing."""
    archive = DOWNLOAD_FILES[wildcards.file][2].get("archive")
    return {"archive": f"resources/raw/{archive}"} if archive else {}


def download_params(wildcards):
    """Params of a download job: the entry's URL, sha256 and its config key, or its archive member."""
    task, index, entry = DOWNLOAD_FILES[wildcards.file]
    if entry.get("archive"):
        return {"url": "", "sha256": None, "key": "", "member": Path(entry["file"]).name}
    return {"url": entry["url"], "sha256": entry.get("sha256"), "member": "",
            "key": f"raw_data.downloads.{task}[{index}].sha256"}


def archive_params(wildcards):
    """Params of an archive's download job: its URL, sha256 and the sha256's config key."""
    entry = DOWNLOADS["archives"][wildcards.archive]
    return {"url": entry["url"], "sha256": entry.get("sha256"), "member": "",
            "key": f"raw_data.downloads.archives.{wildcards.archive}.sha256"}


def exactly(names):
    """Wildcard constraint matching exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


for _task in TASKS if DOWNLOADS else ():
    if not config["raw_data"]["local_dir"] and not DOWNLOADS.get(_task):
        _config_error(f"raw_data.downloads.{_task}", "raw_data.local_dir is null but no file to download is listed")
    for _index, _entry in enumerate(DOWNLOADS.get(_task) or []):
        _where = f"raw_data.downloads.{_task}[{_index}]"
        if DOWNLOAD_FILES[_entry["file"]][1] != _index:
            _config_error(f"{_where}.file", f"{_entry['file']!r} is listed twice")
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


# One job per listed file, whatever its task: fetched from its URL and checked, or extracted
# from its archive.
rule download_raw:
    input:
        unpack(download_input),
    output:
        "resources/raw/{file}",
    log:
        "logs/download_raw/{file}.log",
    wildcard_constraints:
        file=exactly(DOWNLOAD_FILES),
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="20m",
    params:
        entry=download_params,
        verify=DOWNLOADS["verify"],
    script:
        "../workflow/scripts/download_raw.py"


# An archive of raw_data.downloads.archives: fetched once, checked, deleted once its members are out.
rule download_raw_archive:
    output:
        temp("resources/raw/{archive}"),
    log:
        "logs/download_raw/{archive}.log",
    wildcard_constraints:
        archive=exactly(DOWNLOADS.get("archives") or {}),
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="30m",
    params:
        entry=archive_params,
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
