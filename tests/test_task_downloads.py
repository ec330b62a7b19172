"""A researcher's own task (tests/toytask.py, registered through study.task_modules) gets its raw
files fetched and checked by the workflow's generic download rule: a new task lists its pinned
files under raw_data.downloads.<task> and needs no rule of its own."""

from __future__ import annotations

import hashlib
import os

import yaml

from conftest import REPO
from test_reliability import snakemake, study_dir

FIXTURE = REPO / "tests" / "fixtures" / "raw" / "toy" / "lookup.tsv"


def test_a_registered_task_downloads_through_the_generic_rule(tmp_path, monkeypatch):
    # The toy task's module must be importable by the Snakemake process.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    sha = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["study"]["task_modules"] = ["toytask"]
    config["raw_data"]["local_dir"] = None
    config["raw_data"]["downloads"]["toy"] = [
        {"file": "toy/lookup.tsv", "url": FIXTURE.as_uri(), "sha256": sha},
        {"file": "toy/lookup_wrong_pin.tsv", "url": FIXTURE.as_uri(), "sha256": "0" * 64},
    ]
    work = study_dir(tmp_path, config)
    good = snakemake(work, "resources/raw/toy/lookup.tsv")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    assert "rule download_raw:" in good.stdout + good.stderr
    assert (work / "resources/raw/toy/lookup.tsv").read_bytes() == FIXTURE.read_bytes()
    bad = snakemake(work, "resources/raw/toy/lookup_wrong_pin.tsv")
    assert bad.returncode != 0
    log = (work / "logs/download_raw/toy/lookup_wrong_pin.tsv.log").read_text()
    assert "does not match raw_data.downloads.toy[1].sha256" in log
    assert not (work / "resources/raw/toy/lookup_wrong_pin.tsv").exists()
    # A file no task lists is no download job.
    unlisted = snakemake(work, "-n", "resources/raw/toy/other.tsv")
    assert unlisted.returncode != 0 and "MissingRuleException" in unlisted.stdout + unlisted.stderr
