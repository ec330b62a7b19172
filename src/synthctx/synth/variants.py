"""Assemble the five synthetic variants of a task (STUDY.md section 3) from the pool.

Axes: concept expression of the needle (``high``: LLM-written prose from the pool; ``low``:
one templated sentence, the Simplified insight for SummHay) x context diversity of the
haystack (``high``: LLM-written documents from the pool; ``low``: the repeated filler cut
into documents), plus ``symbolic`` (random strings for both).

Examples use the normalized schema and the real task's prompt and target format:
MDQA = documents + question -> short answer; MuSiQue = a 3-hop chain of facts in three
gold documents (``hop1``/``hop2``/``answer`` needles); SummHay = documents + query +
insight -> citations ``[i][j]`` (``insight`` and ``citation`` needles). Document ids are
the 1-based prompt positions (the numbers SummHay cites).

Every candidate is checked (needles verbatim in their documents, target derivable from
the context, prompt within the token budget, ``validate_example``) and a failing
candidate is counted under its reason and replaced, never kept.
"""

from __future__ import annotations

import json
import logging
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from synthctx.data.examples import make_example, validate_example
from synthctx.data.prompts import citation_span_in_header, citation_target, prompt_length
from synthctx.provenance import derived_seed
from synthctx.data.stats import dataset_stats, needle_depth
from synthctx.study import BUILTIN_SYNTHETIC
from synthctx.tasks import get_task
from synthctx.schema import ArtifactError
from synthctx.synth.entities import ORG_SUFFIXES, EntityGenerator, Fact, chain_question
from synthctx.synth.topics import Insight

log = logging.getLogger("synthctx.synth")

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
FILLER_SENTENCES = re.split(r"(?<=[.!?])\s+", FILLER)
SYMBOL_ALPHABET = string.ascii_lowercase + string.digits
SYMBOL_KEY_LENGTH = 5
SYMBOL_PAIRS_PER_DOCUMENT = 10
SYMBOL_TOKEN_LENGTH = 3
SYMBOLS_PER_DOCUMENT = 40
SYMBOL_PATTERN_LENGTH = 3
SYMBOLIC_CITATION_QUERY = "Which documents contain the symbol pattern given as the insight?"
DEFAULT_DOCUMENT_CHARS = 500
# Candidates tried per requested example before giving up (rejects are counted).
MAX_CANDIDATES_PER_EXAMPLE = 6


