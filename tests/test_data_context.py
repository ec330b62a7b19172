"""Example building, budgets, splits and outputs of the real-data stage (fixtures + shared samples)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml

from conftest import FIXTURES, REPO
from synthctx.data import splits
from synthctx.data.build import build_real_data, needle_depth, write_real_data
from synthctx.data.examples import read_examples, validate_example
from synthctx.data.prompts import citation_span_in_header, citation_target, document_header, prompt_length
from synthctx.data.text import answer_matches, normalize_answer
from synthctx.schema import ArtifactError, read_metadata, read_table
from synthctx.tasks.mdqa import build_mdqa, compose_mdqa, load_mdqa, mdqa_gold_position
from synthctx.tasks.musique import ParagraphPool, build_musique, load_musique
from synthctx.tasks.summhay import build_summhay, load_summhay, load_summhay_files

RAW = FIXTURES / "raw"
MDQA = [str(RAW / "mdqa" / "nq-open-small.jsonl")]
MUSIQUE = [str(RAW / "musique" / "musique_ans_small.jsonl"), str(RAW / "musique" / "musique_ans_small_array.json")]
SUMMHAY = [str(RAW / "summhay" / f"topic_small{i}.json") for i in (1, 2, 3)]
BUDGET = 1024
TASK_CONFIG = {
    "mdqa": {"num_documents": 5, "gold_position": "uniform"},
    "musique": {"hops": [3], "num_paragraphs": 6},
    "summhay": {"eval_haystacks": 1, "num_documents": 5, "max_gold_documents": 2, "excerpt_sentences": 4,
                "min_insight_match": 0.5},
}
FILES = {"mdqa": MDQA, "musique": MUSIQUE, "summhay": SUMMHAY}


def build(task, tokenizer, **overrides):
    settings = dict(task_config=TASK_CONFIG[task], eval_examples=1, max_train_examples=None, limited_fraction=0.5,
                    seed=1234, context_tokens=BUDGET)
    settings.update(overrides)
    return build_real_data(task, FILES[task], tokenizer, **settings)


def doc_of(example, doc_id):
    return next(d for d in example["documents"] if d["doc_id"] == doc_id)


def needle_texts(example, kind):
    return [doc_of(example, n["doc_id"])["text"][n["start"]:n["end"]] for n in example["needles"] if n["kind"] == kind]


def all_examples(data):
    return data.eval + data.real_full + data.real_limited


# ----------------------------------------------------------------- MDQA


def test_mdqa_examples(smollm_tokenizer):
    data = build("mdqa", smollm_tokenizer)
    assert (len(data.eval), len(data.real_full), len(data.real_limited)) == (1, 6, 3)
    assert data.counts["dropped_budget"] == 0
    by_id = {ex["example_id"]: ex for ex in data.eval + data.real_full}
    assert sorted(by_id) == [f"mdqa-{i:05d}" for i in range(7)]
    moby = by_id["mdqa-00000"]
    assert needle_texts(moby, "answer") == ["Herman Melville", "herman melville"]
    soccer = by_id["mdqa-00002"]
    assert needle_texts(soccer, "answer") == ["11", "eleven"]  # not the 11 inside 2011
    moon = by_id["mdqa-00003"]
    assert sorted(needle_texts(moon, "answer")) == ["1969", "1969", "July 20, 1969"]
    for ex in by_id.values():
        validate_example(ex)
        assert len(ex["documents"]) == 5 and ex["target"] == ex["answers"][0]
        gold = doc_of(ex, ex["gold_doc_ids"][0])
        assert ex["meta"]["gold_position"] == int(ex["gold_doc_ids"][0]) - 1
        assert gold["text"] == next(r.gold.text for r in load_mdqa(MDQA[0]) if r.record_id == ex["example_id"])
        # distractors keep retrieval order around the moved gold passage
        ids = ex["meta"]["distractor_ids"]
        assert ids == sorted(ids)
        assert ex["meta"]["prompt_tokens"] == prompt_length(ex, smollm_tokenizer) <= BUDGET
        assert 0 < ex["meta"]["needle_depth"] < 1


def test_mdqa_fixed_gold_position_and_trimming(smollm_tokenizer):
    record = load_mdqa(MDQA[0])[0]
    full = build_mdqa(record, seed=1, num_documents=5, gold_position=3, tokenizer=smollm_tokenizer,
                              context_tokens=BUDGET).example
    assert full["gold_doc_ids"] == ["4"] and len(full["documents"]) == 5
    # A budget between the 2-document and the 5-document prompt: distractors go from the end.
    two = compose_mdqa(record, record.distractors[:1], 1, 3)
    tight = prompt_length(two, smollm_tokenizer)
    trimmed = build_mdqa(record, seed=1, num_documents=5, gold_position=3, tokenizer=smollm_tokenizer,
                                 context_tokens=tight).example
    assert len(trimmed["documents"]) == 2
    assert [d["title"] for d in trimmed["documents"]] == ["Whaling in Nantucket", "Moby-Dick"]
    assert trimmed["meta"]["prompt_tokens"] <= tight
    dropped = build_mdqa(record, seed=1, num_documents=5, gold_position=3, tokenizer=smollm_tokenizer,
                                 context_tokens=40)
    assert dropped.example is None and dropped.reason == "budget"


def test_mdqa_uniform_positions_vary_and_are_seeded():
    records = load_mdqa(MDQA[0])
    draws = [mdqa_gold_position(r, s, 5, "uniform") for r in records for s in range(10)]
    assert set(draws) == {0, 1, 2, 3, 4}
    assert draws == [mdqa_gold_position(r, s, 5, "uniform") for r in records for s in range(10)]


# ----------------------------------------------------------------- MuSiQue


def test_musique_examples(smollm_tokenizer):
    data = build("musique", smollm_tokenizer)
    assert data.counts["raw_records"] == 6
    assert data.counts["filtered_hops"] == 2  # 2hop and 4hop
    assert data.counts["dropped_no_answer_span"] == 1  # "America" only occurs as "American"
    examples = {ex["example_id"]: ex for ex in data.eval + data.real_full}
    assert sorted(examples) == ["3hop1__101_102_103", "3hop1__501_502_503", "3hop2__201_202_203"]
    ex = examples["3hop1__101_102_103"]
    assert len(ex["documents"]) == 6 and ex["answers"] == ["Oskar Brandt", "O. Brandt"]
    assert sorted(needle_texts(ex, "answer")) == ["O. Brandt", "Oskar Brandt"]
    # intermediate answers only in their own support paragraph
    assert needle_texts(ex, "hop1") == ["Mara Quill"]
    assert needle_texts(ex, "hop2") == ["Lumen X2"]
    gold_titles = sorted(doc_of(ex, g)["title"] for g in ex["gold_doc_ids"])
    assert gold_titles == ["Blue Glass", "Lumen X2", "Mara Quill"]
    # every answer needle lies in a supporting paragraph
    assert {n["doc_id"] for n in ex["needles"]} <= set(ex["gold_doc_ids"])
    # padded example: 4 own paragraphs + 2 from other questions without the answer
    padded = examples["3hop1__501_502_503"]
    assert len(padded["documents"]) == 6 and padded["meta"]["padding_paragraphs"] == 2
    own = {p.text for p in load_musique(MUSIQUE[1])[0].paragraphs}
    pads = [d["text"] for d in padded["documents"] if d["text"] not in own]
    assert len(pads) == 2 and all("ardmore" not in t.lower() for t in pads)
    for e in all_examples(data):
        validate_example(e)
        assert e["meta"]["prompt_tokens"] <= BUDGET


def test_musique_trim_keeps_supporting(smollm_tokenizer):
    record = load_musique(MUSIQUE[0])[0]
    pool = ParagraphPool([record])
    full = build_musique(record, seed=3, num_paragraphs=8, pool=pool, tokenizer=smollm_tokenizer,
                                 context_tokens=BUDGET).example
    assert len(full["documents"]) == 8
    tight = full["meta"]["prompt_tokens"] - 40
    trimmed = build_musique(record, seed=3, num_paragraphs=8, pool=pool, tokenizer=smollm_tokenizer,
                                    context_tokens=tight).example
    assert 3 <= len(trimmed["documents"]) < 8 and trimmed["meta"]["prompt_tokens"] <= tight
    assert sorted(doc_of(trimmed, g)["title"] for g in trimmed["gold_doc_ids"]) == ["Blue Glass", "Lumen X2", "Mara Quill"]
    assert build_musique(record, seed=3, num_paragraphs=8, pool=pool, tokenizer=smollm_tokenizer,
                                 context_tokens=60).reason == "budget"


def test_musique_four_hop_needles(smollm_tokenizer):
    data = build("musique", smollm_tokenizer, task_config={"hops": [3, 4], "num_paragraphs": 6})
    ex = next(e for e in data.eval + data.real_full if e["example_id"].startswith("4hop"))
    assert needle_texts(ex, "hop1") == ["Nils Brook"]
    assert needle_texts(ex, "hop2") == ["Vera Lind"]
    assert needle_texts(ex, "hop3") == ["Halden Institute"]
    assert needle_texts(ex, "answer") == ["Norrvik"]


# ----------------------------------------------------------------- SummHay


def test_summhay_examples(smollm_tokenizer):
    data = build("summhay", smollm_tokenizer, eval_examples=10)
    haystacks = {h.topic_id: h for h in load_summhay_files(SUMMHAY)}
    insights = {i.insight_id: i.text for h in haystacks.values() for s in h.subtopics for i in s.insights}
    assert len(data.eval) + len(data.real_full) == 7  # 3 + 2 + 2 insights
    eval_topics = {e["meta"]["topic_id"] for e in data.eval}
    train_topics = {e["meta"]["topic_id"] for e in data.real_full}
    assert len(eval_topics) == 1 and not eval_topics & train_topics
    for ex in all_examples(data):
        validate_example(ex)
        meta = ex["meta"]
        haystack = haystacks[meta["topic_id"]]
        assert ex["question"] == insights[meta["insight_id"]]
        assert meta["query"] in {s.query for s in haystack.subtopics}
        assert [d["doc_id"] for d in ex["documents"]] == [str(i) for i in range(1, len(ex["documents"]) + 1)]
        assert len(ex["documents"]) == 5 and len(ex["gold_doc_ids"]) == 2
        assert ex["target"] == citation_target(ex["gold_doc_ids"])
        # gold documents are exactly those whose source contains the insight
        for doc, position in zip(ex["documents"], meta["source_positions"]):
            source = haystack.documents[position - 1]
            assert (doc["doc_id"] in ex["gold_doc_ids"]) == (meta["insight_id"] in source.insights)
            assert all(part in source.text for part in doc["text"].split(" ") if part)
        # insight needle = the insight sentence (fixtures contain it verbatim)
        assert needle_texts(ex, "insight") == [ex["question"]] * 2
        cites = [n for n in ex["needles"] if n["kind"] == "citation"]
        assert sorted(n["doc_id"] for n in cites) == sorted(ex["gold_doc_ids"])
        for n in cites:
            header = document_header(int(n["doc_id"]), "")
            assert header[n["start"]:n["end"]] == n["doc_id"]
            assert (n["start"], n["end"]) == citation_span_in_header(int(n["doc_id"]))
        assert meta["excerpt_sentences"] == 4
        assert meta["prompt_tokens"] <= BUDGET


def test_summhay_shrinks_excerpts_then_documents(smollm_tokenizer):
    haystack = load_summhay(SUMMHAY[0])
    subtopic = haystack.subtopics[0]
    insight = subtopic.insights[0]
    kwargs = dict(seed=5, num_documents=5, max_gold_documents=2, excerpt_sentences=4, min_insight_match=0.5,
                  tokenizer=smollm_tokenizer)
    full = build_summhay(haystack, subtopic, insight, "x", context_tokens=BUDGET, **kwargs).example
    tight = full["meta"]["prompt_tokens"] - 30
    small = build_summhay(haystack, subtopic, insight, "x", context_tokens=tight, **kwargs).example
    assert small["meta"]["excerpt_sentences"] < 4 and len(small["documents"]) == 5
    assert needle_texts(small, "insight") == [insight.text] * 2
    assert build_summhay(haystack, subtopic, insight, "x", context_tokens=50, **kwargs).reason == "budget"


# ----------------------------------------------------------------- splits and outputs


def test_split_determinism_and_disjointness(smollm_tokenizer):
    for task in ("mdqa", "musique", "summhay"):
        a = build(task, smollm_tokenizer)
        b = build(task, smollm_tokenizer)
        assert [e["example_id"] for e in all_examples(a)] == [e["example_id"] for e in all_examples(b)]
        assert json.dumps(all_examples(a), sort_keys=True) == json.dumps(all_examples(b), sort_keys=True)
        eval_ids = {e["example_id"] for e in a.eval}
        full_ids = [e["example_id"] for e in a.real_full]
        assert not eval_ids & set(full_ids)
        assert {e["example_id"] for e in a.real_limited} <= set(full_ids)
        assert all(e["split"] == "eval" and e["condition"] == "real" for e in a.eval)
        assert all(e["split"] == "train" and e["condition"] == "real_full" for e in a.real_full)
        assert all(e["condition"] == "real_limited" for e in a.real_limited)
        # eval = the smallest-hash candidates
        if task != "summhay":
            keys = {e["example_id"]: splits.split_key(1234, e["example_id"]) for e in all_examples(a)}
            assert max(keys[i] for i in eval_ids) < min(keys[i] for i in full_ids)
    # a train cap does not change the eval split
    capped = build("mdqa", smollm_tokenizer, max_train_examples=2)
    assert [e["example_id"] for e in capped.eval] == [e["example_id"] for e in build("mdqa", smollm_tokenizer).eval]
    assert len(capped.real_full) == 2 and len(capped.real_limited) == 1


def test_limited_subset_and_heldout():
    examples = [{"example_id": f"e{i}"} for i in range(10)]
    sub = splits.limited_subset(examples, 0.25, 7)
    assert len(sub) == 3 and sub == splits.limited_subset(examples, 0.25, 7)
    assert splits.limited_subset(examples[:2], 0.1, 7) == []  # rounds to nothing: the build rejects it
    assert splits.heldout_groups(["a", "b", "c"], 1, 3) == splits.heldout_groups(["c", "b", "a"], 1, 3)
    with pytest.raises(ValueError, match="no training haystack"):
        splits.heldout_groups(["a", "b"], 2, 3)


def test_no_buildable_example_raises(smollm_tokenizer):
    with pytest.raises(ArtifactError, match="no eval example"):
        build("mdqa", smollm_tokenizer, context_tokens=40)


def test_write_outputs_and_no_partial_output(tmp_path, smollm_tokenizer):
    data = build("summhay", smollm_tokenizer)
    paths = {k: str(tmp_path / f"{k}.parquet") for k in ("eval_path", "full_path", "limited_path", "stats_path")}
    write_real_data(data, metadata={"seed": 1234, "task": "summhay"}, **paths)
    assert len(read_examples(paths["eval_path"])) == len(data.eval)
    assert read_metadata(paths["eval_path"])["seed"] == 1234
    stats = read_table(paths["stats_path"], "dataset_stats")
    value = lambda cond, stat: stats[(stats.condition == cond) & (stats.stat == stat)].value.item()  # noqa: E731
    assert value("real", "examples") == len(data.eval)
    assert value("real_full", "prompt_tokens_max") <= BUDGET
    assert value("all", "dropped_budget") == 0
    # a broken example in the last set: nothing at all is written
    bad = copy.deepcopy(data)
    bad.real_limited[0]["needles"][0]["end"] = 10**6
    bad_paths = {k: str(tmp_path / "bad" / f"{k}.parquet") for k in paths}
    with pytest.raises(ArtifactError, match="needles"):
        write_real_data(bad, metadata={}, **bad_paths)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_validate_accepts_normalized_answer_text():
    from synthctx.data.examples import make_example

    ex = make_example(example_id="x", task="mdqa", condition="real", split="eval",
                      documents=[{"doc_id": "1", "title": "", "text": "the US navy"}], question="q",
                      answers=["U.S."], target="U.S.", gold_doc_ids=["1"],
                      needles=[{"doc_id": "1", "start": 4, "end": 6, "kind": "answer"}])
    validate_example(ex)
    ex["needles"][0].update(start=7, end=11)  # "navy"
    with pytest.raises(ArtifactError, match="not one of the answers"):
        validate_example(ex)


# ----------------------------------------------------------------- shared real samples


def _default_settings():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    data = config["data"]
    return config, dict(eval_examples=data["eval_examples"],
                        limited_fraction=data["limited_fraction"], seed=config["study"]["seed"],
                        context_tokens=config["models"]["smollm2-135m"]["context_tokens"])


@pytest.fixture(scope="module")
def shared_builds(shared_data, smollm_tokenizer):
    config, settings = _default_settings()
    raw = config["raw_data"]
    files = {
        "mdqa": [shared_data / raw["mdqa"]["documents_file"]],
        "musique": [shared_data / f for f in raw["musique"]["files"]],
        "summhay": [shared_data / f for f in raw["summhay"]["files"]],
    }
    from synthctx.study import task_data_settings

    caps = {task: task_data_settings(config, task)[2] for task in files}  # config.yaml's per-task caps
    return dict(settings, caps=caps), {
        task: build_real_data(task, [str(f) for f in files[task]], smollm_tokenizer,
                              task_config=config["data"][task], max_train_examples=caps[task], **settings)
        for task in ("mdqa", "musique", "summhay")
    }


@pytest.mark.parametrize("task", ["mdqa", "musique", "summhay"])
def test_shared_samples_build(shared_builds, smollm_tokenizer, task):
    settings, builds = shared_builds
    data = builds[task]
    assert len(data.eval) == settings["eval_examples"]
    assert 1 <= len(data.real_full) <= settings["caps"][task]
    assert len(data.real_limited) == max(1, math.floor(settings["limited_fraction"] * len(data.real_full) + 0.5))
    assert not {e["example_id"] for e in data.eval} & {e["example_id"] for e in data.real_full}
    for ex in all_examples(data):
        validate_example(ex)
        assert ex["meta"]["prompt_tokens"] <= settings["context_tokens"]
        if task in ("mdqa", "musique"):
            answer_needles = needle_texts(ex, "answer")
            assert answer_needles and all(answer_matches(t, ex["answers"]) for t in answer_needles)
    if task == "mdqa":
        sample = data.eval[0]
        assert prompt_length(sample, smollm_tokenizer) == sample["meta"]["prompt_tokens"]
        assert needle_depth(sample, smollm_tokenizer) == pytest.approx(sample["meta"]["needle_depth"], abs=1e-3)
    if task == "musique":
        assert all(e["example_id"].startswith("3hop") for e in all_examples(data))
        for ex in data.eval:
            record_hops = [k for k in ("hop1", "hop2") if needle_texts(ex, k)]
            assert record_hops  # intermediate answers found in their paragraphs
    if task == "summhay":
        eval_docs = {(e["meta"]["topic_id"], p) for e in data.eval for p in e["meta"]["source_positions"]}
        train_docs = {(e["meta"]["topic_id"], p) for e in data.real_full for p in e["meta"]["source_positions"]}
        assert eval_docs and train_docs and not eval_docs & train_docs
        assert len({e["meta"]["topic_id"] for e in data.eval}) == 1
        for ex in all_examples(data):
            assert ex["target"] == citation_target(ex["gold_doc_ids"])
            for text, f1 in zip(needle_texts(ex, "insight"), ex["meta"]["insight_f1"]):
                assert f1 > 0 and normalize_answer(text)
