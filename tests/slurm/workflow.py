"""Helpers for the tests that run Snakemake itself (test_slurm, test_configs, test_resilience)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ["models", "data", "synth", "train", "evaluate", "heads", "analysis", "causal"]


def snakemake_cmd(*args: str, timeout: int) -> list[str]:
    """`snakemake ARGS` under `timeout` (-k: a hung run is killed for good after 15 s)."""
    return ["timeout", "-k", "15", str(timeout), sys.executable, "-m", "snakemake", *args]


def run_snakemake(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(*args, timeout=timeout), cwd=cwd, capture_output=True, text=True)


def stub_stages() -> list[str]:
    """Stages whose rule file defines no rule yet (being written in parallel)."""
    stubs = []
    for stage in STAGES:
        text = (REPO / "rules" / f"{stage}.smk").read_text()
        if not re.search(r"^(rule|checkpoint) \w+", text, re.M):
            stubs.append(stage)
    return stubs


def job_counts(output: str) -> Counter:
    """Per-rule job counts from the 'Job stats' table of a dry-run (the first table)."""
    counts: Counter = Counter()
    m = re.search(r"Job stats:\njob\s+count\n-+\s+-+\n(.*?)\ntotal\s+\d+", output, re.S)
    if not m:
        return counts
    for line in m.group(1).splitlines():
        name, n = line.split()
        counts[name] = int(n)
    return counts


def dry_run_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, first output) of every job a dry-run lists."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]*\]\n(?:local)?(?:rule|checkpoint) )", output):
        rule = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        if not rule:
            continue
        out = re.search(r"^\s+output: ([^,\n]+)", block, re.M)
        jobs.append((rule.group(1), out.group(1).strip() if out else ""))
    return jobs


def link_model(src: Path, dest: Path) -> None:
    """Hard-link (or copy, across file systems) a prepared model directory into a scratch study.

    Never a directory symlink: Snakemake deletes a job's existing outputs before running it
    and after it fails, and through a symlink that would hit the shared prepared model.
    Rewrites replace files (new inodes), so the hard-linked originals stay intact."""
    import os
    import shutil

    dest.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)