class Reject(Exception):
    """A candidate example that failed a check; ``reason`` is counted in the stats."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class VariantSettings:
    task: str
    variant: str
    seed: int
    examples: int
    context_tokens: int
    num_documents: int  # documents (MDQA, SummHay) or paragraphs (MuSiQue) per example
    max_gold_documents: int | None  # data.<task>.max_gold_documents (SummHay); None where the task has none


@dataclass
class Draft:
    """An example before ids are assigned: documents in prompt order, needles per document index."""

    documents: list[dict[str, str]]
    gold: list[int]
    needles: list[tuple[int, int, int, str]]  # (document index, start, end, kind)
    question: str
    answers: list[str]
    target: str | None  # None: SummHay citation target from the gold positions
    meta: dict[str, Any] = field(default_factory=dict)
    droppable: list[int] = field(default_factory=list)  # distractor indices that may go to fit the budget
    forbidden: list[str] = field(default_factory=list)  # strings distractors must not contain


# ---------------------------------------------------------------- text helpers


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def insert_sentence(text: str, needle: str, rng: random.Random) -> tuple[str, int]:
    """Insert ``needle`` at a random sentence boundary of ``text``; returns (new text, needle start)."""
    sents = sentences(text)
    k = rng.randint(0, len(sents))
    before = " ".join(sents[:k])
    start = len(before) + (1 if before else 0)
    return " ".join(sents[:k] + [needle] + sents[k:]), start


def filler_document(rng: random.Random, n_chars: int) -> str:
    """The filler text from a random sentence on, repeated to about ``n_chars`` characters."""
    i = rng.randrange(len(FILLER_SENTENCES))
    out: list[str] = []
    while sum(len(s) + 1 for s in out) < n_chars:
        out.append(FILLER_SENTENCES[i % len(FILLER_SENTENCES)])
        i += 1
    return " ".join(out)


def occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    spans, start = [], text.find(needle)
    while start >= 0 and needle:
        spans.append((start, start + len(needle)))
        start = text.find(needle, start + len(needle))
    return spans


def fact_passage(article: str, fact: Fact) -> str:
    """The shortest run of sentences of ``article`` that names both the subject and the object."""
    sents = sentences(article)
    obj = [i for i, s in enumerate(sents) if fact.object in s]
    subj = [i for i, s in enumerate(sents) if fact.subject in s]
    if not obj or not subj:
        raise Reject("needle_passage_missing")
    best = min(((abs(a - b), min(a, b), max(a, b)) for a in obj for b in subj))
    return " ".join(sents[best[1]: best[2] + 1])


def rename_entity(text: str, old: str, new: str) -> str:
    """Replace a fictional name in prose: the full name, then its distinctive words alone
    (a generated article often says "Quist" for "Velmora Quist")."""
    text = text.replace(old, new)
    old_words, new_words = old.split(), new.split()
    if len(old_words) > 1:
        generic = {w for suffix in ORG_SUFFIXES for w in suffix.split()}
        for o, n in zip(old_words, new_words + [new_words[-1]] * len(old_words)):
            if o not in generic:
                text = re.sub(rf"\b{re.escape(o)}\b", n, text)
    return text


def random_symbol(rng: random.Random, length: int, used: set[str]) -> str:
    while True:
        sym = "".join(rng.choice(SYMBOL_ALPHABET) for _ in range(length))
        if sym not in used:
            used.add(sym)
            return sym


# ---------------------------------------------------------------- the pool as the variants see it


@dataclass
class PoolView:
    articles: list[dict[str, Any]]  # ok haystack + needle articles: title, text, pool_id, fact?
    needles: list[dict[str, Any]]  # ok needle articles (single facts) with their fact
    chains: list[list[dict[str, Any]]]  # complete chains of ok needle articles (chained relations)
    news: dict[str, list[dict[str, Any]]]  # news pools: topic id -> ok news documents
    insights: dict[str, list[Insight]]  # news pools: topic id -> all insights of the topic
    prose: dict[str, str]  # news pools: insight id -> ok paraphrase
    entity_names: set[str]
    doc_lengths: list[int]
    needle_chains_all: list[list[dict[str, Any]]] = field(default_factory=list)  # valid articles per chain

    @classmethod
    def from_frame(cls, pool: pd.DataFrame, chain_hops: int | None = None) -> "PoolView":
        """The pool as the variants use it; ``chain_hops``: the chained task's hop count (a
        chain is complete when it holds a valid article for each of hops 1..chain_hops)."""
        articles, needles, news, prose = [], [], {}, {}
        chains: dict[int, dict[int, dict[str, Any]]] = {}
        insights: dict[str, dict[str, Insight]] = {}
        names: set[str] = set()
        for row in pool.sort_values("pool_id").to_dict(orient="records"):
            fields = json.loads(row["fields"]) if row["fields"] else {}
            names.add(row["entity"])
            if "fact" in fields:
                names.update([fields["fact"]["subject"], fields["fact"]["object"]])
            if row["kind"] == "insight_prose":
                ins = Insight.from_dict(fields["insight"])
                insights.setdefault(fields["topic_id"], {})[ins.insight_id] = ins
                names.add(ins.key)
            if row["kind"] == "news_document":
                for d in fields.get("insights", []):
                    insights.setdefault(fields["topic_id"], {}).setdefault(d["insight_id"], Insight.from_dict(d))
            if row["status"] != "ok":
                continue
            rec = {"pool_id": row["pool_id"], "text": row["text"], "title": row["entity"], **fields}
            if row["kind"] in ("haystack_article", "needle_article"):
                articles.append(rec)
            if row["kind"] == "needle_article":
                rec["fact_obj"] = Fact.from_dict(fields["fact"])
                if "chain" in fields:
                    chains.setdefault(fields["chain"], {})[fields["hop"]] = rec
                else:
                    needles.append(rec)
            elif row["kind"] == "news_document":
                rec["title"] = fields.get("headline", "")
                news.setdefault(fields["topic_id"], []).append(rec)
            elif row["kind"] == "insight_prose":
                prose[fields["insight"]["insight_id"]] = row["text"]
        hops = tuple(range(1, (chain_hops or 0) + 1))
        full_chains = [[c[h] for h in hops] for _, c in sorted(chains.items()) if hops and tuple(sorted(c)) == hops]
        chain_articles = [[c[h] for h in sorted(c)] for _, c in sorted(chains.items())]
        lengths = [len(a["text"]) for a in articles] + [len(d["text"]) for docs in news.values() for d in docs]
        return cls(articles, needles, full_chains, news,
                   {t: [v[k] for k in sorted(v)] for t, v in sorted(insights.items())}, prose, names, lengths,
                   chain_articles)


# ---------------------------------------------------------------- per-task builders


class Builder:
    def __init__(self, settings: VariantSettings, pool: PoolView):
        self.s = settings
        self.pool = pool
        self.concept, _, self.diversity = settings.variant.partition("_")
        gen_seed = derived_seed(settings.seed, "synth-variant-entities", settings.task, settings.variant)
        self.entities = EntityGenerator(gen_seed)
        self.entities.used.update(pool.entity_names)  # fresh facts never collide with pool entities
        self.order_rng = random.Random(derived_seed(settings.seed, "synth-variant-order", settings.task,
                                                    settings.variant))

    # haystack documents
    def filler_docs(self, rng: random.Random, n: int) -> list[dict[str, str]]:
        lengths = self.pool.doc_lengths or [DEFAULT_DOCUMENT_CHARS]
        return [{"title": "", "text": filler_document(rng, rng.choice(lengths))} for _ in range(n)]

    def diverse_docs(self, rng: random.Random, n: int, candidates: Sequence[Mapping[str, Any]],
                     exclude: set[str], forbidden: Sequence[str]) -> list[dict[str, str]]:
        usable = [c for c in candidates if c["pool_id"] not in exclude
                  and not any(f in c["text"] or f in c["title"] for f in forbidden)]
        if len(usable) < n:
            raise Reject("pool_too_small")
        return [{"title": c["title"], "text": c["text"], "pool_id": c["pool_id"]} for c in rng.sample(usable, n)]

    def haystack(self, rng, n, exclude=(), forbidden=(), candidates=None):
        if self.diversity == "low":
            return self.filler_docs(rng, n)
        return self.diverse_docs(rng, n, self.pool.articles if candidates is None else candidates,
                                 set(exclude), forbidden)

    # one gold document stating ``fact``
    def fact_document(self, rng: random.Random, fact: Fact, article: Mapping[str, Any] | None,
                      forbidden: Sequence[str]) -> tuple[dict[str, str], set[str]]:
        if self.concept == "high" and self.diversity == "high":
            return {"title": article["title"], "text": article["text"]}, {article["pool_id"]}
        needle = fact_passage(article["text"], fact) if self.concept == "high" else fact.sentence()
        base = self.haystack(rng, 1, exclude={article["pool_id"]} if article else set(), forbidden=forbidden)[0]
        text, _ = insert_sentence(base["text"], needle, rng)
        used = {base["pool_id"]} if "pool_id" in base else set()
        if article:
            used.add(article["pool_id"])
        return {"title": base["title"], "text": text}, used

    def cycle(self, sources: Sequence[Any], index: int) -> Any:
        if not hasattr(self, "_order"):
            self._order = list(range(len(sources)))
            self.order_rng.shuffle(self._order)
        return sources[self._order[index % len(sources)]]

    def place(self, rng: random.Random, gold_docs: list[dict[str, str]], distractors: list[dict[str, str]]):
        """Shuffle gold documents among distractors; returns docs and the gold indices (in gold order)."""
        n = len(gold_docs) + len(distractors)
        gold_positions = rng.sample(range(n), len(gold_docs))
        docs: list[dict[str, str] | None] = [None] * n
        for pos, doc in zip(gold_positions, gold_docs):
            docs[pos] = doc
        rest = iter(distractors)
        docs = [d if d is not None else next(rest) for d in docs]
        return docs, gold_positions

    def build(self, index: int, rng: random.Random) -> Draft:
        raise NotImplementedError


class LookupBuilder(Builder):
    """One fact per example (an entity's attribute) in one document of the haystack; the answer is
    the value (the single-document QA shape)."""

    def build(self, index, rng):
        s = self.s
        if self.s.variant == "symbolic":
            return self.build_symbolic(rng)
        if self.concept == "high":
            if not self.pool.needles:
                raise ArtifactError(f"{s.task}/{s.variant}: the pool has no valid needle article")
            article = self.cycle(self.pool.needles, index)
            fact = article["fact_obj"]
        else:
            article, fact = None, self.entities.fact()
        forbidden = [fact.object, fact.subject]
        gold, used = self.fact_document(rng, fact, article, forbidden)
        distractors = self.haystack(rng, s.num_documents - 1, exclude=used, forbidden=forbidden)
        docs, (gold_pos,) = self.place(rng, [gold], distractors)
        needles = [(gold_pos, a, b, "answer") for a, b in occurrences(docs[gold_pos]["text"], fact.object)]
        return Draft(docs, [gold_pos], needles, fact.question(), [fact.object], fact.object,
                     meta={"fact": fact.to_dict(), "needle_source": article["pool_id"] if article else None},
                     droppable=[i for i in range(len(docs)) if i != gold_pos], forbidden=forbidden)

    def build_symbolic(self, rng):
        used: set[str] = set()
        key, value = random_symbol(rng, SYMBOL_KEY_LENGTH, used), random_symbol(rng, SYMBOL_KEY_LENGTH, used)
        docs = []
        for _ in range(self.s.num_documents):
            pairs = [f"{random_symbol(rng, SYMBOL_KEY_LENGTH, used)}: {random_symbol(rng, SYMBOL_KEY_LENGTH, used)}"
                     for _ in range(SYMBOL_PAIRS_PER_DOCUMENT)]
            docs.append(pairs)
        gold_pos = rng.randrange(len(docs))
        docs[gold_pos].insert(rng.randint(0, SYMBOL_PAIRS_PER_DOCUMENT), f"{key}: {value}")
        texts = ["; ".join(p) for p in docs]
        text = texts[gold_pos]
        k0 = text.index(f"{key}: {value}")
        v0 = k0 + len(key) + 2
        needles = [(gold_pos, k0, k0 + len(key), "key"), (gold_pos, v0, v0 + len(value), "value")]
        return Draft([{"title": "", "text": t} for t in texts], [gold_pos], needles,
                     f"What is the value of key {key}?", [value], value, meta={"key": key},
                     droppable=[i for i in range(len(texts)) if i != gold_pos], forbidden=[key, value])


def hop_kinds(hops: int, last: str) -> list[str]:
    """Needle kinds of a ``hops``-hop chain: hop1 .. hop{hops-1}, then ``last`` (the answer)."""
    return [f"hop{h}" for h in range(1, hops)] + [last]


class ChainBuilder(Builder):
    """Chained relations of the task's ``synthetic_hops`` hops (a task attribute; the paper's multi-hop task: 3)."""

    @property
    def hops(self) -> int:
        return int(get_task(self.s.task).synthetic_hops)

    def build(self, index, rng):
        s = self.s
        if s.variant == "symbolic":
            return self.build_symbolic(rng)
        if self.concept == "high":
            articles, facts = self.linked_articles(index, rng)
        else:
            facts = self.entities.chain(self.hops)
            articles = [None] * self.hops
        forbidden = [facts[0].subject] + [f.object for f in facts]
        gold_docs, used = [], set()
        for fact, article in zip(facts, articles):
            doc, u = self.fact_document(rng, fact, article, forbidden)
            gold_docs.append(doc)
            used |= u
        distractors = self.haystack(rng, max(0, s.num_documents - self.hops), exclude=used, forbidden=forbidden)
        docs, positions = self.place(rng, gold_docs, distractors)
        needles = []
        for pos, fact, kind in zip(positions, facts, hop_kinds(self.hops, "answer")):
            needles += [(pos, a, b, kind) for a, b in occurrences(docs[pos]["text"], fact.object)]
        answer = facts[-1].object
        return Draft(docs, positions, needles, chain_question(facts), [answer], answer,
                     meta={"facts": [f.to_dict() for f in facts],
                           "needle_source": [a["pool_id"] for a in articles] if articles[0] else None},
                     droppable=[i for i in range(len(docs)) if i not in positions], forbidden=forbidden)

    def linked_articles(self, index: int, rng: random.Random):
        """``hops`` needle articles linked into a chain e1 -> e2 -> ... (three: e1 -> e2 -> e3 -> e4).

        A generated chain is used whole where all of its articles passed validation;
        otherwise (a small generator loses many) valid articles of any chain are linked by
        renaming: the subject of hop k+1 becomes the object of hop k, in the fact and in
        the article's text, so every hop is still stated verbatim in prose.
        """
        complete = self.pool.chains
        if complete and index % 2 == 0:
            articles = self.cycle(complete, index // 2)
            return articles, [a["fact_obj"] for a in articles]
        singles = [a for chain in self.pool.needle_chains_all for a in chain]
        if not singles:
            raise ArtifactError(f"{self.s.task}/{self.s.variant}: the pool has no valid needle article")
        first = rng.choice(singles)
        articles, facts = [dict(first)], [first["fact_obj"]]
        for _ in range(self.hops - 1):
            prev = facts[-1]
            options = [a for a in singles if a["fact_obj"].subject_kind == prev.object_kind
                       and a["pool_id"] not in {x["pool_id"] for x in articles}]
            if not options:
                raise Reject("no_linkable_article")
            nxt = rng.choice(options)
            fact = nxt["fact_obj"]
            linked = Fact(prev.object, fact.subject_kind, fact.relation, fact.object, fact.object_kind)
            if linked.object in {f.subject for f in facts} | {prev.object}:
                raise Reject("no_linkable_article")
            articles.append({**nxt, "text": rename_entity(nxt["text"], fact.subject, prev.object),
                             "title": prev.object, "fact_obj": linked})
            facts.append(linked)
        return articles, facts

    def build_symbolic(self, rng):
        used: set[str] = set()
        hops = self.hops
        # k1 -> k2 -> k3 -> value for three hops
        chain = [random_symbol(rng, SYMBOL_KEY_LENGTH, used) for _ in range(hops + 1)]
        n = max(hops, self.s.num_documents)
        docs = [[f"{random_symbol(rng, SYMBOL_KEY_LENGTH, used)}: {random_symbol(rng, SYMBOL_KEY_LENGTH, used)}"
                 for _ in range(SYMBOL_PAIRS_PER_DOCUMENT)] for _ in range(n)]
        positions = rng.sample(range(n), hops)
        for hop, pos in enumerate(positions):
            docs[pos].insert(rng.randint(0, len(docs[pos])), f"{chain[hop]}: {chain[hop + 1]}")
        texts = ["; ".join(p) for p in docs]
        needles = []
        for hop, (pos, kind) in enumerate(zip(positions, hop_kinds(hops, "value"))):
            pair = f"{chain[hop]}: {chain[hop + 1]}"
            k0 = texts[pos].index(pair)
            v0 = k0 + len(chain[hop]) + 2
            needles += [(pos, k0, k0 + len(chain[hop]), "key"), (pos, v0, v0 + len(chain[hop + 1]), kind)]
        question = f"Look up key {chain[0]}, then look up the value you found as a key{symbolic_repeats(hops)}. What is the final value?"
        return Draft([{"title": "", "text": t} for t in texts], positions, needles, question, [chain[-1]], chain[-1],
                     meta={"chain": chain}, droppable=[i for i in range(n) if i not in positions],
                     forbidden=chain)


def symbolic_repeats(hops: int) -> str:
    """The symbolic chain question's count of lookups after the second (three hops: "once more")."""
    more = hops - 2
    if more <= 0:
        return ""
    return ", and do this " + {1: "once more", 2: "twice more"}.get(more, f"{more} more times")


