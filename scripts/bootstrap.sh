#!/usr/bin/env bash
# Make sure the two environments of a workstation run exist and match this checkout:
# runs scripts/install.sh when .venv or .venv-vllm is missing, broken, or was built from a
# different pyproject.toml / install.sh; otherwise returns at once (a stamp in .venv records
# the inputs' hash). Called by scripts/study.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.synthctx-env-stamp
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)

envs_work() {
  # The project imports in .venv (editable install: source changes need no reinstall) and
  # vLLM is installed in .venv-vllm; find_spec avoids vLLM's slow import.
  .venv/bin/python -c "import synthctx, snakemake, torch, transformers, peft" 2>/dev/null &&
    .venv-vllm/bin/python -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('vllm') and u.find_spec('synthctx')))" 2>/dev/null
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && envs_work; then
  exit 0
fi
echo "bootstrap: creating or updating .venv and .venv-vllm (scripts/install.sh)" >&2
bash scripts/install.sh
envs_work || { echo "bootstrap: the environments still do not import after scripts/install.sh" >&2; exit 1; }
echo "$want" > "$stamp"
