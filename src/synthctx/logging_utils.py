"""Route a job's logging and warnings to the rule's log file (and stderr)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


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
    return logging.getLogger("synthctx")


def progress_stream(log_path: str | None):
    """tqdm writes to the log file (so a cluster job's progress is visible) or stderr."""
    if log_path:
        return open(log_path, "a", buffering=1)
    return sys.stderr