class CitationBuilder(Builder):
    """An insight stated in several documents; the target cites the documents that contain it
    (the citation shape)."""

    def topics(self) -> list[str]:
        topics = [t for t in self.pool.insights if self.diversity == "low" or len(self.pool.news.get(t, [])) >= 1]
        if not topics:
            raise ArtifactError(f"{self.s.task}/{self.s.variant}: the pool has no topic with news documents")
        return topics

    def expression(self, ins: Insight) -> str | None:
        if self.concept == "high":
            return self.pool.prose.get(ins.insight_id)
        return ins.statement()

    def build(self, index, rng):
        s = self.s
        if s.variant == "symbolic":
            return self.build_symbolic(rng)
        topic = self.cycle(self.topics(), index)
        expressible = [i for i in self.pool.insights[topic] if self.expression(i)]
        if not expressible:
            raise Reject("no_expressible_insight")
        query = rng.choice(expressible)
        n = s.num_documents
        n_gold = rng.randint(1, min(s.max_gold_documents, n - 1))
        keys = [i.key for i in expressible if i.insight_id != query.insight_id]
        if self.diversity == "low":
            bases = self.filler_docs(rng, n)
        else:
            bases = self.diverse_docs(rng, n, self.pool.news.get(topic, []), set(), [query.key])
        gold = sorted(rng.sample(range(n), n_gold))
        others = [i for i in expressible if i.insight_id != query.insight_id]
        docs = []
        for pos, base in enumerate(bases):
            text = base["text"]
            # Other insights of the topic in some documents, so citing "any insight" is wrong.
            if others and rng.random() < 0.5:
                text, _ = insert_sentence(text, self.expression(rng.choice(others)), rng)
            if pos in gold:
                text, _ = insert_sentence(text, self.expression(query), rng)
            docs.append({"title": base["title"], "text": text})
        expr = self.expression(query)
        needles = []
        for pos in gold:
            start = docs[pos]["text"].find(expr)
            needles.append((pos, start, start + len(expr), "insight"))
        return Draft(docs, gold, needles, query.statement(), [], None,
                     meta={"query": query.query, "insight_id": query.insight_id, "insight_key": query.key,
                           "topic": query.topic, "distractor_keys": keys},
                     droppable=[i for i in range(n) if i not in gold], forbidden=[query.key])

    def build_symbolic(self, rng):
        used: set[str] = set()
        n = self.s.num_documents
        pattern = [random_symbol(rng, SYMBOL_TOKEN_LENGTH, used) for _ in range(SYMBOL_PATTERN_LENGTH)]
        near_miss = list(pattern)
        near_miss[rng.randrange(SYMBOL_PATTERN_LENGTH)] = random_symbol(rng, SYMBOL_TOKEN_LENGTH, used)
        n_gold = rng.randint(1, min(self.s.max_gold_documents, n - 1))
        gold = sorted(rng.sample(range(n), n_gold))
        docs, needles = [], []
        for pos in range(n):
            tokens = [random_symbol(rng, SYMBOL_TOKEN_LENGTH, used) for _ in range(SYMBOLS_PER_DOCUMENT)]
            if pos not in gold and rng.random() < 0.5:
                cut = rng.randint(0, len(tokens))
                tokens[cut:cut] = near_miss
            if pos in gold:
                cut = rng.randint(0, len(tokens))
                tokens[cut:cut] = pattern
                start = len(" ".join(tokens[:cut])) + (1 if cut else 0)
                needles.append((pos, start, start + len(" ".join(pattern)), "insight"))
            docs.append({"title": "", "text": " ".join(tokens)})
        return Draft(docs, gold, needles, " ".join(pattern), [], None,
                     meta={"query": SYMBOLIC_CITATION_QUERY, "pattern": pattern},
                     droppable=[i for i in range(n) if i not in gold], forbidden=[" ".join(pattern)])




