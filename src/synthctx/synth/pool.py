"""The per-task pool of LLM-written documents, generated once and shared by the variants.

Pool items (Parquet kind ``document_pool``; ``fields`` holds the facts each item was asked
to express):

- QA tasks: ``haystack_article`` (an article about a fictional entity) and
  ``needle_article`` (an article about a fact's subject that must state the fact; a chained
  task's facts come in chains of its hop count, ``fields.chain``/``fields.hop``).
- news tasks (SummHay): ``news_document`` (a news report about a fictional topic, JSON headline/body)
  and ``insight_prose`` (an LLM paraphrase of one templated insight that keeps its key
  name and number, and is not a near copy of the templated statement: see
  ``template_overlap``).

Every output is cleaned and validated; items failing validation are retried with a new
seed up to ``attempts`` times, then kept with ``status = reject:<reason>`` (counted, never
used). Finished items are appended to a shard under ``results/{study}/synth/{task}/.partial/`` so
an interrupted run resumes where it stopped; the Parquet file is written atomically last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from synthctx.provenance import derived_seed
from synthctx.synth.backends import Backend, GenerationParams, validate_json
from synthctx.synth.entities import KIND_DESCRIPTIONS, EntityGenerator, Fact, relation_by_name
from synthctx.synth.topics import ASPECTS, Insight, make_topic

log = logging.getLogger("synthctx.synth")

NEWS_SCHEMA = {
    "type": "object",
    "properties": {"headline": {"type": "string"}, "body": {"type": "string"}},
    "required": ["headline", "body"],
    "additionalProperties": False,
}
INSIGHT_SCHEMA = {
    "type": "object",
    "properties": {"sentence": {"type": "string"}},
    "required": ["sentence"],
    "additionalProperties": False,
}
MIN_DOCUMENT_CHARS = 120
# Instructions a small generator sometimes repeats verbatim instead of following them.
PROMPT_ECHOES = ("exactly as written", "use the names", "in your own words", "plain prose", "encyclopedia article")
INSIGHT_MAX_TOKENS = 72
# Share of the pool spent on needle items (the rest is haystack prose), ours.
NEEDLE_SHARE = 2 / 3


def template(name: str) -> str:
    """A prompt template file of ``synthctx/synth/templates``."""
    return resources.files("synthctx.synth").joinpath("templates", f"{name}.txt").read_text().strip()


def clean_text(text: str) -> str:
    """One paragraph of prose: collapse whitespace, drop markdown marks and a cut-off last sentence."""
    text = re.sub(r"[#*_`]+", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    last = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), -1)
    if text and text[-1] not in ".!?\"'" and last > len(text) // 2:
        text = text[: last + 1]
    return text


# ---------------------------------------------------------------- pool plan (what to generate)


# SummHay news documents per topic, relative to a haystack's size: a high-diversity haystack
# draws all its documents from one topic's news, some of which validation may reject.
NEWS_PER_HAYSTACK_DOCUMENT = 1.5


def news_topic_count(pool_size: int, haystack_documents: int | None) -> int:
    """Topics of a SummHay pool: each gets its insights and enough news for one haystack.

    Every topic holds 2 insights per aspect and at least as many news documents, and at least
    ``NEWS_PER_HAYSTACK_DOCUMENT`` x ``haystack_documents`` (the task's config num_documents).
    """
    insights = len(ASPECTS) * 2
    news = max(insights, math.ceil(NEWS_PER_HAYSTACK_DOCUMENT * (haystack_documents or 0)))
    return max(1, pool_size // (insights + news))


def plan_pool(task: str, pool_size: int, seed: int, haystack_documents: int | None = None) -> list[dict[str, Any]]:
    """The items of a task's pool (``Task.plan_pool``): id, kind, prompt, fields; a pure function
    of its arguments. ``haystack_documents`` (news pools only): documents per haystack, which
    sizes the topics.
    """
    from synthctx.tasks import get_task

    spec = get_task(task)
    gen = EntityGenerator(derived_seed(seed, "synth-entities", task))
    items = spec.plan_pool(gen, pool_size, haystack_documents)
    for item in items:
        item["task"] = task
    return items


def _needle_item(task: str, pool_id: str, fact: Fact, **extra: Any) -> dict[str, Any]:
    rel = relation_by_name(fact.relation)
    phrase = rel.phrase.format(s=fact.subject)
    # The fact is worded unlike the templated sentence, so that copying it is detectable.
    prompt = template("needle_article").format(subject=fact.subject, kind=KIND_DESCRIPTIONS[fact.subject_kind],
                                               relation_phrase=phrase, object=fact.object)
    return {"pool_id": pool_id, "kind": "needle_article", "entity": fact.subject, "prompt": prompt,
            "fields": {"fact": fact.to_dict(), **extra}}


# ---------------------------------------------------------------- validation of one output


def _slotted_words(text: str, insight: Insight) -> list[str]:
    """Lower-cased words of ``text``, with the insight's topic, key and number one slot word each.

    Slots are upper-case, so no word of the lower-cased text can equal one.
    """
    text = text.lower()
    for pattern, slot in ((re.escape(insight.topic.lower()), "TOPIC"), (re.escape(insight.key.lower()), "KEY"),
                          (rf"(?<!\d){re.escape(insight.number)}(?!\d)", "NUMBER")):
        text = re.sub(pattern, f" {slot} ", text)
    return re.findall(r"\w+", text)


def _closest_run_distance(pattern: Sequence[str], words: Sequence[str]) -> int:
    """Fewest word insertions, deletions and substitutions that turn some run of consecutive
    ``words`` into ``pattern`` (edit distance with free start and end in ``words``)."""
    previous = [0] * (len(words) + 1)  # the empty pattern matches an empty run anywhere
    for i, p in enumerate(pattern, start=1):
        current = [i] + [0] * len(words)
        for j, w in enumerate(words, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (p != w))
        previous = current
    return min(previous)


def template_overlap(sentence: str, insight: Insight) -> float:
    """How nearly ``sentence`` copies the insight's templated (Simplified) statement, in [0, 1].

    1 - (word edits between the statement and the closest run of consecutive words of the
    sentence) / (words of the statement). 1.0: the statement occurs verbatim (alone or inside a
    longer sentence); one changed word of a 10-word statement: 0.9. The topic name, key and
    number count as one word each: the prompt asks to keep the key and number and the
    validation requires them, so sharing them says nothing about copying. Edit distance rather
    than unigram overlap, because a reworded sentence keeps most of the words (those slots)
    in another order; over runs, so that the statement with a clause appended still counts.
    """
    statement = _slotted_words(insight.statement(), insight)
    return 1.0 - _closest_run_distance(statement, _slotted_words(sentence, insight)) / len(statement)


def validate_output(item: Mapping[str, Any], raw: str,
                    max_template_overlap: float = 1.0) -> tuple[str, dict[str, Any], str | None]:
    """(clean text, extra fields, reject reason or None) for the raw LLM output of ``item``.

    ``max_template_overlap`` (config generation.max_template_overlap): an insight paraphrase
    whose ``template_overlap`` is above it is rejected as ``template_overlap``. The default 1.0
    (no check, for callers outside the workflow) accepts even a verbatim copy.
    """
    kind = item["kind"]
    fields = item["fields"]
    if kind == "news_document":
        obj, reason = validate_json(raw, NEWS_SCHEMA)
        if reason:
            return "", {}, reason
        text = clean_text(obj["body"])
        headline = clean_text(obj["headline"])[:120]
        if len(text) < MIN_DOCUMENT_CHARS:
            return text, {}, "too_short"
        keys = [i["key"] for i in fields["insights"]]
        if any(k in text for k in keys):  # a haystack document must not state an insight by itself
            return text, {}, "mentions_insight_key"
        return text, {"headline": headline}, None
    if kind == "insight_prose":
        obj, reason = validate_json(raw, INSIGHT_SCHEMA)
        if reason:
            return "", {}, reason
        text = clean_text(obj["sentence"])
        ins = fields["insight"]
        if ins["key"] not in text:
            return text, {}, "missing_key"
        if not re.search(rf"(?<!\d){re.escape(ins['number'])}(?!\d)", text):
            return text, {}, "missing_number"
        # A High insight must be prose: a (near) copy of the statement is the Simplified one.
        overlap = round(template_overlap(text, Insight.from_dict(ins)), 4)
        if overlap > max_template_overlap:
            return text, {"template_overlap": overlap}, "template_overlap"
        return text, {"template_overlap": overlap}, None
    text = clean_text(raw)
    if len(text) < MIN_DOCUMENT_CHARS:
        return text, {}, "too_short"
    if any(marker in text.lower() for marker in PROMPT_ECHOES):
        return text, {}, "prompt_echo"
    if kind == "haystack_article":
        if fields["entity"] not in text:
            return text, {}, "missing_entity"
        return text, {}, None
    if kind == "needle_article":
        fact = fields["fact"]
        if fact["subject"] not in text:
            return text, {}, "missing_subject"
        if fact["object"] not in text:
            return text, {}, "missing_object"
        # High concept expression means prose: a copy of the templated statement is a Low needle.
        if Fact.from_dict(fact).sentence().lower() in text.lower():
            return text, {}, "copies_template"
        return text, {}, None
    raise ValueError(f"pool item {item['pool_id']}: unknown kind {kind!r}")


def item_params(item: Mapping[str, Any], params: GenerationParams) -> GenerationParams:
    if item["kind"] == "news_document":
        return params.with_schema(NEWS_SCHEMA)
    if item["kind"] == "insight_prose":
        return GenerationParams(params.temperature, params.top_p, min(INSIGHT_MAX_TOKENS, params.max_new_tokens),
                                params.seed, INSIGHT_SCHEMA)
    return params


# ---------------------------------------------------------------- resumable generation


def settings_fingerprint(task: str, pool_size: int, params: GenerationParams, model: str,
                         haystack_documents: int | None = None, max_template_overlap: float = 1.0,
                         engine: Mapping[str, Any] | None = None, plan: Sequence[Mapping[str, Any]] = (),
                         attempts: int | None = None, batch_size: int | None = None) -> str:
    # Every setting that decides a finished row (its text or its status): a row validated
    # under another overlap bound must not be resumed, nor one written by another backend,
    # dtype, engine setting, model (its files), batching (HF pads within a batch), retry count,
    # or prompt (the planned items hold the rendered templates and their seeded facts).
    engine = dict(engine or {})
    payload = json.dumps({"task": task, "pool_size": pool_size, "temperature": params.temperature,
                          "top_p": params.top_p, "max_new_tokens": params.max_new_tokens, "seed": params.seed,
                          "model": model, "haystack_documents": haystack_documents,
                          "max_template_overlap": max_template_overlap, "engine": engine,
                          "model_files": model_dir_identity(engine.get("generator_model_dir")),
                          "plan": hashlib.sha256(json.dumps(list(plan), sort_keys=True, default=str).encode()).hexdigest(),
                          "attempts": attempts, "batch_size": batch_size,
                          "per_kind": [NEWS_SCHEMA, INSIGHT_SCHEMA, INSIGHT_MAX_TOKENS]}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_dir_identity(model_dir: str | None) -> dict[str, Any]:
    """What identifies the generator's files: the content of its small files (config, tokenizer,
    chat template) and the size and mtime of its weights (hashing many GB on every resume would
    cost minutes; a re-prepared model gets new mtimes, which restarts the pool, the safe side)."""
    if not model_dir or not Path(model_dir).is_dir():
        return {}
    identity = {}
    for f in sorted(Path(model_dir).rglob("*")):
        if not f.is_file():
            continue
        stat = f.stat()
        name = str(f.relative_to(model_dir))
        identity[name] = (hashlib.sha256(f.read_bytes()).hexdigest() if stat.st_size < (1 << 24)
                          else [stat.st_size, stat.st_mtime_ns])
    return identity


class PartialShard:
    """Append-only JSON Lines of finished pool items; its first line pins the settings."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            header = json.loads(lines[0]) if lines else {}
            if header.get("fingerprint") == fingerprint:
                for line in lines[1:]:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by the interruption
                        continue
                    self.done[row["pool_id"]] = row
            else:
                log.info("%s: settings changed, discarding %d partial lines", self.path, max(0, len(lines) - 1))
                self.path.unlink()
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with open(self.path, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                self.done[row["pool_id"]] = dict(row)
            fh.flush()


def generate_pool(
    task: str,
    backend: Backend,
    params: GenerationParams,
    pool_size: int,
    partial_dir: str | Path,
    generator_model: str,
    attempts: int = 2,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    haystack_documents: int | None = None,
    max_template_overlap: float = 1.0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Generate (or resume) the pool of ``task``; returns the document_pool frame and run stats.

    Stats count the items by status (``reject:<reason>``, see ``validate_output``).
    """
    items = plan_pool(task, pool_size, params.seed, haystack_documents)
    shard = PartialShard(Path(partial_dir) / "pool.jsonl",
                         settings_fingerprint(task, pool_size, params, generator_model, haystack_documents,
                                              max_template_overlap, engine=backend.info(), plan=items,
                                              attempts=attempts, batch_size=batch_size))
    resumed = sum(1 for it in items if it["pool_id"] in shard.done)
    pending = [it for it in items if it["pool_id"] not in shard.done]
    log.info("%s pool: %d items planned, %d resumed from %s", task, len(items), resumed, shard.path)
    output_tokens = 0
    for attempt in range(attempts):
        if not pending:
            break
        retry: list[dict[str, Any]] = []
        # Kinds differ in token budget and JSON schema: per-request settings, one batch for all.
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            outs = backend.generate([it["prompt"] for it in batch], [item_params(it, params) for it in batch],
                                    request_ids=[f"{it['pool_id']}#{attempt}" for it in batch])
            output_tokens += getattr(backend, "last_output_tokens", 0)
            finished = []
            for it, raw in zip(batch, outs):
                text, extra, reason = validate_output(it, raw, max_template_overlap)
                if reason is None or attempt == attempts - 1:
                    finished.append(_pool_row(it, text, extra, reason, attempt))
                else:
                    retry.append(it)
            shard.append(finished)
            if progress:
                progress(len(finished))
        pending = retry
    rows = [shard.done[it["pool_id"]] for it in items]
    frame = pd.DataFrame([{k: r[k] for k in ("pool_id", "task", "kind", "entity", "prompt", "text", "fields",
                                             "status")} for r in rows])
    stats = {"planned": len(items), "resumed": resumed, "output_tokens": output_tokens,
             "ok": int((frame["status"] == "ok").sum())}
    for status, count in frame["status"].value_counts().items():
        if status != "ok":
            stats[status] = int(count)
    return frame, stats


def _pool_row(item, text, extra, reason, attempt) -> dict[str, Any]:
    fields = {**item["fields"], **extra, "attempt": attempt}
    return {"pool_id": item["pool_id"], "task": item["task"], "kind": item["kind"], "entity": item["entity"],
            "prompt": item["prompt"], "text": text, "fields": json.dumps(fields, sort_keys=True, ensure_ascii=False),
            "status": "ok" if reason is None else f"reject:{reason}"}


def build_pool_file(task: str, out_path: str, model_dir: str, generator_model: str, backend: str, seed: int,
                    pool_size: int, temperature: float, top_p: float, max_new_tokens: int,
                    dtype: str = "float32", vllm_settings: Mapping[str, Any] | None = None,
                    attempts: int = 2, request_batch: int = 32, haystack_documents: int | None = None,
                    max_template_overlap: float = 1.0, log_path: str | None = None) -> dict[str, Any]:
    """Generate (resuming if interrupted) ``results/{study}/synth/{task}/pool.parquet``; returns run stats."""
    import shutil
    import time

    from tqdm import tqdm

    from synthctx.logging_utils import progress_stream, setup_logging
    from synthctx.provenance import provenance
    from synthctx.schema import write_table
    from synthctx.synth.backends import make_backend

    setup_logging(log_path)
    out = Path(out_path)
    partial_dir = out.parent / ".partial"
    params = GenerationParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    started = time.time()
    engine = make_backend(backend, model_dir, seed=seed, dtype=dtype, vllm_settings=vllm_settings,
                          batch_size=request_batch)
    engine_seconds = time.time() - started
    log.info("%s backend ready in %.1f s", backend, engine_seconds)
    stream = progress_stream(log_path)
    with tqdm(total=len(plan_pool(task, pool_size, seed, haystack_documents)), desc=f"pool {task}",
              file=stream) as bar:
        frame, stats = generate_pool(task, engine, params, pool_size, partial_dir, generator_model,
                                     attempts=attempts, batch_size=request_batch, progress=bar.update,
                                     haystack_documents=haystack_documents,
                                     max_template_overlap=max_template_overlap)
    stats.update(engine_seconds=round(engine_seconds, 1), total_seconds=round(time.time() - started, 1))
    meta = provenance(seed=seed, generator_model=generator_model, task=task, pool_size=pool_size,
                      haystack_documents=haystack_documents, max_template_overlap=max_template_overlap,
                      sampling={"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens},
                      attempts=attempts, request_batch=request_batch, stats=stats, **engine.info())
    write_table(frame, out, "document_pool", meta)
    shutil.rmtree(partial_dir, ignore_errors=True)
    log.info("%s pool written to %s: %s", task, out, stats)
    engine.close()
    return stats
