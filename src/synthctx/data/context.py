"""Build normalized examples from raw records, fitted to the model's context budget.

The budget (``context_tokens``) bounds :func:`synthctx.data.prompts.prompt_length`: prompt
plus target, chat template included, counted with the model's own tokenizer. Each task
builder yields progressively smaller variants of one example and keeps the first that
fits (:func:`fit_to_budget`); an example whose smallest variant is still too long is
dropped and counted by the caller (reason ``budget``).

Document ids are the 1-based positions in the prompt (the number in ``Document [i]``),
for every task, so a citation and a position are the same thing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

from synthctx.data.examples import make_example
from synthctx.data.loaders import Haystack, HaystackDocument, MdqaRecord, MusiqueRecord, Passage
from synthctx.data.prompts import citation_span_in_header, citation_target, prompt_length
from synthctx.data.text import best_matching_sentence, find_answer_spans, normalize_answer, split_sentences
from synthctx.provenance import derived_seed

# Placeholders until the split assigns the example (splits.assign).
_UNSPLIT = {"split": "train", "condition": "real_full"}


# --------------------------------------------------------------------------- budget


def fits_budget(example: Mapping[str, Any], tokenizer, context_tokens: int) -> tuple[bool, int]:
    """Whether prompt + target of ``example`` fit ``context_tokens``, and the token count."""
    length = prompt_length(example, tokenizer)
    return length <= context_tokens, length


def fit_to_budget(
    variants: Iterable[dict[str, Any]], tokenizer, context_tokens: int
) -> tuple[dict[str, Any] | None, int]:
    """The first of ``variants`` (largest first) that fits the budget, with its length.

    ``variants`` may be a lazy generator: variants after the first that fits are never
    built. Returns ``(None, smallest_length_seen)`` when none fits. The chosen example
    gets ``meta["prompt_tokens"]``. The synthetic stage can reuse this with its own
    generator of shrinking examples.
    """
    last = -1
    for example in variants:
        ok, last = fits_budget(example, tokenizer, context_tokens)
        if ok:
            example["meta"]["prompt_tokens"] = last
            return example, last
    return None, last


@dataclass
class Built:
    """Outcome of building one candidate: an example, or the reason it was dropped."""

    example: dict[str, Any] | None
    # budget | no_answer_span | no_supporting_paragraph | no_gold_documents | unanswerable | weak_insight_match
    reason: str = ""
    # SummHay: the best-sentence unigram F1 of every gold document of the insight, kept or not
    insight_matches: tuple[float, ...] = ()


@dataclass
class Candidate:
    """A raw item that may become an example; built lazily in split (hash) order."""

    example_id: str
    group: str  # SummHay: topic id (split unit); otherwise the example id
    build: Callable[[], Built]
    # Keys shared by candidates that must land on the same side of the eval/train split
    # (MuSiQue sub-question ids and supporting paragraphs, MDQA gold passage and question).
    links: tuple[str, ...] = ()


def passage_key(passage: Passage) -> str:
    """A passage's identity across records: title and text, case and spacing ignored."""
    return " ".join(passage.title.casefold().split()) + "\n" + " ".join(passage.text.casefold().split())


def mdqa_links(record: MdqaRecord) -> tuple[str, ...]:
    """Questions with the same gold passage (or the same question) share a split side."""
    return ("gold:" + passage_key(record.gold), "question:" + normalize_answer(record.question))


def musique_links(record: MusiqueRecord, evidence: Collection[str] = ()) -> tuple[str, ...]:
    """Composed questions that share a single-hop sub-question or a supporting paragraph share a side.

    ``evidence``: passage keys that support some candidate. A record whose own distractor
    is one of them (the same Wikipedia paragraph is often one question's distractor and
    another's evidence, more so across hop counts) may show that evidence in its prompt,
    so it shares that question's side too.
    """
    hops = tuple("hop:" + hop.hop_id for hop in record.decomposition)
    supporting = set(record.supporting)
    shown = tuple(
        "paragraph:" + key
        for j, p in enumerate(record.paragraphs)
        if j not in supporting and (key := passage_key(p)) in evidence
    )
    return hops + tuple("paragraph:" + passage_key(record.paragraphs[s]) for s in record.supporting) + shown


def _rng(seed: int, *parts: Any) -> random.Random:
    return random.Random(derived_seed(seed, *parts))