# ---------------------------------------------------------------- checks, fitting and the loop


def finalize(draft: Draft, settings: VariantSettings, example_id: str) -> dict[str, Any]:
    """The normalized example of ``draft``: ids = 1-based positions, citation needles for SummHay."""
    docs = [{"doc_id": str(i + 1), "title": d.get("title") or "", "text": d["text"]}
            for i, d in enumerate(draft.documents)]
    gold_ids = [str(i + 1) for i in draft.gold]
    needles = [{"doc_id": str(i + 1), "start": a, "end": b, "kind": k} for i, a, b, k in draft.needles]
    answers, target = get_task(settings.task).finalize_synthetic(draft, gold_ids, needles, draft.answers,
                                                                  draft.target)
    # meta.gold_positions: 0-based prompt positions, as in the real data (docs/DESIGN.md);
    # meta.needle_depth is set once the example fits its budget (synthctx.data.stats.needle_depth).
    meta = {**draft.meta, "variant": settings.variant, "synthetic": True,
            "gold_positions": [int(g) for g in draft.gold], "needle_depth": None}
    return make_example(example_id=example_id, task=settings.task, condition=settings.variant, split="train",
                        documents=docs, question=draft.question, answers=answers, target=target,
                        gold_doc_ids=gold_ids, needles=needles, meta=meta)


