"""One results folder per study (config `study.name`): every output, log and benchmark file of a
study's jobs lies under results/<study.name>/, so two studies never overwrite each other; only
what does not depend on the study is shared (prepared models and raw downloads under resources/,
and the logs of the jobs that make them)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO
from slurm.workflow import run_snakemake

# The documented shared paths (docs/DESIGN.md "Paths"): study-independent, costly, outside results/.
SHARED = ("resources/models/", "resources/raw/", "logs/prepare_model/", "logs/download_raw/")
# The project's own raw fixtures (the e2e test's files), so that the dry runs need no ../shared/data.
FIXTURE_RAW = {
    "local_dir": str(REPO / "tests" / "fixtures" / "raw"),
    "mdqa": {"documents_file": "mdqa/nq-open-small.jsonl"},
    "musique": {"files": ["musique/musique_ans_small.jsonl", "musique/musique_ans_small_array.json"]},
    "summhay": {"files": ["summhay/topic_small1.json", "summhay/topic_small2.json", "summhay/topic_small3.json"]},
}
FILE_LINE = re.compile(r"^\s+(output|log|benchmark): (.+)$", re.M)


def planned_files(tmp_path: Path, overlay: dict) -> list[str]:
    """Every output, log and benchmark path of every job `snakemake -n` plans for config.yaml +
    ``overlay``, from scratch (a folder where nothing is built yet)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    proc = run_snakemake("-n", "-s", str(REPO / "Snakefile"), "--configfile", str(tmp_path / "overlay.yaml"),
                         cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    files = [path.strip() for _, paths in FILE_LINE.findall(proc.stdout) for path in paths.split(",")]
    assert files, out[-3000:]
    return files


def outside_study(files: list[str], name: str) -> list[str]:
    return [f for f in files if not f.startswith(f"results/{name}/") and not f.startswith(SHARED)]


def test_two_studies_plan_their_outputs_in_two_disjoint_folders(tmp_path):
    """The default study and gpu-small (both of smollm2-135m, which once wrote the same
    results/tables/smollm2-135m/... files) plan every job's files in their own folder."""
    default = planned_files(tmp_path / "default", {"raw_data": FIXTURE_RAW})
    gpu_small = yaml.safe_load((REPO / "config" / "gpu-small.yaml").read_text())
    gpu_small["raw_data"] = copy.deepcopy(FIXTURE_RAW)
    small = planned_files(tmp_path / "gpu-small", gpu_small)

    assert outside_study(default, "default") == []
    assert outside_study(small, "gpu-small") == []
    # the default study's own paths: Table 1, a log, a benchmark file
    for path in ("results/default/tables/smollm2-135m/table1.md",
                 "results/default/logs/train_adapter/smollm2-135m/mdqa/real_full.log",
                 "results/default/logs/train_adapter/smollm2-135m/mdqa/real_full.benchmark.tsv",
                 "results/default/synth/mdqa/pool.parquet"):
        assert path in default, path
    assert "results/gpu-small/tables/smollm2-135m/table1.md" in small
    # the study's own files never meet; only the shared prepared model does
    assert set(default) & set(small) == {"resources/models/smollm2-135m/config.json",
                                         "logs/prepare_model/smollm2-135m.log"}


@pytest.mark.slow
def test_the_paper_study_plans_its_outputs_in_results_paper(tmp_path):
    """config/paper.yaml downloads its raw data: the downloads are shared (resources/raw/), its jobs' files are
    under results/paper/."""
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    files = planned_files(tmp_path, paper)
    assert outside_study(files, "paper") == []
    assert any(f.startswith("resources/raw/") for f in files) and any(f.startswith("logs/download_raw/") for f in files)
    assert "results/paper/tables/llama3-8b-instruct/table1.md" in files
    assert "results/paper/reports/mistral-7b-instruct/claims.md" in files


def test_rule_files_spell_no_results_path_outside_the_study_folder():
    """Every results/ or logs/ path of the rules (params such as checkpoint folders and the
    scorecard's benchmark files too, which a dry run does not print) goes through study_path();
    only the shared jobs (prepare_model, downloads) log under logs/."""
    literal = re.compile(r"""f?["'](results|logs)/[^"']*["']""")
    found = []
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").rglob("*.smk"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if code.startswith("STUDY_DIR = "):  # the study folder itself (rules/common.smk)
                continue
            for match in literal.finditer(code):
                text = match.group(0).lstrip("f").strip("\"'")
                if not text.startswith(("logs/prepare_model/", "logs/download_raw/")) and "study_path(" not in code:
                    found.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert found == []


@pytest.mark.parametrize("config_file, name", [
    (None, "default"), ("config/gpu-small.yaml", "gpu-small"), ("config/paper.yaml", "paper"),
    ("config/paper-rehearsal.yaml", "paper-rehearsal"), ("tests/configs/tiny.yaml", "tiny"),
    ("tests/configs/rehearsal-tiny.yaml", "rehearsal-tiny"),
])
def test_every_shipped_config_names_its_own_study(config_file, name):
    study = yaml.safe_load((REPO / (config_file or "config.yaml")).read_text())["study"]
    assert study["name"] == name


@pytest.mark.parametrize("bad", ["", "../elsewhere", "a/b", "{model}", ".hidden", "two words"])
def test_schema_refuses_a_study_name_that_is_not_a_plain_folder_name(bad):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["study"]["name"] = bad
    with pytest.raises(Exception) as err:
        validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    assert "['study']['name']" in str(err.value), str(err.value)[:2000]


def test_schema_requires_a_study_name():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    del config["study"]["name"]
    with pytest.raises(Exception) as err:
        validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    assert "'name' is a required property" in str(err.value)


def test_the_rehearsal_scripts_find_the_rehearsal_study_folder(capsys):
    """benchmarks/paper_rehearsal_device.sh asks rehearsal_report.py for the study's folder; the
    rehearsal's targets (and what its report reads) lie in it."""
    from test_rehearsal import REHEARSAL_STACK, load_module

    report = load_module("rehearsal_report", REPO / "benchmarks" / "rehearsal_report.py")
    assert report.main(["study-dir", "--configfile", *[str(REPO / p) for p in REHEARSAL_STACK]]) == 0
    assert capsys.readouterr().out == "results/paper-rehearsal\n"
    targets = report.rehearsal_targets(report.load_config(REHEARSAL_STACK))
    assert targets and all(t.startswith("results/paper-rehearsal/") for t in targets)
