"""The normalized example (STUDY.md section 2) in memory: build, validate, convert.

In memory an example is a plain dict with the columns of the ``examples`` schema;
``documents`` and ``needles`` are lists of dicts and ``meta`` is a dict (JSON in Parquet).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from synthctx.schema import ArtifactError, read_table, write_table
from synthctx.tasks import task_names

SPLITS = ("eval", "train")
NEEDLE_KINDS = ("answer", "hop1", "hop2", "hop3", "insight", "citation", "value", "key")


def make_example(
    *,
    example_id: str,
    task: str,
    condition: str,
    split: str,
    documents: Sequence[Mapping[str, str]],
    question: str,
    answers: Sequence[str],
    target: str,
    gold_doc_ids: Sequence[str],
    needles: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "example_id": example_id,
        "task": task,
        "condition": condition,
        "split": split,
        "documents": [{"doc_id": str(d["doc_id"]), "title": d.get("title") or "", "text": d["text"]} for d in documents],
        "question": question,
        "answers": list(answers),
        "target": target,
        "gold_doc_ids": [str(g) for g in gold_doc_ids],
        "needles": [
            {"doc_id": str(n["doc_id"]), "start": int(n["start"]), "end": int(n["end"]), "kind": n["kind"]}
            for n in needles
        ],
        "meta": dict(meta or {}),
    }


def validate_example(ex: Mapping[str, Any], where: str = "") -> None:
    """Raise ArtifactError naming the record and field when ``ex`` breaks an invariant.

    Invariants: known task and split; non-empty documents with unique ids; gold ids refer
    to documents; every needle span lies inside its document (or its header for
    citations) and, for answer needles, its text equals one of the answers (up to SQuAD normalization).
    """
    from synthctx.data.prompts import citation_span_in_header
    from synthctx.data.text import answer_matches

    rid = f"{where}: example {ex.get('example_id')!r}" if where else f"example {ex.get('example_id')!r}"
    if ex.get("task") not in task_names():
        raise ArtifactError(f"{rid}: field 'task' is {ex.get('task')!r}, expected one of {task_names()}")
    if ex.get("split") not in SPLITS:
        raise ArtifactError(f"{rid}: field 'split' is {ex.get('split')!r}, expected one of {SPLITS}")
    docs = ex.get("documents") or []
    if len(docs) == 0:
        raise ArtifactError(f"{rid}: field 'documents' is empty")
    ids = [d["doc_id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise ArtifactError(f"{rid}: field 'documents' has duplicate doc_id values")
    by_id = {d["doc_id"]: (i, d) for i, d in enumerate(docs, start=1)}
    for g in ex.get("gold_doc_ids") or []:
        if g not in by_id:
            raise ArtifactError(f"{rid}: field 'gold_doc_ids' names unknown document {g!r}")
    if not ex.get("target"):
        raise ArtifactError(f"{rid}: field 'target' is empty")
    answers = list(ex.get("answers") or [])
    for n in ex.get("needles") or []:
        if n["doc_id"] not in by_id:
            raise ArtifactError(f"{rid}: field 'needles' refers to unknown document {n['doc_id']!r}")
        position, doc = by_id[n["doc_id"]]
        start, end = int(n["start"]), int(n["end"])
        if n["kind"] == "citation":
            if (start, end) != citation_span_in_header(position):
                raise ArtifactError(f"{rid}: field 'needles' citation span {start}:{end} is not the header number")
            continue
        if not (0 <= start < end <= len(doc["text"])):
            raise ArtifactError(f"{rid}: field 'needles' span {start}:{end} outside document {n['doc_id']!r}")
        # Answers are matched case-insensitively in documents, so compare SQuAD-normalized text.
        if n["kind"] == "answer" and answers and not answer_matches(doc["text"][start:end], answers):
            raise ArtifactError(
                f"{rid}: field 'needles' answer span text {doc['text'][start:end]!r} is not one of the answers"
            )


def examples_to_frame(examples: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for ex in examples:
        row = dict(ex)
        row["meta"] = json.dumps(ex.get("meta") or {}, sort_keys=True, ensure_ascii=False)
        rows.append(row)
    from synthctx.schema import SCHEMAS

    return pd.DataFrame(rows, columns=SCHEMAS["examples"].names)


def frame_to_examples(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dict(orient="records"):
        row["documents"] = [dict(d) for d in row["documents"]]
        row["needles"] = [dict(n) for n in row["needles"]]
        row["answers"] = list(row["answers"])
        row["gold_doc_ids"] = list(row["gold_doc_ids"])
        row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        out.append(row)
    return out


def write_examples(examples: Sequence[Mapping[str, Any]], path: str, metadata: Mapping[str, Any] | None = None) -> None:
    """Validate every example, then write them atomically (nothing is written on error)."""
    for ex in examples:
        validate_example(ex, where=str(path))
    write_table(examples_to_frame(examples), path, "examples", metadata)


def read_examples(path: str) -> list[dict[str, Any]]:
    examples = frame_to_examples(read_table(path, "examples"))
    for ex in examples:
        validate_example(ex, where=str(path))
    return examples