def _docs(passages: Sequence[Passage]) -> list[dict[str, str]]:
    return [{"doc_id": str(i), "title": p.title, "text": p.text} for i, p in enumerate(passages, start=1)]


# --------------------------------------------------------------------------- MDQA


def mdqa_gold_position(record: MdqaRecord, seed: int, num_documents: int, gold_position: int | str) -> int:
    """0-based gold position: seeded uniform over the slots, or the configured index."""
    slots = min(num_documents, len(record.distractors) + 1)
    if gold_position == "uniform":
        return _rng(seed, "mdqa-gold-position", record.record_id).randrange(slots)
    return min(int(gold_position), slots - 1)


def compose_mdqa(record: MdqaRecord, distractors: Sequence[Passage], gold_index: int, drawn: int) -> dict[str, Any]:
    """One MDQA example: ``distractors`` in retrieval order, gold inserted at ``gold_index``."""
    passages = list(distractors[:gold_index]) + [record.gold] + list(distractors[gold_index:])
    gold_id = str(gold_index + 1)
    needles = [
        {"doc_id": gold_id, "start": a, "end": b, "kind": "answer"}
        for a, b in find_answer_spans(record.gold.text, record.answers)
    ]
    return make_example(
        example_id=record.record_id,
        task="mdqa",
        documents=_docs(passages),
        question=record.question,
        answers=record.answers,
        target=record.answers[0],
        gold_doc_ids=[gold_id],
        needles=needles,
        meta={
            "source_id": record.record_id,
            "gold_position": gold_index,
            "drawn_gold_position": drawn,
            "num_documents": len(passages),
            "distractor_ids": [p.source_id for p in distractors],
        },
        **_UNSPLIT,
    )


def build_mdqa(
    record: MdqaRecord, *, seed: int, num_documents: int, gold_position: int | str, tokenizer, context_tokens: int
) -> Built:
    """Gold + the first ``num_documents - 1`` distractors; distractors dropped from the end to fit."""
    distractors = list(record.distractors[: max(num_documents - 1, 0)])
    drawn = mdqa_gold_position(record, seed, num_documents, gold_position)

    def variants() -> Iterator[dict[str, Any]]:
        for n in range(len(distractors), -1, -1):
            yield compose_mdqa(record, distractors[:n], min(drawn, n), drawn)

    example, _ = fit_to_budget(variants(), tokenizer, context_tokens)
    return Built(example, "" if example else "budget")


# --------------------------------------------------------------------------- MuSiQue


class ParagraphPool:
    """Non-supporting paragraphs of all MuSiQue records, to pad short examples.

    A paragraph that supports any record (the same Wikipedia paragraph is often a
    distractor of one question and evidence of another) is left out, so that no
    question's evidence leaks into another example (possibly of the other split).
    """

    def __init__(self, records: Sequence[MusiqueRecord]):
        evidence = {passage_key(rec.paragraphs[s]) for rec in records for s in rec.supporting}
        self.items: list[tuple[str, Passage]] = [
            (rec.record_id, p)
            for rec in records
            for j, p in enumerate(rec.paragraphs)
            if j not in set(rec.supporting) and passage_key(p) not in evidence
        ]

    def draw(self, rng: random.Random, count: int, record: MusiqueRecord, banned: Sequence[str]) -> list[Passage]:
        """``count`` paragraphs of OTHER records containing none of the ``banned`` strings."""
        chosen: list[Passage] = []
        seen_text = {p.text for p in record.paragraphs}
        if not self.items:
            return chosen
        tries = 0
        while len(chosen) < count and tries < 50 * (count + 1):
            tries += 1
            owner, passage = self.items[rng.randrange(len(self.items))]
            if owner == record.record_id or passage.text in seen_text:
                continue
            if find_answer_spans(passage.text, banned):
                continue
            seen_text.add(passage.text)
            chosen.append(passage)
        return chosen


def musique_needles(record: MusiqueRecord, layout: Sequence[int]) -> list[dict[str, Any]]:
    """Answer/alias occurrences in supporting paragraphs and intermediate hop answers.

    ``layout`` maps prompt position (0-based) to the record's paragraph index, or -1 for
    a padding paragraph.
    """
    position_of = {src: pos for pos, src in enumerate(layout) if src >= 0}
    accepted = (record.answer, *record.aliases)
    needles = []
    for src in record.supporting:
        doc_id = str(position_of[src] + 1)
        for a, b in find_answer_spans(record.paragraphs[src].text, accepted):
            needles.append({"doc_id": doc_id, "start": a, "end": b, "kind": "answer"})
    for k, hop in enumerate(record.decomposition[:-1], start=1):
        if k > 3 or hop.support_idx < 0 or not hop.answer.strip() or hop.support_idx not in position_of:
            continue
        doc_id = str(position_of[hop.support_idx] + 1)
        for a, b in find_answer_spans(record.paragraphs[hop.support_idx].text, [hop.answer]):
            needles.append({"doc_id": doc_id, "start": a, "end": b, "kind": f"hop{k}"})
    return needles


