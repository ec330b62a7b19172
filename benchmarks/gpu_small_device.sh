#!/usr/bin/env bash
# Time the gpu-small study on one GPU node that has torch/transformers/peft but neither
# internet, vLLM nor snakemake (the lent H200): install snakemake from carried wheels, convert
# the embedded model from its carried GGUF, and run the study with the HF backends.
#
#   bash benchmarks/gpu_small_device.sh setup WHEEL_DIR GGUF_FILE DATA_DIR   # once per machine
#   bash benchmarks/gpu_small_device.sh run SECONDS [JOBS_PER_GPU]  # resumable: call again
#   bash benchmarks/gpu_small_device.sh start [JOBS_PER_GPU]        # or: one detached run (of $TARGETS) ...
#   bash benchmarks/gpu_small_device.sh wait SECONDS                # ... polled until it ends
#   bash benchmarks/gpu_small_device.sh collect OUT_DIR             # logs + tables as a tarball
#
# Each `run` stops after SECONDS (snakemake is interrupted and resumes next time with
# --rerun-incomplete); the per-call wall times are appended to results/gpu-small/gpu_small_timing.tsv.
# `start` runs the study detached from the calling shell, so it continues across the calls of a
# lending tool that limits each command's duration; `wait` reports progress until it ends and
# appends the run's start, end, seconds and exit status to the same file.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
overlay="$HOME/gpu-small-device.yaml"
# The study's folder, results/<study.name of config/gpu-small.yaml>: its outputs and logs, and this script's files.
name_of='import yaml; print(yaml.safe_load(open("config/gpu-small.yaml"))["study"]["name"])'
[ "$1" = setup ] || study="results/$(python3 -c "$name_of")"
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
    limit="$2"; per_gpu="${3:-8}"
    mkdir -p "$study"
    start=$(date +%s)
    rc=0
    timeout --signal=INT --kill-after=30 "$limit" python3 -m snakemake --cores all --resources gpu="$per_gpu" \
        --configfile config/gpu-small.yaml "$overlay" --rerun-incomplete --keep-going \
        > "$study/gpu_small_run_$start.log" 2>&1 || rc=$?
    end=$(date +%s)
    printf '%s\t%s\t%s\t%s\n' "$start" "$end" "$((end - start))" "$rc" >> $study/gpu_small_timing.tsv
    tail -n 3 "$study/gpu_small_run_$start.log"
    python3 -m snakemake -n --quiet --configfile config/gpu-small.yaml "$overlay" 2>&1 | tail -n 20 || true
    ;;
start)
    per_gpu="${2:-8}"
    mkdir -p "$study"
    date +%s > $study/gpu_small_detached.start
    rm -f $study/gpu_small_detached.rc
    # TARGETS (optional): what to build instead of `all`, e.g. "claims figure4".
    setsid nohup bash -c "python3 -m snakemake ${TARGETS:-} --cores all --resources gpu=$per_gpu \
        --configfile config/gpu-small.yaml '$overlay' --rerun-incomplete --keep-going \
        > $study/gpu_small_detached.log 2>&1; echo \$? > $study/gpu_small_detached.rc; \
        date +%s > $study/gpu_small_detached.end" > /dev/null 2>&1 < /dev/null &
    echo "started at $(cat $study/gpu_small_detached.start)"
    ;;
wait)
    deadline=$(( $(date +%s) + $2 ))
    while [ ! -f $study/gpu_small_detached.rc ] && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 20
        printf '%s s: %s\n' "$(( $(date +%s) - $(cat $study/gpu_small_detached.start) ))" \
            "$(grep -Eo '[0-9]+ of [0-9]+ steps \([0-9]+%\) done' $study/gpu_small_detached.log | tail -n 1)"
    done
    if [ -f $study/gpu_small_detached.rc ]; then
        start=$(cat $study/gpu_small_detached.start); end=$(cat $study/gpu_small_detached.end)
        rc=$(cat $study/gpu_small_detached.rc)
        printf '%s\t%s\t%s\t%s\n' "$start" "$end" "$((end - start))" "$rc" >> $study/gpu_small_timing.tsv
        echo "finished: $((end - start)) s, exit $rc"; tail -n 3 $study/gpu_small_detached.log
    else
        echo "still running"; pgrep -f "snakemake --cores" > /dev/null || echo "but no snakemake process is left"
    fi
    ;;
collect)
    mkdir -p "$2"
    # Everything the tables, figures, reports and scorecard are made of, with the logs and the
    # benchmark TSVs; not the weights, checkpoints or example files.
    tar czf "$2/gpu_small_outputs.tgz" --exclude='*.safetensors' --exclude="$study/checkpoints" \
        --exclude="$study/data" --exclude="$study/synth" --exclude='*/train.parquet' \
        $study logs .snakemake/log 2> /dev/null || true
    ls -la "$2"
    ;;
esac
