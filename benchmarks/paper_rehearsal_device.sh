#!/usr/bin/env bash
# The paper-scale rehearsal (config/paper-rehearsal.yaml) on one GPU node that has torch,
# transformers and peft but neither internet, the hub, vLLM, flash-attn nor snakemake (the lent
# H200s): random-weight models of Llama-3-8B-Instruct's and Mistral-7B-Instruct-v0.1's exact
# shapes, at 32K tokens, through every GPU rule of paper.yaml, a few examples per job; then the
# per-rule peak GPU memory, time per unit and the projection of the whole paper study.
#
#   bash benchmarks/paper_rehearsal_device.sh setup WHEEL_DIR SMOLLM2 DATA_DIR [MODELS] [TASKS]  # once per machine
#   bash benchmarks/paper_rehearsal_device.sh start [JOBS_PER_GPU] [TARGETS_REGEX]  # one detached run ...
#   bash benchmarks/paper_rehearsal_device.sh wait SECONDS           # ... followed until it ends
#   bash benchmarks/paper_rehearsal_device.sh report [ARGS]  # results/paper-rehearsal/rehearsal_report.{md,json}
#   bash benchmarks/paper_rehearsal_device.sh collect OUT_DIR        # logs, metadata, report as a tarball
#
# WHEEL_DIR: snakemake and its missing dependencies as wheels. SMOLLM2: the embedded
# SmolLM2-135M-Instruct (its tokenizer and chat template are the rehearsal models'), either its
# GGUF file (converted here) or an already prepared model directory. DATA_DIR: a copy of
# ../shared/data. MODELS: optional comma-separated subset of the rehearsal models (default both;
# one model per call halves a one-GPU session's work; the Llama shape also writes the pools).
# TASKS: optional comma-separated subset of the tasks: `musique` alone (240 paragraphs, the 32K
# task) runs every GPU rule once per model, 21 GPU jobs for both models instead of 59, and the
# report projects the tasks not run from the largest per-unit cost of each rule. Give MODELS as ""
# to keep both.
#
# Every GPU job gets its own card: benchmarks/gpu_slots/sitecustomize.py (on PYTHONPATH) makes
# each GPU job script claim one of GPUS x JOBS_PER_GPU slots (default 1 job per GPU, so each job's
# memory and time are its own) and sets CUDA_VISIBLE_DEVICES; snakemake's `gpu` resource holds
# the number of GPU jobs to the number of slots. `start` runs detached from the calling shell, so
# the run continues across the calls of a lending tool that limits each command's duration.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/benchmarks/gpu_slots:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
overlay="$HOME/paper-rehearsal-device.yaml"
configs="config/paper.yaml config/paper-rehearsal.yaml $overlay"
# The study's folder, results/<study.name> (results/paper-rehearsal): the workflow's outputs and logs,
# and this script's own files (rehearsal_*, the GPU slots).
case "$1" in setup|overlay) ;; *) study=$(python3 benchmarks/rehearsal_report.py study-dir --configfile config.yaml $configs) ;; esac
case "$1" in
setup)
    python3 -m pip install -q --no-index --no-deps --no-build-isolation "$2"/*
    if [ -d "$3" ]; then
        smollm="$3"
    else
        smollm="$HOME/smollm2-135m"
        python3 - "$3" "$smollm" <<'PY'
import sys
from pathlib import Path
from synthctx.models.prepare import convert_gguf
convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]))
PY
    fi
    bash "$0" overlay "$smollm" "$4" "${5:-}" "${6:-}"
    ;;
overlay)
    # OVERLAY from SMOLLM2_DIR DATA_DIR [MODELS] [TASKS] (setup's last step; alone for tests)
    {
        echo "# The lent node: no internet, no vLLM (config/paper-rehearsal.yaml already uses HF)."
        echo "raw_data:"
        echo "  local_dir: $3"
        echo "models:"
        echo "  smollm2-135m:"
        echo "    source: {kind: local, path: $2}"
        if [ -n "${4:-}${5:-}" ]; then
            echo "study:"
            [ -z "${4:-}" ] || echo "  models: [${4}]"
            [ -z "${5:-}" ] || echo "  tasks: [${5}]"
        fi
    } > "$overlay"
    cat "$overlay"
    ;;
start)
    per_gpu="${2:-1}"
    gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
    [ "$gpus" -ge 1 ] || { echo "no GPU visible (nvidia-smi -L)"; exit 1; }
    slots=$((gpus * per_gpu))
    mkdir -p "$study"
    rm -rf $study/.gpu_slots $study/rehearsal_detached.rc
    date +%s > $study/rehearsal_detached.start
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $study/rehearsal_gpus.txt || true
    python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__)" > $study/rehearsal_versions.txt 2>&1 || true
    # TARGETS_REGEX (optional, grep -E): only the targets matching it (and what they need), e.g.
    # 'patching' to complete a run that a lease ended before those jobs.
    python3 benchmarks/rehearsal_report.py targets --configfile config.yaml $configs \
        | grep -E "${3:-.}" > $study/rehearsal_targets.txt || { echo "no target matches ${3:-.}"; exit 1; }
    echo "$gpus GPUs, $slots GPU job slots, $(wc -l < $study/rehearsal_targets.txt) targets"
    SYNTHCTX_GPU_SLOT_DIR="$PWD/$study/.gpu_slots" SYNTHCTX_GPU_COUNT="$gpus" SYNTHCTX_GPU_SLOTS="$slots" \
    setsid nohup bash -c "python3 -m snakemake \$(cat $study/rehearsal_targets.txt) --cores all \
        --resources gpu=$slots --configfile $configs --rerun-incomplete --keep-going \
        > $study/rehearsal_detached.log 2>&1; echo \$? > $study/rehearsal_detached.rc; \
        date +%s > $study/rehearsal_detached.end" > /dev/null 2>&1 < /dev/null &
    echo "started at $(cat $study/rehearsal_detached.start)"
    ;;
wait)
    deadline=$(( $(date +%s) + $2 ))
    while [ ! -f $study/rehearsal_detached.rc ] && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 20
        printf '%s s: %s\n' "$(( $(date +%s) - $(cat $study/rehearsal_detached.start) ))" \
            "$(grep -Eo '[0-9]+ of [0-9]+ steps \([0-9]+%\) done' $study/rehearsal_detached.log | tail -n 1)"
    done
    if [ -f $study/rehearsal_detached.rc ]; then
        start=$(cat $study/rehearsal_detached.start); end=$(cat $study/rehearsal_detached.end)
        printf '%s\t%s\t%s\t%s\n' "$start" "$end" "$((end - start))" "$(cat $study/rehearsal_detached.rc)" \
            >> $study/rehearsal_timing.tsv
        echo "finished: $((end - start)) s, exit $(cat $study/rehearsal_detached.rc)"
        tail -n 3 $study/rehearsal_detached.log
    else
        echo "still running"; tail -n 2 $study/rehearsal_detached.log
    fi
    ;;
report)
    # Further arguments go to rehearsal_report.py report (--real-full, --task-tokens, --estimate:
    # BENCHMARKS.md gives the ones used); without --real-full a null data.max_train_examples stops it.
    python3 benchmarks/rehearsal_report.py report --root . --configfile config.yaml $configs \
        --json $study/rehearsal_report.json "${@:2}" | tee $study/rehearsal_report.md
    ;;
collect)
    mkdir -p "$2"
    # Logs, benchmark TSVs, slot assignments, the small Parquet outputs whose metadata the report
    # reads (not the models, adapters, checkpoints or training data). A run still going, or stopped
    # by the end of a lease, lacks some folders: collect what there is.
    find $study/eval $study/heads $study/causal $study/synth -name '*.parquet' 2> /dev/null > $study/.collect || true
    find $study/logs -type f 2> /dev/null >> $study/.collect || true
    find $study/adapters -name train_curve.parquet 2> /dev/null >> $study/.collect || true
    ls $study/rehearsal_* $study/.gpu_slots/assignments.tsv 2> /dev/null >> $study/.collect || true
    tar czf "$2/paper_rehearsal.tgz" logs .snakemake/log -T $study/.collect 2> /dev/null || true
    ls -la "$2"
    ;;
*)
    echo "usage: $0 setup|start|wait|report|collect ..."; exit 2
    ;;
esac
