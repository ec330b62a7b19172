# Data stage: the study's real tasks in their original formats -> normalized examples fitted
# to each model's context budget (eval split, Real (Full), Real (Limited), stats).
# Raw files come from raw_data.local_dir, or from the download rules below when it is null.


include: "functions/data.smk"


# With raw_data.local_dir null the study reads the files raw_data.downloads lists (each pinned to
# a commit or release and checked against its sha256), fetched by the download rules below.
# (A config that replaces raw_data whole and reads local files may leave downloads out.)
DOWNLOADS = config["raw_data"].get("downloads") or {"verify": True, "archives": {}}


# Every file raw_data.downloads lists, by its path under the raw data folder: (task, index in the
# task's list, entry). The task registry names the lists; the generic rules below fetch them.
DOWNLOAD_FILES = {
    entry["file"]: (task, index, entry)
    for task in study_vocabulary.task_names()
    for index, entry in enumerate(DOWNLOADS.get(task) or [])
}


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


rule build_real_data:
    input:
        raw=lambda wc: [raw_path(f) for f in raw_files(wc.task)],
        model="resources/models/{model}/config.json",
    output:
        eval=study_path("data/{model}/{task}/eval.parquet"),
        real_full=study_path("data/{model}/{task}/train/real_full.parquet"),
        real_limited=study_path("data/{model}/{task}/train/real_limited.parquet"),
        stats=study_path("data/{model}/{task}/stats/real.parquet"),
    log:
        study_path("logs/build_real_data/{model}/{task}.log"),
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
    localrule: True
    conda:
        "../envs/torch.yaml"
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
    localrule: True
    conda:
        "../envs/torch.yaml"
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


rule import_user_dataset:
    input:
        source=user_dataset_file,
        model=ancient("resources/models/{model}/config.json"),
    output:
        examples=study_path("data/{model}/{task}/train/{condition}.parquet"),
    log:
        study_path("logs/import_user_dataset/{model}/{task}/{condition}.log"),
    wildcard_constraints:
        condition=study_vocabulary.wildcard_pattern(USER),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        settings=user_dataset_params,
    script:
        "../workflow/scripts/import_user_dataset.py"
