"""One GPU per job on a multi-GPU node without a cluster scheduler (benchmarks/paper_rehearsal_device.sh).

Snakemake's local executor counts GPU jobs (``--resources gpu=N``) but does not say which card a job
gets, so every job would use cuda:0. With this directory on PYTHONPATH, every Python process that
runs one of the study's GPU job scripts claims a free slot before anything imports torch: it takes
an exclusive lock on ``$SYNTHCTX_GPU_SLOT_DIR/slot<i>.lock`` (held until the process exits) and
sets ``CUDA_VISIBLE_DEVICES`` to that slot's GPU. Slot i is GPU ``i % SYNTHCTX_GPU_COUNT``, so the
first jobs spread over the cards; with ``SYNTHCTX_GPU_SLOTS`` = GPUs x jobs per GPU, several jobs
can share a card. Other processes (Snakemake itself, CPU jobs) claim nothing. A process that
already sees ``CUDA_VISIBLE_DEVICES`` (a child of a job, or a node that sets it) keeps it.

Each claim is appended to ``$SYNTHCTX_GPU_SLOT_DIR/assignments.tsv`` (time, pid, slot, gpu, script).
"""

from __future__ import annotations

import os
import re
import sys
import time

# The GPU rules' scripts (rules/*.smk): `script:` jobs run as .snakemake/scripts/tmpXXXX.<name>.py.
GPU_SCRIPTS = ("synth_pool", "train_adapter", "evaluate_task", "heads", "niah_heads", "knockout", "patching")
WAIT_LOG_SECONDS = 60
_slot_lock = None  # the claimed slot's lock file, open (locked) for the life of the process


def is_gpu_job(argv0: str, scripts=GPU_SCRIPTS) -> bool:
    name = os.path.basename(argv0)
    return any(re.fullmatch(rf"(?:.*\.)?{re.escape(s)}\.py", name) for s in scripts)


def claim_slot(slot_dir: str, slots: int, gpus: int, script: str, poll: float = 0.5) -> tuple[int, int, object]:
    """Lock the first free slot (waiting while all are taken); returns (slot, gpu, open lock file)."""
    import fcntl

    os.makedirs(slot_dir, exist_ok=True)
    started = next_log = time.time()
    while True:
        for slot in range(slots):
            handle = open(os.path.join(slot_dir, f"slot{slot}.lock"), "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            gpu = slot % gpus
            with open(os.path.join(slot_dir, "assignments.tsv"), "a") as out:
                out.write(f"{time.time():.1f}\t{os.getpid()}\t{slot}\t{gpu}\t{script}\n")
            return slot, gpu, handle
        if time.time() >= next_log + WAIT_LOG_SECONDS:
            next_log = time.time()
            print(f"gpu_slots: {script} waiting {next_log - started:.0f} s for one of {slots} slots", file=sys.stderr)
        time.sleep(poll)


def main() -> None:
    slot_dir = os.environ.get("SYNTHCTX_GPU_SLOT_DIR")
    if not slot_dir or "CUDA_VISIBLE_DEVICES" in os.environ:
        return
    argv0 = (getattr(sys, "argv", None) or [""])[0]
    if not is_gpu_job(argv0):
        return
    gpus = int(os.environ.get("SYNTHCTX_GPU_COUNT", "1"))
    slots = int(os.environ.get("SYNTHCTX_GPU_SLOTS", str(gpus)))
    global _slot_lock
    _, gpu, _slot_lock = claim_slot(slot_dir, slots, gpus, os.path.basename(argv0))
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


main()
