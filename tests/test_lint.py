"""The workflow follows Snakemake's conventions: `snakemake --lint` finds nothing and the rule
files are formatted as `snakefmt` writes them (CI runs this file like any other test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_snakemake_lint_reports_nothing():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=_env())
    findings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Lints for")]
    assert findings == [], proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_rule_files_are_snakefmt_formatted():
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.fail("snakefmt is not installed (pyproject's test extra)")
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
