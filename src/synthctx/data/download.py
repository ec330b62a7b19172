"""Fetch the raw datasets from their public locations, pinned and checked (raw_data.local_dir null).

Each file is fetched to ``<output>.part``, its sha256 compared with the one recorded in the
config, and only then renamed to the output: a wrong or unverified file never becomes an
input. A file whose recorded sha256 is null is refused too (the error gives the sha256 it
found, to check and record) unless the config sets ``raw_data.downloads.verify: false``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.request
import zipfile
from pathlib import Path

from synthctx.schema import umask_mode

log = logging.getLogger("synthctx.data")

CHUNK = 1 << 20


def _fetch_to(url: str, part: Path, attempts: int = 3) -> str:
    """Download ``url`` into ``part``; returns its sha256. Retries transient failures."""
    for attempt in range(1, attempts + 1):
        try:
            digest = hashlib.sha256()
            request = urllib.request.Request(url, headers={"User-Agent": "synthctx-download"})
            with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
            return digest.hexdigest()
        except OSError as err:  # URLError, HTTPError, timeouts, resets
            part.unlink(missing_ok=True)
            if attempt == attempts:
                raise RuntimeError(f"{url}: download failed after {attempts} attempts: {err}") from err
            log.warning("%s: attempt %d failed (%s); retrying", url, attempt, err)
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def check_sha256(found: str, expected: str | None, verify: bool, *, what: str, key: str) -> None:
    """Raise unless ``found`` is the recorded ``expected`` (or none is recorded and ``verify`` is off)."""
    if expected:
        if found != str(expected).lower():
            raise ValueError(f"{what}: sha256 {found} does not match {key} {expected}; nothing was kept "
                             "(the upstream file changed, or the pin is wrong)")
        return
    if verify:
        raise ValueError(f"{what}: {key} is not set, so the download cannot be verified; nothing was kept. "
                         f"It had sha256 {found}: check it and record it as {key}, or set "
                         "raw_data.downloads.verify: false to accept unverified downloads")
    log.warning("%s: accepted WITHOUT verification (raw_data.downloads.verify false); sha256 %s", what, found)


def fetch_verified(url: str, out: str | os.PathLike, sha256: str | None, verify: bool = True,
                   key: str = "sha256") -> Path:
    """Download ``url`` to ``out`` if its sha256 checks out (see the module docstring)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    log.info("fetching %s -> %s", url, out)
    found = _fetch_to(url, part)
    try:
        check_sha256(found, sha256, verify, what=url, key=key)
    except BaseException as err:
        part.unlink(missing_ok=True)
        log.error("%s", err)  # in the rule's log too, beside the traceback on stderr
        raise
    os.chmod(part, umask_mode())
    os.replace(part, out)
    log.info("%s: %d bytes, sha256 %s", out, out.stat().st_size, found)
    return out


def extract_member(archive: str | os.PathLike, member: str, out: str | os.PathLike) -> Path:
    """Extract the archive member whose base name is ``member`` (layout-agnostic) to ``out``."""
    archive, out = Path(archive), Path(out)
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if Path(n).name == member and "__MACOSX" not in n]
        if len(names) != 1:
            raise FileNotFoundError(f"{archive}: expected one member named {member}, found {names}")
        part = out.with_name(out.name + ".part")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(names[0]) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    if part.stat().st_size == 0:
        part.unlink()
        raise ValueError(f"{archive}: member {names[0]} is empty")
    os.replace(part, out)
    log.info("extracted %s from %s", out, archive)
    return out