def check_draft(draft: Draft, task: str) -> None:
    """Needles verbatim in their documents, target derivable from the context, clean distractors."""
    for i, a, b, kind in draft.needles:
        if a < 0 or b > len(draft.documents[i]["text"]) or a >= b:
            raise Reject("needle_not_in_document")
    gold = set(draft.gold)
    for i, doc in enumerate(draft.documents):
        if i in gold:
            continue
        if any(f in doc["text"] or f in (doc.get("title") or "") for f in draft.forbidden):
            raise Reject("answer_in_distractor")
    get_task(task).check_draft(draft, Counter(k for _, _, _, k in draft.needles))


def without_last_droppable(draft: Draft, count: int) -> Draft:
    """``draft`` minus its last ``count`` droppable documents, the order budget fitting drops them in."""
    if count == 0:
        return draft
    victims = set(draft.droppable[len(draft.droppable) - count:])
    keep = [i for i in range(len(draft.documents)) if i not in victims]
    remap = {old: new for new, old in enumerate(keep)}
    return Draft([draft.documents[i] for i in keep], [remap[g] for g in draft.gold],
                 [(remap[i], a, b, k) for i, a, b, k in draft.needles], draft.question, draft.answers,
                 draft.target, draft.meta, [remap[i] for i in draft.droppable if i not in victims], draft.forbidden)


