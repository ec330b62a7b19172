"""Every target README.md's figure -> target table names builds: `snakemake <name>` plans the
output of every model of the study.

A named target is a rule without wildcards whose input lists each model's file (`figure3`,
`claims`, ...); a rule whose outputs hold `{model}` cannot be a target ("Target rules may not
contain wildcards"), so the per-model rule has another name (figure4 -> knockout_figure).
The dry runs read the project's own raw fixtures (no shared data needed) and study two models,
so "every model" is visible in the plan."""

from __future__ import annotations

import copy
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, REPO
from slurm.workflow import dry_run_jobs, job_counts, run_snakemake

STUDY = "named-targets"
MODELS = ["smollm2-135m", "smollm2-135m-twin"]
# The figures and tables whose per-model rule once took the figure's name, so that
# `snakemake figure4` failed; the README table must name each of them.
FIGURE_TARGETS = ["table1", "training_curves", "figure4", "table3"]
# Snakemake options of the table's commands that take a value (the value is not a target).
VALUE_OPTIONS = {"--cores", "-c", "--jobs", "-j", "--configfile", "--report"}


def readme_commands() -> list[tuple[str, list[str]]]:
    """(output, command words) of every row of README.md's "Figures and tables" table."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Figures and tables", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("output", "---"):
            continue
        command = re.search(r"`(snakemake [^`]+)`", cells[2])
        assert command, f"README target column of {cells[0]!r} holds no snakemake command: {cells[2]!r}"
        rows.append((cells[0], shlex.split(command.group(1))[1:]))
    return rows


def command_targets(words: list[str]) -> list[str]:
    """The positional arguments of one snakemake command line (its targets)."""
    targets, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in VALUE_OPTIONS
        else:
            targets.append(word)
    return targets


def readme_target_names() -> list[str]:
    """Every rule name the README table gives as a target (file targets have a '/')."""
    return [t for _, words in readme_commands() for t in command_targets(words) if "/" not in t]


def test_readme_table_gives_a_named_target_for_every_output():
    """Each row's command is `snakemake <name>` (the report row: `--report FILE`), never one model's
    file, and the figures whose per-model rule once carried the figure's name are named."""
    rows = readme_commands()
    assert len(rows) >= 12, rows
    for output, words in rows:
        if "--report" in words:
            continue
        targets = command_targets(words)
        assert targets and all("/" not in t for t in targets), (output, targets)
    names = readme_target_names()
    assert set(FIGURE_TARGETS) <= set(names), names
    assert {"figure3", "table2", "claims", "scorecard"} <= set(names), names


def study_overlay() -> dict:
    """config.yaml's study on the raw fixtures, under results/<STUDY>/, with a second model."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    twin = copy.deepcopy(config["models"]["smollm2-135m"])
    raw = FIXTURES / "raw"
    return {
        "study": {"name": STUDY, "models": MODELS},
        "models": {"smollm2-135m-twin": twin},
        "raw_data": {
            "local_dir": str(raw),
            "mdqa": {"documents_file": "mdqa/nq-open-small.jsonl"},
            "musique": {"files": ["musique/musique_ans_small.jsonl", "musique/musique_ans_small_array.json"]},
            "summhay": {"files": [f"summhay/topic_small{i}.json" for i in (1, 2, 3)]},
        },
    }


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """(return code, output) of `snakemake -n <name>` for every named target, each in a fresh
    scratch directory (nothing built: the plan is the whole chain). A few run at once: each takes
    ~10 s, mostly Snakemake's start-up waiting (40-50 s for all on a busy 2-core machine: slow)."""
    names = sorted(set(readme_target_names()) | set(FIGURE_TARGETS))

    def dry_run(name: str) -> tuple[int, str]:
        work = tmp_path_factory.mktemp(name)
        (work / "config.yaml").write_text((REPO / "config.yaml").read_text())
        (work / "study.yaml").write_text(yaml.safe_dump(study_overlay()))
        proc = run_snakemake(name, "-n", "-s", str(REPO / "Snakefile"), "--configfile", str(work / "study.yaml"),
                             cwd=work, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(dry_run, names)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(readme_target_names()) | set(FIGURE_TARGETS)))
def test_named_target_dry_runs(plans, name):
    """`snakemake -n <name>` succeeds and plans at least one job besides the target rule itself."""
    returncode, out = plans[name]
    assert returncode == 0, out[-4000:]
    counts = job_counts(out)
    assert counts[name] == 1, counts
    assert sum(n for rule, n in counts.items() if rule != name) >= 1, counts


@pytest.mark.slow
@pytest.mark.parametrize("name, files", [
    ("figure4", ["figures/{model}/figure4.png", "causal/{model}/knockout_summary.parquet"]),
    ("table3", ["tables/{model}/table3.md", "tables/{model}/table3.parquet"]),
    ("table1", ["tables/{model}/table1.parquet", "tables/{model}/table1.md", "figures/{model}/table1.png"]),
    ("training_curves", ["figures/{model}/training_curves.png"]),
])
def test_figure_targets_plan_every_models_files(plans, name, files):
    """The figure's target plans its per-model files, under results/<study.name>/, for each model."""
    returncode, out = plans[name]
    assert returncode == 0, out[-4000:]
    planned = {Path(f) for job in re.findall(r"^\s+output: (.+)$", out, re.M) for f in job.split(", ")}
    for model in MODELS:
        for file in files:
            assert Path(f"results/{STUDY}/" + file.format(model=model)) in planned, (model, file, sorted(planned))
    # one job per model builds them, of a per-model rule; the named target only collects them
    firsts = {f"results/{STUDY}/" + files[0].format(model=model) for model in MODELS}
    builders = [rule for rule, first in dry_run_jobs(out) if first in firsts]
    assert len(builders) == len(MODELS) and len(set(builders)) == 1 and name not in builders, dry_run_jobs(out)
