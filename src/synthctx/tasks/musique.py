"""MuSiQue-Ans (Trivedi et al. 2022): multi-hop questions (the paper's three-hop ones) over 20
paragraphs, composed of single-hop sub-questions. Table 1 metric: answer F1 (max over the
answer and its aliases)."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from synthctx.data.context import UNSPLIT, Built, Candidate, fit_to_budget, numbered_documents, passage_key, seeded_rng
from synthctx.data.examples import make_example
from synthctx.data.loaders import Passage, iter_json_records, require_field, string_field
from synthctx.data.text import find_answer_spans
from synthctx.schema import ArtifactError
from synthctx.tasks import register_task
from synthctx.tasks.qa import QATask

HOP_COUNTS = [2, 3, 4]


def musique_hop_sets(task_config: Mapping[str, Any]) -> tuple[set[int], set[int]]:
    """(eval hop counts, training hop counts): ``hops`` and ``train_hops`` (absent/null: ``hops``)."""
    hops = {int(h) for h in task_config["hops"]}
    train_hops = task_config.get("train_hops")
    if train_hops is None:
        return hops, hops
    if not train_hops:
        raise ValueError("data.musique.train_hops is empty (null means: the same as data.musique.hops)")
    return hops, {int(h) for h in train_hops}


# --------------------------------------------------------------------------- raw records
# Official MuSiQue v1.0 records: JSON Lines, or one JSON array of the same records (told apart by
# the first non-space character).


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


_HOP_PREFIX = re.compile(r"^(\d)hop")


def load_musique(path: str | Path) -> list[MusiqueRecord]:
    """Official MuSiQue v1.0 records (JSON Lines or one JSON array)."""
    records = []
    for where, raw in iter_json_records(path):
        rid = string_field(raw, "id", where)
        where = f"{where} (id {rid})"
        prefix = _HOP_PREFIX.match(rid)
        if not prefix:
            raise ArtifactError(f"{where}: field 'id' has no hop prefix (2hop, 3hop1, ...)")
        paragraphs_raw = require_field(raw, "paragraphs", list, where)
        if not paragraphs_raw:
            raise ArtifactError(f"{where}: field 'paragraphs' is empty")
        paragraphs, supporting, by_idx = [], [], {}
        for j, p in enumerate(paragraphs_raw):
            pwhere = f"{where}: paragraphs[{j}]"
            idx = require_field(p, "idx", int, pwhere)
            paragraphs.append(
                Passage(
                    title=string_field(p, "title", pwhere, allow_empty=True),
                    text=string_field(p, "paragraph_text", pwhere),
                    source_id=str(idx),
                )
            )
            if require_field(p, "is_supporting", bool, pwhere):
                supporting.append(j)
            by_idx[idx] = j
        hops = []
        for k, step in enumerate(require_field(raw, "question_decomposition", list, where)):
            swhere = f"{where}: question_decomposition[{k}]"
            support = require_field(step, "paragraph_support_idx", (int, type(None)), swhere)
            if support is not None and support not in by_idx:
                raise ArtifactError(f"{swhere}: field 'paragraph_support_idx' {support} names no paragraph idx")
            hop_id = require_field(step, "id", (int, str), swhere)
            hops.append(
                Hop(
                    question=string_field(step, "question", swhere),
                    answer=string_field(step, "answer", swhere, allow_empty=True),
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
                question=string_field(raw, "question", where),
                answer=string_field(raw, "answer", where, allow_empty=not answerable),
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


# --------------------------------------------------------------------------- examples


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
    rng = seeded_rng(seed, "musique", record.record_id)
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
            documents=numbered_documents(passages),
            question=record.question,
            answers=accepted,
            target=record.answer,
            gold_doc_ids=[str(position_of[s] + 1) for s in supporting],
            needles=musique_needles(record, layout),
            meta={
                "source_id": record.record_id,
                "source_file": Path(record.source_file).name,  # by name: the data must not depend on where it lies
                "hops": record.hops,
                "num_documents": len(passages),
                "paragraph_idx": [record.paragraphs[s].source_id if s >= 0 else "pad" for s in layout],
                "padding_paragraphs": sum(1 for s in layout if s < 0),
                "gold_positions": sorted(position_of[s] for s in supporting),
            },
            **UNSPLIT,
        )

    example, _ = fit_to_budget((compose(n) for n in range(len(distractors), -1, -1)), tokenizer, context_tokens)
    return Built(example, "" if example else "budget")


class MuSiQue(QATask):
    name = "musique"
    # The paper's numbers for the claims page (Llama-3-8B-Instruct / Mistral-7B-Instruct-v0.1;
    # STUDY.md section 8, paper-method.md section 6), keyed by claim id or "claim:subject".
    paper_numbers = {
        "C1": "0.45 vs 0.41 / 0.20 vs 0.23 (Mistral: synthetic higher)",
        "C2": "0.41 vs 0.22 / 0.23 vs 0.03",
        "C3": "129 vs 112 and 74 of 1,024 heads (MuSiQue, Llama-3)",
        "C4:recall_topk": "rho 0.75 (recall, MuSiQue, Llama-3; n = 5)",
        "C6": "High x High 0.37 -> 0.29 with Inter.; gains significant on MDQA and MuSiQue",
        "CB": "closed-book F1 0.086 / 0.042 vs Real (Full) 0.45 / 0.20",
    }
    title = "MuSiQue"
    metric_description = "MuSiQue answer F1"
    instruction = (
        "Answer the question using only the provided documents. Finding the answer takes several steps "
        "across documents. Answer with a short phrase only."
    )
    closed_book_instruction = ("Answer the question. Finding the answer takes several steps. Answer with a short "
                               "phrase only.")
    synth_data_keys = ("num_paragraphs",)
    raw_schema = {"type": "object", "additionalProperties": False, "required": ["files"],
                  "properties": {"files": {"type": "array", "minItems": 1, "items": {"type": "string"}}}}
    data_schema = {
        "type": "object", "additionalProperties": False, "required": ["hops", "train_hops", "num_paragraphs"],
        "properties": {
            "hops": {"type": "array", "minItems": 1, "items": {"type": "integer", "enum": HOP_COUNTS}},
            # Hop counts of the training questions; null: the same as hops.
            "train_hops": {"type": ["array", "null"], "minItems": 1,
                           "items": {"type": "integer", "enum": HOP_COUNTS}},
            "num_paragraphs": {"type": "integer", "minimum": 2},
        },
    }
    # Hops of the synthetic chained relations (pool chains, High/Low and Symbolic variants).
    synthetic_hops = 3

    @property
    def variant_builder(self):
        from synthctx.synth.variants import ChainBuilder

        return ChainBuilder

    def load_candidates(self, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                        context_tokens: int, counts: Counter):
        records = load_musique_files(raw_files)
        counts["raw_records"] = len(records)
        eval_hops, train_hops = musique_hop_sets(task_config)
        kept = [r for r in records if r.hops in eval_hops | train_hops]
        counts["filtered_hops"] = len(records) - len(kept)
        # Every record of the files, whatever its hop count: no padding is any record's evidence.
        pool = ParagraphPool(records)
        evidence = {passage_key(r.paragraphs[s]) for r in kept for s in r.supporting}
        return [
            Candidate(
                r.record_id, r.record_id,
                lambda r=r: build_musique(
                    r, seed=seed, num_paragraphs=int(task_config["num_paragraphs"]), pool=pool,
                    tokenizer=tokenizer, context_tokens=context_tokens,
                ),
                links=musique_links(r, evidence),
            )
            for r in kept
        ], {r.record_id: r.hops for r in kept}

    def split(self, candidates, hops_of, *, task_config, seed, eval_examples, max_train_examples, build, dropped,
              update, counts):
        """MuSiQue draws the eval split from the ``hops`` questions and trains on the ``train_hops``
        ones (the same set unless train_hops is set)."""
        import logging

        from synthctx.data.build import linked_split

        eval_hops, train_hops = musique_hop_sets(task_config)
        eval_set, train_set, info = linked_split(
            self.name, candidates, seed=seed, eval_examples=eval_examples, max_train_examples=max_train_examples,
            build=build, dropped=dropped, update=update, counts=counts,
            eval_keep=lambda c: hops_of[c.example_id] in eval_hops,
            train_keep=lambda c: hops_of[c.example_id] in train_hops)
        counts["train_linked_to_eval"] = sum(1 for i in info["linked"] if hops_of[i] in train_hops)
        counts["not_train_hops"] = sum(1 for c in info["rest"] if hops_of[c.example_id] not in train_hops)
        histogram = Counter(hops_of[ex["example_id"]] for ex in train_set)
        for h in sorted(eval_hops | train_hops):
            counts[f"real_full_hops_{h}"] = histogram.get(h, 0)
        logging.getLogger("synthctx.data").info(
            "musique: Real (Full) by hop count %s (eval hops %s, train_hops %s; %d training candidates left out "
            "as linked to the eval split)", dict(sorted(histogram.items())), sorted(eval_hops), sorted(train_hops),
            counts["train_linked_to_eval"])
        return eval_set, train_set

    def check_draft(self, draft, kinds: Counter) -> None:
        from synthctx.synth.variants import Reject

        super().check_draft(draft, kinds)
        if any(kinds[f"hop{h}"] == 0 for h in range(1, self.synthetic_hops)):
            raise Reject("hop_not_derivable")

    def plan_pool(self, gen, pool_size: int, haystack_documents: int | None) -> list[dict[str, Any]]:
        from synthctx.synth.pool import NEEDLE_SHARE, _needle_item

        n_needle = max(1, round(pool_size * NEEDLE_SHARE))
        hops = self.synthetic_hops
        items = []
        for c in range(max(1, n_needle // hops)):
            for hop, fact in enumerate(gen.chain(hops), start=1):
                items.append(_needle_item(self.name, f"{self.name}-chain{c:03d}-hop{hop}", fact, chain=c, hop=hop))
        return items + self.haystack_items(gen, pool_size - len(items))


register_task(MuSiQue())
