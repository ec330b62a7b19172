"""A user's own training set as a study condition (config ``datasets:``, docs/user-datasets.md).

One file per (condition, task), JSON Lines in the documented format or Parquet in the
normalized example schema, is read in place (never written, moved or linked), checked
record by record and written as the condition's training set
``results/{study}/data/{model}/{task}/train/{condition}.parquet``, where the built-in conditions'
sets live, so training, evaluation, heads and the analyses take it unchanged. The first bad
record stops the import with an error naming file, line (or Parquet row) and field, and
nothing is written. The artifact's metadata records the source file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

from synthctx.data.examples import frame_to_examples, make_example, validate_example, write_examples
from synthctx.schema import ArtifactError, read_table
from synthctx.tasks.base import RecordError

log = logging.getLogger("synthctx.data")

# The JSON Lines record (docs/user-datasets.md): required and optional fields.
REQUIRED_FIELDS = ("documents", "question", "answers", "target")
OPTIONAL_FIELDS = ("id", "task", "gold_documents", "needles", "meta")
NEEDLE_FIELDS = ("document", "start", "end", "kind")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_record(record: Any, *, task: str, condition: str, line: int) -> dict[str, Any]:
    """A JSON Lines record as a normalized example (needles and gold documents as given, if any)."""
    if not isinstance(record, dict):
        raise RecordError("(record)", f"expected a JSON object, got {type(record).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise RecordError(name, "missing")
    unknown = sorted(set(record) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise RecordError(unknown[0], f"not a field of the format (fields: {list(REQUIRED_FIELDS + OPTIONAL_FIELDS)})")
    if "task" in record and record["task"] != task:
        raise RecordError("task", f"{record['task']!r} is not this file's task {task!r} (config datasets.{condition}."
                                  f"files.{task})")
    documents = record["documents"]
    if not isinstance(documents, list) or not documents:
        raise RecordError("documents", "expected a non-empty list of {title, text} objects")
    docs = []
    for i, doc in enumerate(documents, start=1):
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"].strip():
            raise RecordError(f"documents[{i}].text", "missing or not a non-empty string")
        if not isinstance(doc.get("title", ""), str):
            raise RecordError(f"documents[{i}].title", "not a string")
        extra = sorted(set(doc) - {"title", "text"})
        if extra:
            raise RecordError(f"documents[{i}].{extra[0]}", "not a document field (title, text)")
        # doc_id = the 1-based position in the prompt, for every task (docs/DESIGN.md)
        docs.append({"doc_id": str(i), "title": doc.get("title", ""), "text": doc["text"]})
    for name in ("question", "target"):
        if not isinstance(record[name], str) or not record[name].strip():
            raise RecordError(name, "missing or not a non-empty string")
    answers = record["answers"]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise RecordError("answers", "expected a non-empty list of non-empty strings")
    gold = record.get("gold_documents") or []
    if not isinstance(gold, list) or not all(isinstance(g, int) and 1 <= g <= len(docs) for g in gold):
        raise RecordError("gold_documents", f"expected 1-based positions of the record's {len(docs)} documents")
    needles = []
    for i, needle in enumerate(record.get("needles") or []):
        if not isinstance(needle, dict) or any(k not in needle for k in NEEDLE_FIELDS):
            raise RecordError(f"needles[{i}]", f"expected an object with {list(NEEDLE_FIELDS)}")
        if not isinstance(needle["document"], int) or not 1 <= needle["document"] <= len(docs):
            raise RecordError(f"needles[{i}].document", f"expected a 1-based position of the {len(docs)} documents")
        for name in ("start", "end"):
            if not isinstance(needle[name], int):
                raise RecordError(f"needles[{i}].{name}", "expected a character offset (an integer)")
        needles.append({"doc_id": str(needle["document"]), "start": needle["start"], "end": needle["end"],
                        "kind": needle["kind"]})
    if needles and not gold:  # the documents holding a given needle are the gold ones
        gold = sorted({int(n["doc_id"]) for n in needles})
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError("meta", "expected a JSON object")
    example_id = str(record.get("id") or f"{condition}-{line:06d}")
    return make_example(example_id=example_id, task=task, condition=condition, split="train", documents=docs,
                        question=record["question"], answers=answers, target=record["target"],
                        gold_doc_ids=[str(g) for g in gold], needles=needles, meta=meta)


def _read_records(source: Path, *, task: str, condition: str):
    """(where, example) per record of a JSON Lines or Parquet file; ``where`` names its line/row."""
    if source.suffix == ".parquet":
        for row, example in enumerate(frame_to_examples(read_table(source, "examples")), start=1):
            where = f"{source}: row {row}"
            if example["task"] != task:
                raise ArtifactError(f"{where}: field 'task' is {example['task']!r}, not this file's task {task!r} "
                                    f"(config datasets.{condition}.files.{task})")
            yield where, {**example, "condition": condition, "split": "train"}
        return
    if source.suffix not in (".jsonl", ".ndjson"):
        raise ArtifactError(f"{source}: unknown format {source.suffix!r} (a user dataset is .jsonl or .parquet; "
                            "docs/user-datasets.md)")
    with open(source, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{source}: line {line}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise ArtifactError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
            try:
                yield where, _json_record(record, task=task, condition=condition, line=line)
            except RecordError as error:
                raise ArtifactError(f"{where}: {error}") from None


def import_user_dataset(source: str | Path, output: str | Path, *, task: str, condition: str, model: str,
                        tokenizer, context_tokens: int, task_config: Mapping[str, Any],
                        expected_sha256: str | None = None) -> list[dict[str, Any]]:
    """Check every record of ``source`` and write them as ``condition``'s training set for ``task``.

    Needles: as the record gives them, else located by the task (``Task.locate_needles``: MDQA
    and MuSiQue find the answers in the documents, SummHay the insight sentence of each cited
    document). Each example must fit ``context_tokens`` (prompt + target with the model's chat
    template). ``task_config``: the ``data.<task>`` keys the task's needle search reads.
    ``expected_sha256`` (the rule's, taken when the workflow was planned): the file must still have it.
    The label is not an input: it is display only, and changing it must not re-train anything.
    """
    from synthctx.data.context import fits_budget
    from synthctx.provenance import provenance
    from synthctx.tasks import get_task

    source = Path(source)
    try:
        spec = get_task(task)
    except ValueError as error:
        raise ArtifactError(f"{source}: config datasets.{condition}.files: {error}") from None
    if not source.is_file():
        raise ArtifactError(f"{source}: no such file (config datasets.{condition}.files.{task})")
    sha256 = file_sha256(source)
    if expected_sha256 and sha256 != expected_sha256:
        raise ArtifactError(f"{source}: changed since the workflow was planned (sha256 {sha256[:12]}, planned "
                            f"{expected_sha256[:12]}); run the workflow again")
    examples, seen = [], {}
    for where, example in _read_records(source, task=task, condition=condition):
        if example["example_id"] in seen:
            raise ArtifactError(f"{where}: field 'id' {example['example_id']!r} repeats {seen[example['example_id']]}")
        seen[example["example_id"]] = where
        if not example["needles"]:
            try:
                gold, needles = spec.locate_needles(example, task_config)
            except RecordError as error:
                raise ArtifactError(f"{where}: {error}") from None
            example["gold_doc_ids"], example["needles"] = [str(g) for g in gold], needles
        validate_example(example, where=where)
        ok, length = fits_budget(example, tokenizer, context_tokens)
        if not ok:
            raise ArtifactError(f"{where}: field 'documents': prompt + target is {length} tokens, over the budget of "
                                f"model {model!r} (models.{model}.context_tokens = {context_tokens}); shorten or drop "
                                "documents")
        example["meta"] = {**example["meta"], "prompt_tokens": length, "source_record": where.rsplit(": ", 1)[1]}
        examples.append(example)
    if not examples:
        raise ArtifactError(f"{source}: no records (config datasets.{condition}.files.{task})")
    meta = provenance(model=model, task=task, condition=condition, kind="user", source=str(source),
                      source_sha256=sha256, examples=len(examples), context_tokens=context_tokens)
    write_examples(examples, str(output), meta)
    log.info("%s/%s: imported %d examples of %s (sha256 %s) as %r", model, task, len(examples), source,
             sha256[:12], condition)
    return examples