def build_musique(
    record: MusiqueRecord,
    *,
    seed: int,
    num_paragraphs: int,
    pool: ParagraphPool,
    tokenizer,
    context_tokens: int,
) -> Built:
    """Supporting paragraphs + a seeded choice of others (trimmed or padded), shuffled."""
    if not record.answerable:
        return Built(None, "unanswerable")
    if not record.supporting:  # no paragraph marked is_supporting: no gold document to place
        return Built(None, "no_supporting_paragraph")
    accepted = (record.answer, *record.aliases)
    if not any(find_answer_spans(record.paragraphs[s].text, accepted) for s in record.supporting):
        # The answer is not verbatim in its evidence (e.g. "America" vs "American"): no needle.
        return Built(None, "no_answer_span")
    rng = _rng(seed, "musique", record.record_id)
    supporting = list(record.supporting)
    others = [j for j in range(len(record.paragraphs)) if j not in set(supporting)]
    wanted = max(num_paragraphs - len(supporting), 0)
    # Distractors in draw order; the last drawn are the first trimmed for the budget.
    distractors: list[tuple[int, Passage]] = [(j, record.paragraphs[j]) for j in rng.sample(others, min(wanted, len(others)))]
    padding = pool.draw(rng, wanted - len(distractors), record, accepted)
    distractors += [(-1, p) for p in padding]
    slots = list(range(len(supporting) + len(distractors)))
    rng.shuffle(slots)  # slots[i] = prompt position of item i

    def compose(n_distractors: int) -> dict[str, Any]:
        items = [(s, record.paragraphs[s]) for s in supporting] + distractors[:n_distractors]
        kept_slots = slots[: len(supporting)] + slots[len(supporting) : len(supporting) + n_distractors]
        ordered = [item for _, item in sorted(zip(kept_slots, items), key=lambda pair: pair[0])]
        layout = [src for src, _ in ordered]
        passages = [p for _, p in ordered]
        position_of = {src: pos for pos, src in enumerate(layout) if src >= 0}
        return make_example(
            example_id=record.record_id,
            task="musique",
            documents=_docs(passages),
            question=record.question,
            answers=accepted,
            target=record.answer,
            gold_doc_ids=[str(position_of[s] + 1) for s in supporting],
            needles=musique_needles(record, layout),
            meta={
                "source_id": record.record_id,
                "source_file": record.source_file,
                "hops": record.hops,
                "num_documents": len(passages),
                "paragraph_idx": [record.paragraphs[s].source_id if s >= 0 else "pad" for s in layout],
                "padding_paragraphs": sum(1 for s in layout if s < 0),
                "gold_positions": sorted(position_of[s] for s in supporting),
            },
            **_UNSPLIT,
        )

    example, _ = fit_to_budget((compose(n) for n in range(len(distractors), -1, -1)), tokenizer, context_tokens)
    return Built(example, "" if example else "budget")


# --------------------------------------------------------------------------- SummHay


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
    rng = _rng(seed, "summhay", example_id)
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
                "source_file": haystack.source_file,
                "source_positions": source_positions,
                "source_document_ids": [ex.document.document_id for _, ex in kept],
                "insight_f1": insight_f1,
                "excerpt_sentences": size,
                "num_documents": len(documents),
                "gold_positions": [int(g) - 1 for g in gold_ids],
                "gold_available": len(gold_docs),
                "gold_below_match": len(gold_docs) - len(strong),
            },
            **_UNSPLIT,
        )

    def variants() -> Iterator[dict[str, Any]]:
        for size in range(excerpt_sentences, 0, -1):
            yield compose(size, len(chosen_other))
        for n_other in range(len(chosen_other) - 1, -1, -1):
            yield compose(1, n_other)

    example, _ = fit_to_budget(variants(), tokenizer, context_tokens)
    return Built(example, "" if example else "budget", scores)