def fit_to_budget(draft: Draft, settings: VariantSettings, tokenizer, example_id: str) -> tuple[dict, int, int]:
    """Drop distractors (last first) until prompt + target fit ``context_tokens``; (example, tokens, dropped).

    The fewest drops that fit, found by bisection: dropping a document never lengthens the
    prompt, so about log2(n) tokenizations of the whole prompt replace one per dropped document
    (MuSiQue drafts of 60 paragraphs: 7-11x faster, identical examples; BENCHMARKS.md).
    """
    measured: dict[int, tuple[dict, int]] = {}

    def measure(count: int) -> tuple[dict, int]:
        if count not in measured:
            example = finalize(without_last_droppable(draft, count), settings, example_id)
            measured[count] = (example, prompt_length(example, tokenizer))
        return measured[count]

    budget = settings.context_tokens
    if measure(0)[1] <= budget:
        return (*measure(0), 0)
    fits, too_long = len(draft.droppable), 0  # invariant: too_long drops do not fit, `fits` drops would
    if fits == 0 or measure(fits)[1] > budget:
        raise Reject("over_budget")
    while fits - too_long > 1:
        middle = (fits + too_long) // 2
        if measure(middle)[1] <= budget:
            fits = middle
        else:
            too_long = middle
    return (*measure(fits), fits)


