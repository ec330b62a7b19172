#!/usr/bin/env bash
# Time the gpu-small study on one GPU node that has torch/transformers/peft but neither
# internet, vLLM nor snakemake (the lent H200): install snakemake from carried wheels, convert
# the embedded model from its carried GGUF, and run the study with the HF backends.
#
#   bash benchmarks/gpu_small_device.sh setup WHEEL_DIR GGUF_FILE DATA_DIR   # once per machine
#   bash benchmarks/gpu_small_device.sh run SECONDS [JOBS_PER_GPU]  # resumable: call again
#
# Each `run` stops after SECONDS (snakemake is interrupted and resumes next time with
# --rerun-incomplete); the per-call wall times are appended to results/gpu_small_timing.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
overlay="$HOME/gpu-small-device.yaml"
case "$1" in
setup)
    # --no-deps: the node's own numpy/pandas/packaging... stay; the carried wheels are the missing rest.
    python3 -m pip install -q --no-index --no-deps --no-build-isolation "$2"/*
    python3 - "$3" "$HOME/smollm2-135m" <<'PY'
import sys
from pathlib import Path
from synthctx.models.prepare import convert_gguf
convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]))
PY
    cat > "$overlay" <<YAML
# The lent node has no vLLM and no internet: the model comes from a local directory and
# generation/evaluation use Hugging Face generate.
raw_data:
  local_dir: $4
models:
  smollm2-135m:
    source: {kind: local, path: $HOME/smollm2-135m}
generation:
  backend: hf
evaluate:
  backend: hf
YAML
    ;;
run)
    limit="$2"; per_gpu="${3:-6}"
    mkdir -p results
    start=$(date +%s)
    rc=0
    timeout --signal=INT --kill-after=30 "$limit" python3 -m snakemake --cores all --resources gpu="$per_gpu" \
        --configfile config/gpu-small.yaml "$overlay" --rerun-incomplete --keep-going \
        > "results/gpu_small_run_$start.log" 2>&1 || rc=$?
    end=$(date +%s)
    printf '%s\t%s\t%s\t%s\n' "$start" "$end" "$((end - start))" "$rc" >> results/gpu_small_timing.tsv
    tail -n 3 "results/gpu_small_run_$start.log"
    python3 -m snakemake -n --quiet --configfile config/gpu-small.yaml "$overlay" 2>&1 | tail -n 20 || true
    ;;
esac
