#!/usr/bin/env bash
# The default study in one command: environments first (scripts/bootstrap.sh; a no-op when they
# are current), then Snakemake on every core. Extra arguments go to snakemake, e.g.
#   bash scripts/study.sh table1 --configfile config/gpu-small.yaml --resources gpu=8
# CORES overrides the core count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/snakemake --cores "${CORES:-$(nproc)}" "$@"
