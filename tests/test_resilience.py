"""Resilience of the workflow: a changed config value re-runs exactly the jobs that depend on
it, and a job killed mid-way leaves no output Snakemake accepts as complete.

One real (tiny) build of the real-data rule for MDQA in a scratch directory, then dry-runs
with edited configs against it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import MODEL_CACHE, REPO, SHARED_DATA
from slurm.workflow import dry_run_jobs, link_model, run_snakemake, snakemake_cmd

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

MODEL, TASK = "smollm2-135m", "mdqa"
# tests/configs/tiny.yaml's folder, results/<study.name>/
STUDY = f"results/{yaml.safe_load((REPO / 'tests' / 'configs' / 'tiny.yaml').read_text())['study']['name']}"
DATA_TARGETS = [
    f"{STUDY}/data/{MODEL}/{TASK}/eval.parquet",
    f"{STUDY}/data/{MODEL}/{TASK}/train/real_full.parquet",
    f"{STUDY}/data/{MODEL}/{TASK}/train/real_limited.parquet",
]


def make_study(workdir: Path) -> dict:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    if not (MODEL_CACHE / "config.json").exists():
        pytest.skip(f"prepared model missing at {MODEL_CACHE}")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
    tiny = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    tiny.setdefault("raw_data", {})["local_dir"] = str(SHARED_DATA)
    write_config(workdir, tiny)
    link_model(MODEL_CACHE, workdir / "resources" / "models" / MODEL)
    (workdir / "workflow").symlink_to(REPO / "workflow", target_is_directory=True)
    return tiny


def write_config(workdir: Path, config: dict, name: str = "tiny.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    return path


def local_args(configfile: Path) -> list[str]:
    # The workstation profile (profiles/default) is replaced by explicit settings.
    return ["-s", str(REPO / "Snakefile"), "--workflow-profile", "none", "--cores", "1",
            "--configfile", str(configfile)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A scratch study with the MDQA real-data outputs built (one local job)."""
    workdir = tmp_path_factory.mktemp("resilience")
    tiny = make_study(workdir)
    proc = run_snakemake(*DATA_TARGETS, *local_args(workdir / "tiny.yaml"), cwd=workdir, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir, tiny


def dry_run(workdir: Path, config: dict, *targets: str, extra: tuple[str, ...] = ()) -> str:
    path = write_config(workdir, config, "edited.yaml")
    proc = run_snakemake("-n", *targets, *local_args(path), *extra, cwd=workdir, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def edited(config: dict, *path: str, value) -> dict:
    config = yaml.safe_load(yaml.safe_dump(config))
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config


def test_unchanged_config_reruns_nothing(built):
    workdir, tiny = built
    out = dry_run(workdir, tiny, *DATA_TARGETS)
    assert "Nothing to be done" in out, out[-2000:]


@pytest.mark.parametrize("path, value", [
    (("train", "learning_rate"), 1.0e-3),  # a later stage
    (("data", "musique", "num_paragraphs"), 9),  # another task's slice
    (("causal", "knockout_top_k"), 3),
])
def test_unrelated_key_reruns_nothing(built, path, value):
    workdir, tiny = built
    out = dry_run(workdir, edited(tiny, *path, value=value), *DATA_TARGETS)
    assert "Nothing to be done" in out, (path, out[-2000:])


@pytest.mark.parametrize("path, value", [
    (("data", "limited_fraction"), 0.5),
    (("data", "eval_examples"), 5),
    (("data", "mdqa", "num_documents"), 4),
    (("study", "seed"), 99),
])
def test_data_key_reruns_exactly_the_data_job(built, path, value):
    workdir, tiny = built
    out = dry_run(workdir, edited(tiny, *path, value=value), *DATA_TARGETS)
    jobs = dry_run_jobs(out)
    assert [rule for rule, _ in jobs] == ["build_real_data"], jobs
    assert "Params have changed" in out or "params" in out.lower(), out[-2000:]


def test_list_changes_params_names_the_outputs(built):
    workdir, tiny = built
    path = write_config(workdir, edited(tiny, "data", "limited_fraction", value=0.5), "edited.yaml")
    proc = run_snakemake("--list-changes", "params", *local_args(path), cwd=workdir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = set(proc.stdout.split())
    assert set(DATA_TARGETS) <= listed, proc.stdout
    # Unchanged config: no output is listed as having changed params.
    proc = run_snakemake("--list-changes", "params", *local_args(workdir / "tiny.yaml"), cwd=workdir, timeout=240)
    assert not set(DATA_TARGETS) & set(proc.stdout.split()), proc.stdout


def test_downstream_of_changed_data_is_scheduled(built):
    """Everything that reads the MDQA data is (re)planned when a data key changes; the
    changed job is the only one whose reason is the params change."""
    workdir, tiny = built
    adapter = f"{STUDY}/adapters/{MODEL}/{TASK}/real_full/adapter_model.safetensors"
    out = dry_run(workdir, edited(tiny, "data", "limited_fraction", value=0.5), adapter)
    rules = [rule for rule, _ in dry_run_jobs(out)]
    assert rules.count("build_real_data") == 1 and rules.count("train_adapter") == 1, rules


def test_killed_job_is_not_accepted_as_complete(tmp_path):
    """SIGKILL the whole Snakemake process tree while the real-data job runs: no output is
    taken as complete (it is missing, or marked incomplete), and the next run re-plans it."""
    workdir = tmp_path / "killed"
    make_study(workdir)
    log = workdir / STUDY / "logs" / "build_real_data" / MODEL / f"{TASK}.log"
    proc = subprocess.Popen(snakemake_cmd(*DATA_TARGETS, *local_args(workdir / "tiny.yaml"), timeout=300),
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not log.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, "the job finished before it could be killed"
        time.sleep(1)  # mid-way: the script is loading the tokenizer / building examples
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # Whatever exists now must not be accepted: without --rerun-incomplete Snakemake refuses
    # incomplete files, or plans the job because its outputs are missing.
    present = [t for t in DATA_TARGETS if (workdir / t).exists()]
    strict = run_snakemake("-n", *DATA_TARGETS, *local_args(workdir / "tiny.yaml"), cwd=workdir, timeout=240)
    out = strict.stdout + strict.stderr
    if present and "nothing to be done" in out.lower():
        # The job finished before the kill landed (the wait outlasted it): then every output
        # must be a whole, schema-valid artifact, which is what "complete" has to mean.
        from synthctx.data.examples import read_examples

        assert present == DATA_TARGETS, (present, out[-3000:])
        for target in present:
            assert read_examples(str(workdir / target))
        return  # a finished job is rightly not planned again
    elif present:
        assert strict.returncode != 0 and "incomplete" in out.lower(), (present, out[-3000:])
    else:
        assert strict.returncode == 0 and "build_real_data" in out, out[-3000:]
    # With --rerun-incomplete (the profiles' setting) the job is simply planned again.
    again = run_snakemake("-n", *DATA_TARGETS, *local_args(workdir / "tiny.yaml"), "--rerun-incomplete",
                          cwd=workdir, timeout=240)
    assert again.returncode == 0 and [r for r, _ in dry_run_jobs(again.stdout)] == ["build_real_data"], again.stdout[-3000:]
    # No partial Parquet left at a final path (atomic writes) and no stray temp files in results/.
    leftovers = [p for p in (workdir / "results").rglob("*") if p.is_file() and not p.name.endswith(".parquet")] \
        if (workdir / "results").exists() else []
    assert not [p for p in leftovers if ".tmp" in p.name or p.name.startswith(".")], leftovers
