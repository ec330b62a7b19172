"""Synthetic variants: per-variant properties, budget fitting, determinism, counted rejects."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from synthctx.data.examples import examples_to_frame, read_examples, write_examples
from synthctx.data.prompts import citation_span_in_header, citation_target, prompt_length
from synthctx.schema import ArtifactError, read_table
from synthctx.synth.backends import GenerationParams
from synthctx.synth.entities import EntityGenerator, Fact, chain_question
from fakes import FakeBackend
from synthctx.synth.pool import generate_pool
from synthctx.tasks import get_task
from synthctx.study import BUILTIN_SYNTHETIC as VARIANTS
from synthctx.synth.variants import (FILLER_SENTENCES, SYMBOL_ALPHABET, PoolView, Reject,
                                     VariantSettings, build_variant, build_variant_files, fact_passage,
                                     filler_document, finalize, fit_to_budget, insert_sentence, sentences,
                                     without_last_droppable)

SEED = 1234
DOCS = {"mdqa": 5, "musique": 6, "summhay": 5}
N = 6
BUDGET = 1024
ALWAYS_FAIL = {"mdqa-needle003", "musique-chain001-hop2", "summhay-topic0-costs-0"}


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    out = {}
    for task in DOCS:
        frame, _ = generate_pool(task, FakeBackend(fail_every=7, fail_items=ALWAYS_FAIL), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=SEED), 36,
                                 tmp_path_factory.mktemp(f"partial-{task}"), "fake")
        out[task] = frame
    return out


@pytest.fixture(scope="module")
def built(pools, smollm_tokenizer):
    return {(task, v): build_variant(task, v, pools[task], smollm_tokenizer, SEED, N, BUDGET, DOCS[task], 2)
            for task in DOCS for v in VARIANTS}


def stats_dict(stats: pd.DataFrame) -> dict[str, float]:
    return dict(zip(stats["stat"], stats["value"]))


def is_filler(text: str) -> bool:
    return all(s in FILLER_SENTENCES for s in sentences(text))


def non_gold(ex):
    return [d for d in ex["documents"] if d["doc_id"] not in ex["gold_doc_ids"]]


def test_counts_schema_and_budget(built, smollm_tokenizer):
    for (task, variant), (examples, stats) in built.items():
        assert len(examples) == N, (task, variant)
        assert {e["condition"] for e in examples} == {variant}
        assert {e["split"] for e in examples} == {"train"}
        assert len({e["example_id"] for e in examples}) == N
        for ex in examples:
            assert prompt_length(ex, smollm_tokenizer) <= BUDGET
            assert ex["meta"]["token_length"] == prompt_length(ex, smollm_tokenizer)
        s = stats_dict(stats)
        assert s["examples"] == N and s["prompt_tokens_max"] <= BUDGET
        assert s["candidates"] == N + s["rejects"]


def test_needle_expression_templated_vs_prose(built):
    for task in ("mdqa", "musique"):
        for variant in ("low_high", "low_low"):
            for ex in built[(task, variant)][0]:
                facts = ex["meta"].get("facts") or [ex["meta"]["fact"]]
                gold_text = " ".join(d["text"] for d in ex["documents"] if d["doc_id"] in ex["gold_doc_ids"])
                for f in facts:
                    assert Fact.from_dict(f).sentence() in gold_text
        for variant in ("high_high", "high_low"):
            for ex in built[(task, variant)][0]:
                facts = ex["meta"].get("facts") or [ex["meta"]["fact"]]
                gold_text = " ".join(d["text"] for d in ex["documents"] if d["doc_id"] in ex["gold_doc_ids"])
                for f in facts:
                    fact = Fact.from_dict(f)
                    assert fact.sentence() not in gold_text  # prose, not the template
                    assert fact.object in gold_text and fact.subject in gold_text
    for ex in built[("summhay", "low_low")][0]:
        for d in ex["documents"]:
            if d["doc_id"] in ex["gold_doc_ids"]:
                assert ex["question"] in d["text"]  # Simplified: the templated insight itself
    for ex in built[("summhay", "high_high")][0]:
        key = ex["meta"]["insight_key"]
        for d in ex["documents"]:
            if d["doc_id"] in ex["gold_doc_ids"]:
                assert key in d["text"] and ex["question"] not in d["text"]


def test_haystack_filler_vs_diverse(built):
    for task in DOCS:
        for variant in ("high_low", "low_low"):
            for ex in built[(task, variant)][0]:
                keys = ex["meta"].get("distractor_keys", [])  # SummHay: other insights of the topic
                for d in non_gold(ex):
                    assert all(s in FILLER_SENTENCES or any(k in s for k in keys) for s in sentences(d["text"]))
                    assert any(s in FILLER_SENTENCES for s in sentences(d["text"]))
        for variant in ("high_high", "low_high"):
            for ex in built[(task, variant)][0]:
                assert not any(is_filler(d["text"]) for d in ex["documents"])
                assert all(d["title"] for d in ex["documents"])
                assert len({d["text"] for d in ex["documents"]}) == len(ex["documents"])


def test_symbolic_alphabet(built):
    allowed = set(SYMBOL_ALPHABET) | set(":; ")
    for task in DOCS:
        for ex in built[(task, "symbolic")][0]:
            for d in ex["documents"]:
                assert set(d["text"]) <= allowed
            assert not re.search(r"[A-Z]", "".join(d["text"] for d in ex["documents"]))
            kinds = {n["kind"] for n in ex["needles"]}
            if task == "summhay":
                assert ex["question"] in "".join(d["text"] for d in ex["documents"])
                assert {"insight", "citation"} <= kinds
            else:
                assert {"key", "value"} <= kinds
                value = [n for n in ex["needles"] if n["kind"] == "value"][0]
                doc = next(d for d in ex["documents"] if d["doc_id"] == value["doc_id"])
                assert doc["text"][value["start"]:value["end"]] == ex["target"]


def test_musique_three_hop_chain(built):
    for variant in VARIANTS:
        for ex in built[("musique", variant)][0]:
            assert len(ex["gold_doc_ids"]) == 3
            kinds = [n["kind"] for n in ex["needles"]]
            assert "hop1" in kinds and "hop2" in kinds
            assert ("value" if variant == "symbolic" else "answer") in kinds
            by_id = {d["doc_id"]: d for d in ex["documents"]}
            spans = {n["kind"]: by_id[n["doc_id"]]["text"][n["start"]:n["end"]] for n in ex["needles"]}
            if variant == "symbolic":
                chain = ex["meta"]["chain"]
                assert [spans["hop1"], spans["hop2"], spans["value"]] == chain[1:]
                assert chain[0] in ex["question"] and ex["target"] == chain[3]
            else:
                facts = [Fact.from_dict(f) for f in ex["meta"]["facts"]]
                assert [spans["hop1"], spans["hop2"], spans["answer"]] == [f.object for f in facts]
                assert facts[0].object == facts[1].subject and facts[1].object == facts[2].subject
                assert ex["question"] == chain_question(facts)
                assert ex["target"] == facts[2].object


def test_summhay_citation_targets(built):
    for variant in VARIANTS:
        for ex in built[("summhay", variant)][0]:
            assert ex["target"] == citation_target(ex["gold_doc_ids"]) and re.fullmatch(r"(\[\d+\])+", ex["target"])
            assert [d["doc_id"] for d in ex["documents"]] == [str(i) for i in range(1, len(ex["documents"]) + 1)]
            cites = [n for n in ex["needles"] if n["kind"] == "citation"]
            insights = [n for n in ex["needles"] if n["kind"] == "insight"]
            assert sorted(n["doc_id"] for n in cites) == sorted(ex["gold_doc_ids"])
            assert sorted(n["doc_id"] for n in insights) == sorted(ex["gold_doc_ids"])
            for n in cites:
                assert (n["start"], n["end"]) == citation_span_in_header(int(n["doc_id"]))
            key = ex["meta"].get("insight_key") or ex["question"]
            containing = [d["doc_id"] for d in ex["documents"] if key in d["text"]]
            assert containing == sorted(ex["gold_doc_ids"], key=int)
            assert ex["meta"]["query"]


def test_answer_needles_and_clean_distractors(built):
    for task in ("mdqa", "musique"):
        for variant in ("high_high", "high_low", "low_high", "low_low"):
            for ex in built[(task, variant)][0]:
                for d in non_gold(ex):
                    assert ex["target"] not in d["text"]
                answer_spans = [n for n in ex["needles"] if n["kind"] == "answer"]
                assert answer_spans
                gold_answer_doc = answer_spans[0]["doc_id"]
                text = next(d["text"] for d in ex["documents"] if d["doc_id"] == gold_answer_doc)
                assert len(answer_spans) == text.count(ex["target"])


def test_same_seed_identical_parquet(pools, smollm_tokenizer, tmp_path):
    for task, variant in (("mdqa", "high_high"), ("musique", "low_low"), ("summhay", "high_low"),
                          ("summhay", "symbolic")):
        a, sa = build_variant(task, variant, pools[task], smollm_tokenizer, SEED, 4, BUDGET, DOCS[task], 2)
        b, sb = build_variant(task, variant, pools[task], smollm_tokenizer, SEED, 4, BUDGET, DOCS[task], 2)
        write_examples(a, tmp_path / "a.parquet")
        write_examples(b, tmp_path / "b.parquet")
        pd.testing.assert_frame_equal(read_table(tmp_path / "a.parquet", "examples"),
                                      read_table(tmp_path / "b.parquet", "examples"))
        pd.testing.assert_frame_equal(sa, sb)
        c, _ = build_variant(task, variant, pools[task], smollm_tokenizer, SEED + 1, 4, BUDGET, DOCS[task], 2)
        assert not examples_to_frame(a).equals(examples_to_frame(c))


def test_pool_same_seed_identical(tmp_path):
    f1, _ = generate_pool("summhay", FakeBackend(), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=3), 20, tmp_path / "p1", "fake")
    f2, _ = generate_pool("summhay", FakeBackend(), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=3), 20, tmp_path / "p2", "fake")
    pd.testing.assert_frame_equal(f1, f2)


def test_rejects_counted_never_kept(pools, built, smollm_tokenizer):
    # The fake LLM fails every 7th request: some items fail twice and stay in the pool as rejects.
    pool = pd.concat(pools.values())
    assert pool["status"].str.match(r"^(ok|reject:[a-z_]+)$").all()
    assert set(pool.loc[pool["status"] != "ok", "pool_id"]) >= ALWAYS_FAIL
    rejected = set(pool.loc[pool["status"] != "ok", "pool_id"])
    for (task, variant), (examples, _) in built.items():
        for ex in examples:
            src = ex["meta"].get("needle_source") or []
            assert not set([src] if isinstance(src, str) else src) & rejected
            if task == "summhay" and variant.startswith("high"):
                assert ex["meta"]["insight_id"] != "topic0-costs-0"
    # A budget too small for the gold documents: every candidate is rejected as over_budget.
    with pytest.raises(ArtifactError, match="over_budget"):
        build_variant("musique", "low_low", pools["musique"], smollm_tokenizer, SEED, 2, 200, 6, 2)
    # A tight budget: distractors are dropped first, the rest rejected and counted.
    examples, stats = build_variant("mdqa", "high_low", pools["mdqa"], smollm_tokenizer, SEED, 3, 330, 5, 2)
    s = stats_dict(stats)
    assert s["distractors_dropped"] > 0
    assert all(len(e["documents"]) < 5 for e in examples)
    assert s["candidates"] == s["examples"] + s["rejects"]
    assert s["rejects"] == sum(v for k, v in s.items() if k.startswith("reject:"))


def test_high_variant_needs_valid_pool(pools, smollm_tokenizer):
    bad = pools["mdqa"].assign(status="reject:missing_object")
    with pytest.raises(ArtifactError, match="no valid needle article"):
        build_variant("mdqa", "high_high", bad, smollm_tokenizer, SEED, 2, BUDGET, 5, 2)
    # Low-concept variants do not need LLM prose at all.
    examples, _ = build_variant("mdqa", "low_low", bad, smollm_tokenizer, SEED, 2, BUDGET, 5, 2)
    assert len(examples) == 2


def test_unusable_pool_error_names_its_counts(pools, smollm_tokenizer):
    # HF generate on an HF-only GPU node wrote 589 of 600 SummHay news documents as invalid JSON.
    pool = pools["summhay"]
    keep = pool.index[pool["kind"] == "news_document"][:2]  # as there, 2 documents survive
    bad = pool.assign(status=["ok" if i in keep else "reject:bad_json" for i in pool.index])
    expected = (r"summhay/high_high: no valid example .*holds 2 usable of 36 documents "
                r"\(usable by kind \{'news_document': 2\}; rejected \{'reject:bad_json': 34\}")
    with pytest.raises(ArtifactError, match=expected):
        build_variant("summhay", "high_high", bad, smollm_tokenizer, SEED, 2, BUDGET, 5, 2)


def _fit_one_at_a_time(draft, settings, tokenizer, example_id):
    """Reference: drop the last droppable document, re-measure, repeat."""
    dropped = 0
    while True:
        example = finalize(draft, settings, example_id)
        tokens = prompt_length(example, tokenizer)
        if tokens <= settings.context_tokens:
            return example, tokens, dropped
        if not draft.droppable:
            raise Reject("over_budget")
        draft = without_last_droppable(draft, 1)
        dropped += 1


@pytest.mark.parametrize("task", sorted(DOCS))
def test_bisected_budget_fit_equals_dropping_one_at_a_time(pools, smollm_tokenizer, task):
    import random

    outcomes = []
    for budget in (300, 450, 700):
        settings = VariantSettings(task, "low_low", SEED, 4, budget, DOCS[task] + 6, 2)
        builder = get_task(task).variant_builder(settings, PoolView.from_frame(pools[task]))
        for candidate in range(4):
            draft = builder.build(candidate, random.Random(candidate))
            try:
                expected = _fit_one_at_a_time(draft, settings, smollm_tokenizer, "x")
            except Reject:
                with pytest.raises(Reject):
                    fit_to_budget(draft, settings, smollm_tokenizer, "x")
                outcomes.append("over")
                continue
            assert fit_to_budget(draft, settings, smollm_tokenizer, "x") == expected
            outcomes.append(expected[2])
    assert any(isinstance(o, int) and o > 1 for o in outcomes), outcomes  # the search had work to do


def test_build_variant_files(pools, smollm_dir, tmp_path):
    from synthctx.schema import write_table

    pool_path = tmp_path / "pool.parquet"
    write_table(pools["summhay"], pool_path, "document_pool", {"backend": "fake", "seed": SEED})
    ex_path, st_path = tmp_path / "train" / "low_high.parquet", tmp_path / "stats" / "low_high.parquet"
    build_variant_files("summhay", "low_high", str(pool_path), str(smollm_dir), str(ex_path), str(st_path),
                        "smollm2-135m", SEED, 3, BUDGET, {"num_documents": 5, "max_gold_documents": 2})
    assert len(read_examples(str(ex_path))) == 3
    stats = read_table(st_path, "dataset_stats")
    assert set(stats["condition"]) == {"low_high"} and "prompt_tokens_mean" in set(stats["stat"])


def test_helpers():
    import random

    rng = random.Random(0)
    doc = filler_document(rng, 200)
    assert len(doc) >= 200 and is_filler(doc)
    text, start = insert_sentence(doc, "The mayor of Dranholt is Velmora Quist.", rng)
    assert text[start:].startswith("The mayor of Dranholt is Velmora Quist.")
    gen = EntityGenerator(5)
    names = [gen.person() for _ in range(50)] + [gen.place() for _ in range(50)]
    assert len(set(names)) == 100 and not any(a != b and a in b for a in names for b in names)
    assert EntityGenerator(5).person() == names[0]
    fact = Fact("Velmora Quist", "person", "birthplace", "Dranholt", "place")
    assert fact.sentence() == "The birthplace of Velmora Quist is Dranholt."
    article = "Velmora Quist is a poet. She likes tea. She was born in Dranholt. She moved away."
    assert fact_passage(article, fact) == "Velmora Quist is a poet. She likes tea. She was born in Dranholt."


def test_summhay_topics_hold_a_haystack_of_news():
    """Each SummHay topic gets news for one haystack (gpu-small: 20 documents per haystack once
    found 8 news per topic and built no high-diversity example); small pools keep their plan."""
    from collections import Counter

    from synthctx.synth.pool import NEWS_PER_HAYSTACK_DOCUMENT, plan_pool

    def news_per_topic(items):
        return Counter(it["fields"]["topic_id"] for it in items if it["kind"] == "news_document")

    big = plan_pool("summhay", 600, SEED, haystack_documents=20)
    assert len(big) == 600
    assert min(news_per_topic(big).values()) >= NEWS_PER_HAYSTACK_DOCUMENT * 20
    assert len(news_per_topic(big)) == 600 // (8 + 30)  # 8 insights + 30 news per topic
    # The default study (24 items, 4 documents per haystack) plans exactly what it did before.
    assert plan_pool("summhay", 24, SEED, haystack_documents=4) == plan_pool("summhay", 24, SEED)
    assert len(news_per_topic(plan_pool("summhay", 24, SEED))) == 1


@pytest.mark.parametrize("haystack_documents", [None, 20])
def test_summhay_diverse_haystacks_need_topic_sized_pools(smollm_tokenizer, tmp_path, haystack_documents):
    pool, _ = generate_pool("summhay", FakeBackend(), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=SEED), 160, tmp_path, "fake",
                            haystack_documents=haystack_documents)
    if haystack_documents is None:  # 10 topics of 8 news each: no 20-document haystack
        with pytest.raises(ArtifactError, match="pool_too_small"):
            build_variant("summhay", "high_high", pool, smollm_tokenizer, SEED, 2, 8192, 20, 4)
        return
    examples, _ = build_variant("summhay", "high_high", pool, smollm_tokenizer, SEED, 2, 8192, 20, 4)
    assert len(examples) == 2
    assert all(len(ex["documents"]) == 20 for ex in examples)