def build_variant(task: str, variant: str, pool: pd.DataFrame, tokenizer, seed: int, examples: int,
                  context_tokens: int, num_documents: int, max_gold_documents: int | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """The ``examples`` training examples of one synthetic variant and its dataset_stats frame."""
    if variant not in BUILTIN_SYNTHETIC:
        raise ValueError(f"unknown synthetic variant {variant!r}; expected one of {BUILTIN_SYNTHETIC}")
    settings = VariantSettings(task, variant, seed, examples, context_tokens, num_documents, max_gold_documents)
    spec = get_task(task)
    if variant not in spec.synthetic_variants:
        raise ValueError(f"task {task!r} has no synthetic variant {variant!r} (it supports {spec.synthetic_variants})")
    builder = spec.variant_builder(settings, PoolView.from_frame(pool, getattr(spec, "synthetic_hops", None)))
    rejects: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    dropped_total, sources = 0, set()
    candidate = 0
    while len(out) < examples and candidate < examples * MAX_CANDIDATES_PER_EXAMPLE:
        rng = random.Random(derived_seed(seed, "synth-variant", task, variant, candidate))
        example_id = f"synth-{task}-{variant}-{len(out):04d}"
        try:
            draft = builder.build(candidate, rng)
            check_draft(draft, task)
            example, tokens, dropped = fit_to_budget(draft, settings, tokenizer, example_id)
            try:
                validate_example(example, where=f"{task}/{variant}")
            except ArtifactError as err:
                log.warning("rejected invalid candidate %d: %s", candidate, err)
                raise Reject("invalid_example") from err
        except Reject as rej:
            rejects[rej.reason] += 1
            candidate += 1
            continue
        candidate += 1
        example["meta"]["token_length"] = tokens
        example["meta"]["distractors_dropped"] = dropped
        depth = needle_depth(example, tokenizer)
        example["meta"]["needle_depth"] = None if depth is None else round(depth, 4)
        dropped_total += dropped
        src = example["meta"].get("needle_source") or example["meta"].get("insight_id")
        if src:
            sources.add(json.dumps(src))
        out.append(example)
        if progress:
            progress(1)
    if len(out) < examples:
        log.warning("%s/%s: only %d of %d examples after %d candidates (rejects %s)", task, variant, len(out),
                    examples, candidate, dict(rejects))
    if not out:
        ok = pool["status"] == "ok"  # PoolView already read every row's status
        usable = pool.loc[ok, "kind"].value_counts().to_dict()
        failed = pool.loc[~ok, "status"].value_counts().to_dict()
        raise ArtifactError(
            f"{task}/{variant}: no valid example out of {candidate} candidates; rejects {dict(rejects)}. The pool "
            f"holds {sum(usable.values())} usable of {len(pool)} documents (usable by kind {usable}; rejected "
            f"{failed}); a pool this thin means the generator did not follow the document prompts (see the "
            f"pool job's log)")
    counts = {"candidates": candidate, "rejects": sum(rejects.values()), "distractors_dropped": dropped_total,
              "distinct_needle_sources": len(sources), **{f"reject:{r}": n for r, n in sorted(rejects.items())}}
    return out, dataset_stats(task, {variant: out}, counts, variant)


def build_variant_files(task: str, variant: str, pool_path: str | None, model_dir: str, examples_path: str,
                        stats_path: str, model: str, seed: int, examples: int, context_tokens: int,
                        task_data: Mapping[str, Any], log_path: str | None = None) -> pd.DataFrame:
    """Write ``results/{study}/data/{model}/{task}/train/{variant}.parquet`` and its stats; returns the stats.
    ``pool_path`` None: the task writes no pool (``Task.writes_pool``), an empty one stands in."""
    import time

    from tqdm import tqdm

    from synthctx.data.examples import write_examples
    from synthctx.logging_utils import progress_stream, setup_logging
    from synthctx.models.loading import load_tokenizer
    from synthctx.provenance import provenance
    from synthctx.schema import read_metadata, read_table, write_table

    setup_logging(log_path)
    started = time.time()
    if pool_path is None:
        from synthctx.schema import SCHEMAS

        pool, pool_meta = SCHEMAS["document_pool"].empty_table().to_pandas(), {}
    else:
        pool, pool_meta = read_table(pool_path, "document_pool"), read_metadata(pool_path)
    tokenizer = load_tokenizer(model_dir)
    num_documents = int(task_data[get_task(task).synth_data_keys[0]])  # the first: documents per example
    with tqdm(total=examples, desc=f"{task}/{variant}", file=progress_stream(log_path)) as bar:
        out, stats = build_variant(task, variant, pool, tokenizer, seed, examples, context_tokens, num_documents,
                                   task_data.get("max_gold_documents"), progress=bar.update)
    meta = provenance(seed=seed, model=model, task=task, condition=variant, split="train",
                      context_tokens=context_tokens, num_documents=num_documents, examples_requested=examples,
                      pool={k: pool_meta.get(k) for k in ("backend", "backend_version", "generator_model", "seed",
                                                          "sampling", "stats")},
                      pool_file=None if pool_path is None else str(pool_path))
    write_examples(out, examples_path, meta)
    write_table(stats, stats_path, "dataset_stats", meta)
    log.info("%s/%s: %d examples in %.1f s; %s", task, variant, len(out), time.time() - started,
             dict(zip(stats["stat"], stats["value"])))
    return stats
