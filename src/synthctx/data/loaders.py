"""Readers of the three datasets in their ORIGINAL formats, into checked raw records.

- MDQA (Lost in the Middle): gzipped or plain JSON Lines; each line has ``question``,
  ``answers`` and ``ctxs`` (``title``, ``text``, ``isgold``, ``hasanswer``...).
- MuSiQue (official v1.0 records): JSON Lines, or one JSON array of the same records
  (told apart by the first non-space character).
- SummHay: one JSON object per haystack with ``subtopics[].insights[]``,
  ``subtopics[].query``, ``documents[].document_text`` and ``documents[].insights_included``.

Every malformed input raises :class:`synthctx.schema.ArtifactError` naming the file, the
line (or record id) and the field, before anything is built from it.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from synthctx.data.text import find_answer_spans
from synthctx.schema import ArtifactError


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    source_id: str = ""  # the upstream passage id (MDQA ctx id, MuSiQue paragraph idx)


@dataclass(frozen=True)
class MdqaRecord:
    record_id: str  # mdqa-<0-based line index>: stable across files that share a prefix
    question: str
    answers: tuple[str, ...]
    gold: Passage
    distractors: tuple[Passage, ...]  # retrieval order


@dataclass(frozen=True)
class Hop:
    question: str
    answer: str
    support_idx: int
    hop_id: str  # the single-hop question's id (question_decomposition[].id), shared across composed questions


@dataclass(frozen=True)
class MusiqueRecord:
    record_id: str
    question: str
    answer: str
    aliases: tuple[str, ...]
    paragraphs: tuple[Passage, ...]  # source_id = str(idx)
    supporting: tuple[int, ...]  # positions in `paragraphs`
    decomposition: tuple[Hop, ...]
    hops: int  # from the id prefix: 2hop, 3hop1, 4hop2...
    answerable: bool
    source_file: str


@dataclass(frozen=True)
class Insight:
    insight_id: str
    text: str


@dataclass(frozen=True)
class Subtopic:
    subtopic_id: str
    query: str
    insights: tuple[Insight, ...]


@dataclass(frozen=True)
class HaystackDocument:
    document_id: str
    position: int  # 1-based file position (SummHay's citation number)
    text: str
    insights: frozenset[str]


@dataclass(frozen=True)
class Haystack:
    topic_id: str
    topic: str
    subtopics: tuple[Subtopic, ...]
    documents: tuple[HaystackDocument, ...]
    source_file: str


# --------------------------------------------------------------------------- helpers


def _read_text(path: Path) -> str:
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


def _require(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(record, dict):
        raise ArtifactError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if key not in record:
        raise ArtifactError(f"{where}: field {key!r} is missing")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ArtifactError(f"{where}: field {key!r} is {type(value).__name__}, expected {kind}")
    return value


def _string(record: Any, key: str, where: str, allow_empty: bool = False) -> str:
    value = _require(record, key, str, where)
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
    content = _read_text(path)
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


# --------------------------------------------------------------------------- MDQA


def load_mdqa(path: str | Path) -> list[MdqaRecord]:
    """Lost-in-the-Middle MDQA records; the gold passage must contain an answer."""
    records = []
    for index, (where, raw) in enumerate(iter_json_records(path)):
        question = _string(raw, "question", where)
        answers = _require(raw, "answers", list, where)
        answers = tuple(a for a in answers if isinstance(a, str) and a.strip())
        if not answers:
            raise ArtifactError(f"{where}: field 'answers' has no non-empty answer string")
        ctxs = _require(raw, "ctxs", list, where)
        if not ctxs:
            raise ArtifactError(f"{where}: field 'ctxs' is empty (no documents)")
        gold, distractors = None, []
        for j, ctx in enumerate(ctxs):
            cwhere = f"{where}: ctxs[{j}]"
            passage = Passage(
                title=_string(ctx, "title", cwhere, allow_empty=True),
                text=_string(ctx, "text", cwhere),
                source_id=str(ctx.get("id", "")) if isinstance(ctx, dict) else "",
            )
            is_gold = _require(ctx, "isgold", bool, cwhere)
            if is_gold:
                if gold is not None:
                    raise ArtifactError(f"{cwhere}: field 'isgold' is true for a second passage")
                gold = passage
            else:
                # Distractors must not contain the answer (upstream keeps hasanswer == false only).
                if _require(ctx, "hasanswer", bool, cwhere):
                    raise ArtifactError(f"{cwhere}: field 'hasanswer' is true for a non-gold passage")
                distractors.append(passage)
        if gold is None:
            raise ArtifactError(f"{where}: field 'ctxs' has no passage with isgold == true")
        if not find_answer_spans(gold.text, answers):
            raise ArtifactError(f"{where}: field 'answers': no answer {list(answers)!r} occurs in the gold passage text")
        records.append(
            MdqaRecord(f"mdqa-{index:05d}", question, answers, gold, tuple(distractors))
        )
    if not records:
        raise ArtifactError(f"{path}: no records")
    return records


# --------------------------------------------------------------------------- MuSiQue

_HOP_PREFIX = re.compile(r"^(\d)hop")


def load_musique(path: str | Path) -> list[MusiqueRecord]:
    """Official MuSiQue v1.0 records (JSON Lines or one JSON array)."""
    records = []
    for where, raw in iter_json_records(path):
        rid = _string(raw, "id", where)
        where = f"{where} (id {rid})"
        prefix = _HOP_PREFIX.match(rid)
        if not prefix:
            raise ArtifactError(f"{where}: field 'id' has no hop prefix (2hop, 3hop1, ...)")
        paragraphs_raw = _require(raw, "paragraphs", list, where)
        if not paragraphs_raw:
            raise ArtifactError(f"{where}: field 'paragraphs' is empty")
        paragraphs, supporting, by_idx = [], [], {}
        for j, p in enumerate(paragraphs_raw):
            pwhere = f"{where}: paragraphs[{j}]"
            idx = _require(p, "idx", int, pwhere)
            paragraphs.append(
                Passage(
                    title=_string(p, "title", pwhere, allow_empty=True),
                    text=_string(p, "paragraph_text", pwhere),
                    source_id=str(idx),
                )
            )
            if _require(p, "is_supporting", bool, pwhere):
                supporting.append(j)
            by_idx[idx] = j
        hops = []
        for k, step in enumerate(_require(raw, "question_decomposition", list, where)):
            swhere = f"{where}: question_decomposition[{k}]"
            support = _require(step, "paragraph_support_idx", (int, type(None)), swhere)
            if support is not None and support not in by_idx:
                raise ArtifactError(f"{swhere}: field 'paragraph_support_idx' {support} names no paragraph idx")
            hop_id = _require(step, "id", (int, str), swhere)
            hops.append(
                Hop(
                    question=_string(step, "question", swhere),
                    answer=_string(step, "answer", swhere, allow_empty=True),
                    support_idx=by_idx[support] if support is not None else -1,
                    hop_id=str(hop_id),
                )
            )
        aliases = raw.get("answer_aliases", []) if isinstance(raw, dict) else []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ArtifactError(f"{where}: field 'answer_aliases' is not a list of strings")
        answerable = raw.get("answerable", True)
        if not isinstance(answerable, bool):
            raise ArtifactError(f"{where}: field 'answerable' is not a boolean")
        records.append(
            MusiqueRecord(
                record_id=rid,
                question=_string(raw, "question", where),
                answer=_string(raw, "answer", where, allow_empty=not answerable),
                aliases=tuple(a for a in aliases if a.strip()),
                paragraphs=tuple(paragraphs),
                supporting=tuple(supporting),
                decomposition=tuple(hops),
                hops=int(prefix.group(1)),
                answerable=answerable,
                source_file=str(path),
            )
        )
    if not records:
        raise ArtifactError(f"{path}: no records")
    return records


def load_musique_files(paths) -> list[MusiqueRecord]:
    """All records of several MuSiQue files; an id in two files is an error."""
    seen: dict[str, str] = {}
    out = []
    for path in paths:
        for rec in load_musique(path):
            if rec.record_id in seen:
                raise ArtifactError(f"{path}: id {rec.record_id}: field 'id' also occurs in {seen[rec.record_id]}")
            seen[rec.record_id] = str(path)
            out.append(rec)
    return out


# --------------------------------------------------------------------------- SummHay


def load_summhay(path: str | Path) -> Haystack:
    """One SummHay haystack (topic_*.json)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: raw data file not found")
    try:
        raw = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from err
    where = str(path)
    topic_id = _string(raw, "topic_id", where)
    where = f"{path} (topic {topic_id})"
    subtopics = []
    for i, st in enumerate(_require(raw, "subtopics", list, where)):
        swhere = f"{where}: subtopics[{i}]"
        insights = []
        for j, ins in enumerate(_require(st, "insights", list, swhere)):
            iwhere = f"{swhere}: insights[{j}]"
            insights.append(Insight(_string(ins, "insight_id", iwhere), _string(ins, "insight", iwhere)))
        subtopics.append(
            Subtopic(
                subtopic_id=_string(st, "subtopic_id", swhere),
                query=_string(st, "query", swhere),
                insights=tuple(insights),
            )
        )
    if not subtopics:
        raise ArtifactError(f"{where}: field 'subtopics' is empty")
    documents = []
    docs_raw = _require(raw, "documents", list, where)
    if not docs_raw:
        raise ArtifactError(f"{where}: field 'documents' is empty")
    for k, doc in enumerate(docs_raw):
        dwhere = f"{where}: documents[{k}]"
        included = _require(doc, "insights_included", list, dwhere)
        if not all(isinstance(x, str) for x in included):
            raise ArtifactError(f"{dwhere}: field 'insights_included' is not a list of insight ids")
        documents.append(
            HaystackDocument(
                document_id=str(doc.get("document_id", k)),
                position=k + 1,
                text=_string(doc, "document_text", dwhere),
                insights=frozenset(included),
            )
        )
    return Haystack(
        topic_id=topic_id,
        topic=str(raw.get("topic", "")),
        subtopics=tuple(subtopics),
        documents=tuple(documents),
        source_file=str(path),
    )


def load_summhay_files(paths) -> list[Haystack]:
    haystacks = [load_summhay(p) for p in paths]
    seen: dict[str, str] = {}
    for h in haystacks:
        if h.topic_id in seen:
            raise ArtifactError(f"{h.source_file}: field 'topic_id' {h.topic_id} also in {seen[h.topic_id]}")
        seen[h.topic_id] = h.source_file
    return haystacks
