"""scripts/bootstrap.sh: installs when the environments are missing or stale, else does nothing.

Run on a scratch copy of the scripts with a stand-in install.sh that counts its calls and makes
stand-in interpreters, so no real environment is built."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FAKE_INSTALL = """#!/usr/bin/env bash
set -e
echo run >> install_calls
for env in .venv .venv-vllm; do
  mkdir -p $env/bin
  printf '#!/bin/sh\\nexit ${FAKE_PYTHON_STATUS:-0}\\n' > $env/bin/python
  chmod +x $env/bin/python
done
"""


def _scratch(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "bootstrap.sh", root / "scripts" / "bootstrap.sh")
    (root / "scripts" / "install.sh").write_text(FAKE_INSTALL)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def _bootstrap(root: Path, **env: str) -> int:
    result = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=root, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 0, result.stderr
    return len((root / "install_calls").read_text().split()) if (root / "install_calls").exists() else 0


def test_installs_once_then_only_when_inputs_change(tmp_path):
    root = _scratch(tmp_path)
    assert _bootstrap(root) == 1          # nothing there: install
    assert _bootstrap(root) == 1          # current: no-op
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    assert _bootstrap(root) == 2          # a changed dependency list: install again
    assert _bootstrap(root) == 2


def test_reinstalls_a_broken_environment(tmp_path):
    root = _scratch(tmp_path)
    assert _bootstrap(root) == 1
    shutil.rmtree(root / ".venv-vllm")
    assert _bootstrap(root) == 2


def test_fails_when_install_leaves_environments_that_do_not_import(tmp_path):
    root = _scratch(tmp_path)
    result = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=root, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "FAKE_PYTHON_STATUS": "1"})
    assert result.returncode != 0
    assert "still do not import" in result.stderr
    assert not (root / ".venv" / ".synthctx-env-stamp").exists()
