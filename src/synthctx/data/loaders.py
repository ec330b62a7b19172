"""Shared pieces of the raw-file readers; each task module reads its own dataset's original
format with them (e.g. ``synthctx.tasks.<task>.load_<task>``).

Every malformed input raises :class:`synthctx.schema.ArtifactError` naming the file, the
line (or record id) and the field, before anything is built from it: :func:`read_text`
(gzip and UTF-8 errors), :func:`iter_json_records` (JSON Lines or one JSON array),
:func:`require_field` and :func:`string_field` (a field's presence and type).
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from synthctx.schema import ArtifactError


@dataclass(frozen=True)
class Passage:
    """A titled passage of a retrieval-style dataset."""

    title: str
    text: str
    source_id: str = ""  # the upstream passage id


# --------------------------------------------------------------------------- helpers


def read_text(path: Path) -> str:
    """The whole file as text (gunzipped for ``.gz``); a truncated or non-gzip file, or bytes that
    are not UTF-8, raise ArtifactError naming the file, the line and (JSON) the field."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ArtifactError(f"{path}: not a complete gzip file ({type(err).__name__}: {err}); "
                            "re-download or re-compress it") from err
    except OSError as err:
        raise ArtifactError(f"{path}: cannot be read: {err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line_end = data.find(b"\n", err.start)
        line_no = data.count(b"\n", 0, err.start) + 1
        # The record holding the bad bytes: the line (JSON Lines) or the whole file (one document).
        chunk = data[line_start:line_end if line_end >= 0 else len(data)]
        field = _field_with_undecodable(chunk) or _field_with_undecodable(data)
        where = f"field {field!r}: " if field else ""
        raise ArtifactError(f"{path}: line {line_no}: {where}byte {err.start - line_start} of the line "
                            f"({data[err.start:err.start + 1]!r}) is not UTF-8 ({err.reason})") from err


def _field_with_undecodable(chunk: bytes) -> str:
    """Dotted path of the first JSON string in ``chunk`` holding bytes that are not UTF-8, or ''."""
    try:
        value = json.loads(chunk.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError):
        return ""

    def bad(text: str) -> bool:
        return any("\udc80" <= ch <= "\udcff" for ch in text)

    def find(node: Any, path: str) -> str:
        if isinstance(node, str):
            return path if bad(node) else ""
        if isinstance(node, dict):
            for key, child in node.items():
                here = f"{path}.{key}" if path else key
                if bad(key) or (found := find(child, here)):
                    return here if bad(key) else found
        elif isinstance(node, list):
            for i, child in enumerate(node):
                if found := find(child, f"{path}[{i}]"):
                    return found
        return ""

    return find(value, "")


def require_field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``record[key]``, which must exist and be a ``kind``; ``where`` (file, line) starts the error."""
    if not isinstance(record, dict):
        raise ArtifactError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if key not in record:
        raise ArtifactError(f"{where}: field {key!r} is missing")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ArtifactError(f"{where}: field {key!r} is {type(value).__name__}, expected {kind}")
    return value


def string_field(record: Any, key: str, where: str, allow_empty: bool = False) -> str:
    """``record[key]`` as a string, non-blank unless ``allow_empty``."""
    value = require_field(record, key, str, where)
    if not allow_empty and not value.strip():
        raise ArtifactError(f"{where}: field {key!r} is empty")
    return value


def iter_json_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs of a JSON Lines file or a single JSON array.

    The format is told by the first non-space character (``[`` = array). Locations read
    ``file:line N`` (JSON Lines) or ``file:record N`` (array, 0-based).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: raw data file not found")
    content = read_text(path)
    if content.lstrip()[:1] == "[":
        try:
            records = json.loads(content)
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{path}: line {err.lineno}: invalid JSON array: {err.msg}") from err
        for i, record in enumerate(records):
            yield f"{path}: record {i}", record
        return
    lines = content.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}: line {lineno}", json.loads(line)
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{path}: line {lineno}: invalid JSON: {err.msg}") from err
