#!/usr/bin/env bash
# The default study in one command: environments first (scripts/bootstrap.sh; a no-op when they
# are current), then Snakemake on every core. Extra arguments go to snakemake, e.g.
#   bash scripts/study.sh results/gpu-small/tables/smollm2-135m/table1.md \
#       --configfile config/gpu-small.yaml --resources gpu=8
# (a study's outputs are under results/<study.name>/: results/default/ for config.yaml alone).
# CORES overrides the core count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/snakemake --cores "${CORES:-$(nproc)}" "$@"
