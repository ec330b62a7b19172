# Functions of data.smk's rules (input/params functions and helpers), kept apart from
# the rules themselves (snakemake --lint). Included at the top of data.smk.


def raw_files(task):
    """The raw files of a task, relative to the raw data folder: the task module's names under
    raw_data.<task> in raw_data.local_dir, or (local_dir null) the files raw_data.downloads.<task> fetches."""
    if not config["raw_data"]["local_dir"]:
        return [entry["file"] for entry in DOWNLOADS.get(task, [])]
    return get_task(task).raw_files(config["raw_data"][task])


def download_input(wildcards):
    """An archive member's job needs the (downloaded, checked) archive; a URL's job nothing."""
    archive = DOWNLOAD_FILES[wildcards.file][2].get("archive")
    return {"archive": f"resources/raw/{archive}"} if archive else {}


def download_params(wildcards):
    """Params of a download job: the entry's URL, sha256 and its config key, or its archive member."""
    task, index, entry = DOWNLOAD_FILES[wildcards.file]
    if entry.get("archive"):
        return {"url": "", "sha256": None, "key": "", "member": Path(entry["file"]).name}
    return {
        "url": entry["url"],
        "sha256": entry.get("sha256"),
        "member": "",
        "key": f"raw_data.downloads.{task}[{index}].sha256",
    }


def archive_params(wildcards):
    """Params of an archive's download job: its URL, sha256 and the sha256's config key."""
    entry = DOWNLOADS["archives"][wildcards.archive]
    return {
        "url": entry["url"],
        "sha256": entry.get("sha256"),
        "member": "",
        "key": f"raw_data.downloads.archives.{wildcards.archive}.sha256",
    }


def exactly(names):
    """Wildcard constraint matching exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def real_data_params(wildcards):
    """The config slice build_real_data depends on (and nothing else)."""
    # a task may override the study-wide sizes (MuSiQue's local sample has 59 three-hop questions)
    task_config, eval_examples, max_train_examples = study_vocabulary.task_data_settings(config, wildcards.task)
    return {
        "task_config": task_config,
        "eval_examples": eval_examples,
        "max_train_examples": max_train_examples,
        "limited_fraction": config["data"]["limited_fraction"],
        "seed": config["study"]["seed"],
        "context_tokens": config["models"][wildcards.model]["context_tokens"],
    }


def user_dataset_file(wildcards):
    """The user's file of one (condition, task), read in place."""
    files = config["datasets"][wildcards.condition]["files"]
    if wildcards.task not in files:
        _config_error(
            f"datasets.{wildcards.condition}.files",
            f"no file for task {wildcards.task!r} (it has "
            f"{sorted(files)}): nothing may request this condition for that task",
        )
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
