"""SummHay Citation (Laban et al. 2024): given a haystack excerpt, a subtopic query and an
insight, cite every document that contains the insight. Table 1 metric: citation F1."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from synthctx.data.context import UNSPLIT, Built, Candidate, fit_to_budget, seeded_rng
from synthctx.data.examples import make_example
from synthctx.data.loaders import read_text, require_field, string_field
from synthctx.data.prompts import citation_span_in_header, citation_target
from synthctx.data.text import best_matching_sentence, split_sentences
from synthctx.schema import ArtifactError
from synthctx.tasks import register_task
from synthctx.tasks.base import Task

# Fixed F1 bands of the insight-match shares in the stats, comparable across settings.
INSIGHT_MATCH_BANDS = (0.5, 0.75, 1.0)


# --------------------------------------------------------------------------- raw records
# One JSON object per haystack with `subtopics[].insights[]`, `subtopics[].query`,
# `documents[].document_text` and `documents[].insights_included`.


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


def load_summhay(path: str | Path) -> Haystack:
    """One SummHay haystack (topic_*.json)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: raw data file not found")
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from err
    where = str(path)
    topic_id = string_field(raw, "topic_id", where)
    where = f"{path} (topic {topic_id})"
    subtopics = []
    for i, st in enumerate(require_field(raw, "subtopics", list, where)):
        swhere = f"{where}: subtopics[{i}]"
        insights = []
        for j, ins in enumerate(require_field(st, "insights", list, swhere)):
            iwhere = f"{swhere}: insights[{j}]"
            insights.append(Insight(string_field(ins, "insight_id", iwhere), string_field(ins, "insight", iwhere)))
        subtopics.append(
            Subtopic(
                subtopic_id=string_field(st, "subtopic_id", swhere),
                query=string_field(st, "query", swhere),
                insights=tuple(insights),
            )
        )
    if not subtopics:
        raise ArtifactError(f"{where}: field 'subtopics' is empty")
    documents = []
    docs_raw = require_field(raw, "documents", list, where)
    if not docs_raw:
        raise ArtifactError(f"{where}: field 'documents' is empty")
    for k, doc in enumerate(docs_raw):
        dwhere = f"{where}: documents[{k}]"
        included = require_field(doc, "insights_included", list, dwhere)
        if not all(isinstance(x, str) for x in included):
            raise ArtifactError(f"{dwhere}: field 'insights_included' is not a list of insight ids")
        documents.append(
            HaystackDocument(
                document_id=str(doc.get("document_id", k)),
                position=k + 1,
                text=string_field(doc, "document_text", dwhere),
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


# --------------------------------------------------------------------------- examples


@dataclass
class _Excerpt:
    document: HaystackDocument
    sentences: list[tuple[int, int]]
    insight_index: int  # -1 for non-gold documents
    insight_f1: float
    offset: float  # seeded fraction placing the window


def _window(excerpt: _Excerpt, size: int) -> tuple[int, int]:
    """Sentence window [lo, hi) of ``size`` sentences; gold windows keep the insight sentence."""
    n = len(excerpt.sentences)
    size = min(size, n)
    if excerpt.insight_index >= 0:
        lo_min, lo_max = max(0, excerpt.insight_index - size + 1), min(excerpt.insight_index, n - size)
    else:
        lo_min, lo_max = 0, n - size
    lo = lo_min + min(int(excerpt.offset * (lo_max - lo_min + 1)), lo_max - lo_min)
    return lo, lo + size


def excerpt_text(excerpt: _Excerpt, size: int) -> tuple[str, tuple[int, int] | None]:
    """The excerpt text (sentences joined by single spaces) and the insight sentence span in it."""
    lo, hi = _window(excerpt, size)
    parts, span, cursor = [], None, 0
    text = excerpt.document.text
    for i in range(lo, hi):
        a, b = excerpt.sentences[i]
        if parts:
            cursor += 1
        if i == excerpt.insight_index:
            span = (cursor, cursor + (b - a))
        parts.append(text[a:b])
        cursor += b - a
    return " ".join(parts), span


def summhay_candidates(
    haystack: Haystack,
    *,
    seed: int,
    num_documents: int,
    max_gold_documents: int,
    excerpt_sentences: int,
    min_insight_match: float,
    tokenizer,
    context_tokens: int,
) -> list[Candidate]:
    """One candidate per (subtopic, insight) of ``haystack``."""
    out = []
    for subtopic in haystack.subtopics:
        for insight in subtopic.insights:
            example_id = f"summhay-{haystack.topic_id}-{insight.insight_id}"
            out.append(
                Candidate(
                    example_id=example_id,
                    group=haystack.topic_id,
                    build=(
                        lambda st=subtopic, ins=insight, eid=example_id: build_summhay(
                            haystack, st, ins, eid, seed=seed, num_documents=num_documents,
                            max_gold_documents=max_gold_documents, excerpt_sentences=excerpt_sentences,
                            min_insight_match=min_insight_match, tokenizer=tokenizer, context_tokens=context_tokens,
                        )
                    ),
                )
            )
    return out


def build_summhay(
    haystack: Haystack,
    subtopic,
    insight,
    example_id: str,
    *,
    seed: int,
    num_documents: int,
    max_gold_documents: int,
    excerpt_sentences: int,
    min_insight_match: float,
    tokenizer,
    context_tokens: int,
) -> Built:
    """Gold excerpts (keeping the insight sentence) mixed with non-gold excerpts, shuffled.

    A gold document whose best-matching sentence has a unigram F1 below
    ``min_insight_match`` with the insight is left out of the example altogether (it
    would be a needle that does not state the insight, and as a non-gold document a
    wrong citation target); an insight with no gold document left is dropped (reason
    ``weak_insight_match``). Fitting order: excerpts shrink one sentence at a time (down
    to one sentence), then non-gold documents are dropped (last drawn first).
    """
    gold_docs = [d for d in haystack.documents if insight.insight_id in d.insights]
    if not gold_docs:
        return Built(None, "no_gold_documents")
    matches = [best_matching_sentence(d.text, insight.text) for d in gold_docs]
    scores = tuple(f1 for _, f1 in matches)
    strong = [(d, index, f1) for d, (index, f1) in zip(gold_docs, matches) if f1 >= min_insight_match]
    if not strong:
        return Built(None, "weak_insight_match", scores)
    others = [d for d in haystack.documents if insight.insight_id not in d.insights]
    rng = seeded_rng(seed, "summhay", example_id)
    n_gold = min(max_gold_documents, len(strong), num_documents)
    chosen_gold = rng.sample(strong, n_gold)
    chosen_other = rng.sample(others, min(num_documents - n_gold, len(others)))
    excerpts = []
    for doc, index, f1 in chosen_gold:
        excerpts.append(_Excerpt(doc, split_sentences(doc.text), index, f1, rng.random()))
    for doc in chosen_other:
        excerpts.append(_Excerpt(doc, split_sentences(doc.text), -1, 0.0, rng.random()))
    slots = list(range(len(excerpts)))
    rng.shuffle(slots)

    def compose(size: int, n_other: int) -> dict[str, Any]:
        kept = list(zip(slots, excerpts))[: n_gold + n_other]
        kept.sort(key=lambda pair: pair[0])
        documents, needles, gold_ids, insight_f1, source_positions = [], [], [], [], []
        for position, (_, ex) in enumerate(kept, start=1):
            text, span = excerpt_text(ex, size)
            documents.append({"doc_id": str(position), "title": "", "text": text})
            source_positions.append(ex.document.position)
            if ex.insight_index >= 0:
                gold_ids.append(str(position))
                insight_f1.append(round(ex.insight_f1, 4))
                needles.append({"doc_id": str(position), "start": span[0], "end": span[1], "kind": "insight"})
                a, b = citation_span_in_header(position)
                needles.append({"doc_id": str(position), "start": a, "end": b, "kind": "citation"})
        target = citation_target(gold_ids)
        return make_example(
            example_id=example_id,
            task="summhay",
            documents=documents,
            question=insight.text,
            answers=[target],
            target=target,
            gold_doc_ids=gold_ids,
            needles=needles,
            meta={
                "query": subtopic.query,
                "topic_id": haystack.topic_id,
                "subtopic_id": subtopic.subtopic_id,
                "insight_id": insight.insight_id,
                "source_file": Path(haystack.source_file).name,  # by name: the data must not depend on where it lies
                "source_positions": source_positions,
                "source_document_ids": [ex.document.document_id for _, ex in kept],
                "insight_f1": insight_f1,
                "excerpt_sentences": size,
                "num_documents": len(documents),
                "gold_positions": [int(g) - 1 for g in gold_ids],
                "gold_available": len(gold_docs),
                "gold_below_match": len(gold_docs) - len(strong),
            },
            **UNSPLIT,
        )

    def variants() -> Iterator[dict[str, Any]]:
        for size in range(excerpt_sentences, 0, -1):
            yield compose(size, len(chosen_other))
        for n_other in range(len(chosen_other) - 1, -1, -1):
            yield compose(1, n_other)

    example, _ = fit_to_budget(variants(), tokenizer, context_tokens)
    return Built(example, "" if example else "budget", scores)


class SummHay(Task):
    name = "summhay"
    # The paper's numbers for the claims page (Llama-3-8B-Instruct / Mistral-7B-Instruct-v0.1;
    # STUDY.md section 8, paper-method.md section 6), keyed by claim id or "claim:subject".
    paper_numbers = {
        "C1": "0.81 vs 0.79 / 0.40 vs 0.38",
        "C2": "0.79 vs 0.40 / 0.38 vs 0.07",
        "C6": "High x High 0.70 -> 0.75 Inter., 0.79 Rand.; not significant on SummHay",
    }
    title = "SummHay"
    metric_description = "SummHay citation F1"
    concept_labels = {"low": "Simplified"}  # the paper's name of the low-expression needle
    instruction = (
        "Below are documents, a query and an insight. Cite every document that contains the insight, "
        "as bracketed document numbers such as [1][4]. Answer with the citations only."
    )
    # Closed book: the query and the insight without the documents. The target stays the gold
    # citations, which name documents of the prompt: without them no answer can be right.
    closed_book_instruction = (
        "Below are a query and an insight. Cite every document that contains the insight, "
        "as bracketed document numbers such as [1][4]. Answer with the citations only."
    )
    closed_book_note = ("the gold citations are numbers of documents the closed-book prompt does not show, so no "
                        "answer can be right: any credit comes from guessing document numbers (the trivial "
                        "baseline measures that), not from memory")
    primary_needle = "insight"
    head_kinds = {"retrieval": ("citation",), "insight": ("insight",)}
    cross_task_rows = (("summhay_insight", "insight"), ("summhay_retrieval", "retrieval"))
    trivial_description = "citing every document of the prompt"
    synth_data_keys = ("num_documents", "max_gold_documents")
    raw_schema = {"type": "object", "additionalProperties": False, "required": ["files"],
                  "properties": {"files": {"type": "array", "minItems": 2, "items": {"type": "string"}}}}
    data_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["eval_haystacks", "num_documents", "max_gold_documents", "excerpt_sentences",
                     "min_insight_match"],
        "properties": {
            "eval_haystacks": {"type": "integer", "minimum": 1},
            # topic ids of the eval haystacks; null: the eval_haystacks with the smallest seeded hash
            "eval_haystack_ids": {"type": ["array", "null"], "minItems": 1, "uniqueItems": True,
                                  "items": {"type": "string"}},
            "num_documents": {"type": "integer", "minimum": 2},
            "max_gold_documents": {"type": "integer", "minimum": 1},
            "excerpt_sentences": {"type": "integer", "minimum": 1},
            "min_insight_match": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }

    @property
    def variant_builder(self):
        from synthctx.synth.variants import CitationBuilder

        return CitationBuilder

    def load_candidates(self, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                        context_tokens: int, counts: Counter):
        haystacks = load_summhay_files(raw_files)
        counts["raw_records"] = sum(len(s.insights) for h in haystacks for s in h.subtopics)
        counts["haystacks"] = len(haystacks)
        out = []
        for h in haystacks:
            out += summhay_candidates(
                h, seed=seed, num_documents=int(task_config["num_documents"]),
                max_gold_documents=int(task_config["max_gold_documents"]),
                excerpt_sentences=int(task_config["excerpt_sentences"]),
                min_insight_match=float(task_config["min_insight_match"]),
                tokenizer=tokenizer, context_tokens=context_tokens,
            )
        return out, {"haystack_ids": [h.topic_id for h in haystacks], "files": list(raw_files)}

    def split(self, candidates, extra, *, task_config, seed, eval_examples, max_train_examples, build, dropped,
              update, counts):
        """Split by haystack (every candidate's group is its haystack): the haystacks of
        ``eval_haystack_ids``, or (null) the ``eval_haystacks`` with the smallest seeded hash."""
        from synthctx.data import splits
        from synthctx.data.build import heldout_group_split

        eval_groups = set(eval_haystack_ids(task_config, extra["haystack_ids"], extra["files"]) or
                          splits.heldout_groups([c.group for c in candidates], int(task_config["eval_haystacks"]),
                                                seed))
        counts["eval_haystacks"] = len(eval_groups)
        return heldout_group_split(candidates, eval_groups, seed=seed, eval_examples=eval_examples,
                                   max_train_examples=max_train_examples, build=build, dropped=dropped, update=update)

    def real_counts(self, counts, dropped, task_config, insight_matches) -> None:
        from synthctx.data.stats import describe

        minimum = float(task_config["min_insight_match"])
        counts["dropped_weak_insight_match"] = dropped.get("weak_insight_match", 0)
        counts["insight_documents_scored"] = len(insight_matches)
        counts["insight_documents_below_match"] = sum(1 for f in insight_matches if f < minimum)
        counts.update(describe(insight_matches, "insight_match_scored"))

    def set_stats(self, examples) -> dict[str, float]:
        """How well the insight needles state their insight (best-sentence unigram F1)."""
        from synthctx.data.stats import describe

        # Real examples only: a synthetic insight needle is the insight itself (no F1 to report).
        examples = [ex for ex in examples if "insight_f1" in ex["meta"]]
        if not examples:
            return {}
        stats: dict[str, float] = {}
        matches = [f for ex in examples for f in ex["meta"]["insight_f1"]]
        stats.update(describe(matches, "insight_match"))
        for threshold in INSIGHT_MATCH_BANDS:
            stats[f"insight_match_share_below_{threshold}"] = (
                sum(1 for f in matches if f < threshold) / len(matches) if matches else 0.0
            )
        return stats

    needle_data_keys = ("min_insight_match",)

    def locate_needles(self, example, task_config):
        """Gold documents from the record (or the citations of its target); per gold document an
        ``insight`` needle on its best-matching sentence of the insight (the question; unigram F1
        at least ``data.summhay.min_insight_match``, as for the real data) and a ``citation``
        needle on its header number."""
        import re

        from synthctx.data.prompts import citation_span_in_header, citation_target
        from synthctx.data.text import best_matching_sentence, split_sentences
        from synthctx.tasks.base import RecordError

        positions = {d["doc_id"]: i for i, d in enumerate(example["documents"], start=1)}
        gold = list(example.get("gold_doc_ids") or re.findall(r"\[(\d+)\]", example["target"]))
        if not gold:
            raise RecordError("target", f"{example['target']!r} cites no document (SummHay targets are citations "
                                        "such as [2][5]; or give gold_documents)")
        for g in gold:
            if g not in positions:
                raise RecordError("target", f"cites document {g}, but the record has {len(positions)} documents")
        if example["target"] != citation_target(gold):
            raise RecordError("target", f"{example['target']!r} is not the citation of the gold documents "
                                        f"{citation_target(gold)!r}")
        minimum = float(task_config["min_insight_match"])
        needles = []
        for g in sorted(set(gold), key=int):
            text = example["documents"][positions[g] - 1]["text"]
            index, f1 = best_matching_sentence(text, example["question"])
            if index < 0 or f1 < minimum:
                raise RecordError("question", f"gold document {g} has no sentence stating the insight (best unigram "
                                              f"F1 {f1:.2f} < data.summhay.min_insight_match {minimum})")
            a, b = split_sentences(text)[index]
            needles.append({"doc_id": g, "start": a, "end": b, "kind": "insight"})
            start, end = citation_span_in_header(positions[g])
            needles.append({"doc_id": g, "start": start, "end": end, "kind": "citation"})
        return sorted(set(gold), key=int), needles

    def question_block(self, example: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        return f"\nQuery: {meta.get('query', '')}\nInsight: {example['question']}\nCitations:"

    def score(self, prediction: str, example: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        from synthctx.evaluate.metrics import _as_list, citation_scores

        metrics = citation_scores(prediction, _as_list(example.get("gold_doc_ids")))
        return metrics["citation_f1"], metrics

    def trivial_predictions(self, eval_examples, train_examples) -> list[str]:
        from synthctx.evaluate.baselines import cite_all_prediction

        return [cite_all_prediction(ex) for ex in eval_examples]

    def pool_settings(self, config: Mapping[str, Any]) -> dict[str, Any]:
        # SummHay sizes its topics for one haystack of news; only it has insight paraphrases.
        return {"haystack_documents": config["data"][self.name]["num_documents"],
                "max_template_overlap": config["generation"]["max_template_overlap"]}

    def plan_pool(self, gen, pool_size: int, haystack_documents: int | None) -> list[dict[str, Any]]:
        from synthctx.synth.pool import news_topic_count, template
        from synthctx.synth.topics import ASPECTS, make_topic

        items: list[dict[str, Any]] = []
        topics = [make_topic(gen, f"topic{t}") for t in range(news_topic_count(pool_size, haystack_documents))]
        for topic in topics:
            for ins in topic.insights:
                prompt = template("insight_prose").format(key=ins.key, number=ins.number, statement=ins.statement())
                items.append({"pool_id": f"{self.name}-{ins.insight_id}", "kind": "insight_prose", "entity": ins.key,
                              "prompt": prompt, "fields": {"insight": ins.to_dict(), "topic_id": topic.topic_id}})
        n_news = max(len(topics), pool_size - len(items))
        for i in range(n_news):
            topic = topics[i % len(topics)]
            aspect = ASPECTS[(i // len(topics)) % len(ASPECTS)][0]
            prompt = template("news_document").format(topic=topic.name, place=topic.place, aspect=aspect)
            items.append({"pool_id": f"{self.name}-news{i:03d}", "kind": "news_document", "entity": topic.name,
                          "prompt": prompt,
                          "fields": {"topic_id": topic.topic_id, "topic": topic.name, "place": topic.place,
                                     "aspect": aspect,
                                     "insights": [ins.to_dict() for ins in topic.insights]}})
        return items

    def finalize_synthetic(self, draft, gold_ids, needles, answers, target):
        from synthctx.data.prompts import citation_span_in_header, citation_target

        target = citation_target(gold_ids)
        for g in sorted(draft.gold):
            a, b = citation_span_in_header(g + 1)
            needles.append({"doc_id": str(g + 1), "start": a, "end": b, "kind": "citation"})
        return [target], target

    def check_draft(self, draft, kinds: Counter) -> None:
        from synthctx.synth.variants import Reject

        key = draft.meta.get("insight_key") or " ".join(draft.meta.get("pattern", []))
        containing = {i for i, d in enumerate(draft.documents) if key in d["text"]}
        if containing != set(draft.gold) or kinds["insight"] != len(draft.gold):
            raise Reject("target_not_derivable")


def eval_haystack_ids(task_config: Mapping[str, Any], loaded: Sequence[str], files: Sequence[str]) -> list[str] | None:
    """The configured eval haystacks (``data.summhay.eval_haystack_ids``), checked against the
    topic ids of the loaded haystacks; None when the key is null or absent (the seeded-hash choice)."""
    from synthctx.schema import ArtifactError

    chosen = task_config.get("eval_haystack_ids")
    if chosen is None:
        return None
    unknown = [h for h in chosen if h not in set(loaded)]
    if unknown:
        raise ArtifactError(f"config data.summhay.eval_haystack_ids: {unknown} are not topic ids of the haystacks "
                            f"in {list(files)} (their topic_id fields: {sorted(loaded)})")
    if len(set(chosen)) >= len(set(loaded)):
        raise ArtifactError(f"config data.summhay.eval_haystack_ids names all {len(set(loaded))} haystacks of "
                            f"{list(files)}: no training haystack would remain")
    return sorted(chosen)


register_task(SummHay())
