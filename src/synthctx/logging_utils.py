"""Route a job's logging and warnings to the rule's log file (and stderr)."""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path

_PEAK_MEMORY_HOOK = False


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> logging.Logger:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        # Truncate once, then append: progress bars opened by progress_stream() append to the
        # same file, and two handles must not overwrite each other's lines.
        open(log_path, "w").close()
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)
    logging.captureWarnings(True)
    global _PEAK_MEMORY_HOOK
    if not _PEAK_MEMORY_HOOK:  # registered after logging's own shutdown hook, so it runs first
        atexit.register(log_peak_gpu_memory)
        _PEAK_MEMORY_HOOK = True
    return logging.getLogger("synthctx")


def log_peak_gpu_memory() -> None:
    """Log the job's peak GPU memory, if it used CUDA: jobs share a card (gpu-small runs 8 at a
    time on one H200), so each job's footprint is what sizes that sharing."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    logging.getLogger("synthctx").info(
        "peak GPU memory: %.2f GiB allocated, %.2f GiB reserved by PyTorch",
        torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30)


def progress_stream(log_path: str | None):
    """tqdm writes to the log file (so a cluster job's progress is visible) or stderr."""
    if log_path:
        return open(log_path, "a", buffering=1)
    return sys.stderr
