"""data.musique.train_hops: Real (Full)/(Limited) may train on other hop counts than the eval split.

The eval split stays on ``hops`` (drawn as without train_hops); linked groups are computed over
all candidates, so a question of another hop count that shares a sub-question or a supporting
paragraph with an eval question, or shows one of its supporting paragraphs, stays out of training.
Fixtures are written here (tmp_path); the shared-sample test reads ../shared/data and skips
when it is absent.
"""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO
from synthctx.data import context, loaders, splits
from synthctx.data.build import build_real_data
from synthctx.tasks.musique import ParagraphPool, load_musique_files

BUDGET = 1024
SEED = 1234


def page(tag):
    return {"title": f"Page {tag}", "paragraph_text": f"The page {tag} records a plain fact about item {tag}."}


def record(hop_ids, answer, fillers=(), supports=None):
    """An official MuSiQue-Ans record of len(hop_ids) hops; the last supporting paragraph holds ``answer``.

    ``supports``: the first len(hop_ids) - 1 supporting paragraphs (default: pages of their own);
    ``fillers``: extra non-supporting paragraphs (title/paragraph_text dicts) before two of its own.
    """
    n = len(hop_ids)
    prefix = {2: "2hop", 3: "3hop1", 4: "4hop1"}[n]
    rid = f"{prefix}__" + "_".join(str(h) for h in hop_ids)
    supports = list(supports or [page(f"{rid}-{k}") for k in range(n - 1)])
    supports.append({"title": f"End {rid}", "paragraph_text": f"The chain {rid} ends in {answer} at last."})
    distractors = list(fillers) + [
        {"title": f"Filler {rid}-{j}", "paragraph_text": f"Filler note {rid}-{j} about weather and roads."}
        for j in range(2)
    ]
    paragraphs = [dict(p, idx=i, is_supporting=True) for i, p in enumerate(supports)]
    paragraphs += [dict(p, idx=len(supports) + j, is_supporting=False) for j, p in enumerate(distractors)]
    return {
        "id": rid,
        "paragraphs": paragraphs,
        "question": f"Where does chain {rid} end?",
        "question_decomposition": [
            {"id": h, "question": f"step {h}", "answer": f"Answer {h}", "paragraph_support_idx": k}
            for k, h in enumerate(hop_ids)
        ],
        "answer": answer,
        "answer_aliases": [],
        "answerable": True,
    }


def write(tmp_path, records, name="musique.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [str(path)]


def cross_hop_fixture(tmp_path):
    """Six 3-hop questions T_i; per T_i a 2-hop S_i sharing its first sub-question and a 2-hop P_i
    whose distractor is T_i's first supporting paragraph; four unlinked 2-hop and one 4-hop question."""
    records, pairs = [], []
    for i in range(6):
        t = record([100 * i + 1, 100 * i + 2, 100 * i + 3], f"Town{i}")
        s = record([100 * i + 1, 5000 + i], f"Village{i}")
        p = record([6000 + 10 * i, 6001 + 10 * i], f"Hamlet{i}", fillers=[t["paragraphs"][0]])
        records += [t, s, p]
        pairs.append((t["id"], s["id"], p["id"]))
    free = [record([7000 + 10 * j, 7001 + 10 * j], f"City{j}")["id"] for j in range(4)]
    records += [record([7000 + 10 * j, 7001 + 10 * j], f"City{j}") for j in range(4)]
    records.append(record([8001, 8002, 8003, 8004], "Port"))
    return write(tmp_path, records), pairs, free


def build(files, tokenizer, eval_examples=3, **task_config):
    return build_real_data(
        "musique", files, tokenizer, task_config={"hops": [3], "num_paragraphs": 6, **task_config},
        eval_examples=eval_examples, max_train_examples=None, limited_fraction=0.25, seed=SEED, context_tokens=BUDGET,
    )


def ids(examples):
    return [ex["example_id"] for ex in examples]


def test_train_hops_trains_on_2hop_questions_not_linked_to_the_eval_split(tmp_path, smollm_tokenizer):
    files, pairs, free = cross_hop_fixture(tmp_path)
    data = build(files, smollm_tokenizer, train_hops=[2, 3])
    eval_ids, full_ids = set(ids(data.eval)), set(ids(data.real_full))
    assert len(eval_ids) == 3 and all(i.startswith("3hop") for i in eval_ids)
    # the eval split is the one of the three-hop questions alone (singletons: the first 3 by hash)
    three_hop = [t for t, _, _ in pairs]
    assert ids(data.eval) == splits.order_by_hash(three_hop, SEED, str)[:3]
    for t, shares_hop, shows_evidence in pairs:
        if t in eval_ids:
            assert shares_hop not in full_ids and shows_evidence not in full_ids, (t, sorted(full_ids))
        else:
            assert {t, shares_hop, shows_evidence} <= full_ids
    assert set(free) <= full_ids  # unlinked 2-hop questions train
    assert not any(i.startswith("4hop") for i in full_ids)
    assert full_ids == {i for p in pairs if p[0] not in eval_ids for i in p} | set(free)
    assert data.counts["train_linked_to_eval"] == 6
    assert data.counts["filtered_hops"] == 1  # the 4-hop question
    assert (data.counts["real_full_hops_2"], data.counts["real_full_hops_3"]) == (10, 3)
    assert set(ids(data.real_limited)) < full_ids
    # every candidate is accounted for
    assert len(eval_ids) + len(full_ids) + data.counts["train_linked_to_eval"] == data.counts["candidates"]


def test_train_hops_without_the_eval_hop_count_leaves_those_questions_out(tmp_path, smollm_tokenizer):
    files, pairs, free = cross_hop_fixture(tmp_path)
    data = build(files, smollm_tokenizer, train_hops=[2])
    eval_ids, full_ids = set(ids(data.eval)), set(ids(data.real_full))
    assert all(i.startswith("3hop") for i in eval_ids) and all(i.startswith("2hop") for i in full_ids)
    assert data.counts["not_train_hops"] == 3  # the three-hop questions not in eval
    assert full_ids == {i for t, s, p in pairs if t not in eval_ids for i in (s, p)} | set(free)


@pytest.mark.parametrize("train_hops", ["absent", None, [3]])
def test_train_hops_absent_keeps_the_hops_only_split(tmp_path, smollm_tokenizer, train_hops):
    files, pairs, _ = cross_hop_fixture(tmp_path)
    extra = {} if train_hops == "absent" else {"train_hops": train_hops}
    data = build(files, smollm_tokenizer, **extra)
    # hops-only: the three-hop questions (unlinked among themselves) in seeded-hash order,
    # the first 3 for eval, the rest for Real (Full)
    ordered = splits.order_by_hash([t for t, _, _ in pairs], SEED, str)
    assert ids(data.eval) == ordered[:3]
    assert ids(data.real_full) == ordered[3:]
    assert data.counts["train_linked_to_eval"] == 0 and data.counts["real_full_hops_3"] == 3
    # the same examples, byte for byte, as with no train_hops key, and the same eval split as with 2-hop training
    baseline = build(files, smollm_tokenizer)
    assert (data.eval, data.real_full, data.real_limited) == (baseline.eval, baseline.real_full, baseline.real_limited)
    assert data.eval == build(files, smollm_tokenizer, train_hops=[2, 3]).eval


def test_question_showing_another_questions_evidence_shares_its_side(tmp_path, smollm_tokenizer):
    """Three-hop only: R_i's distractor is T_i's supporting paragraph, so R_i's prompt may show it."""
    records, pairs = [], []
    for i in range(6):
        t = record([100 * i + 1, 100 * i + 2, 100 * i + 3], f"Town{i}")
        r = record([300 * i + 51, 300 * i + 52, 300 * i + 53], f"Farm{i}", fillers=[t["paragraphs"][1]])
        records += [t, r]
        pairs.append((t["id"], r["id"]))
    data = build(write(tmp_path, records), smollm_tokenizer, eval_examples=6)
    side = {i: "eval" for i in ids(data.eval)} | {i: "full" for i in ids(data.real_full)}
    assert len(data.eval) == 6
    assert all(side[t] == side[r] for t, r in pairs), side


def evidence_keys(records):
    return {context.passage_key(r.paragraphs[s]) for r in records for s in r.supporting}


def test_shared_musique_gpu_small_train_hops_split_is_leak_free(shared_data, smollm_tokenizer):
    """gpu-small's split settings (eval 30 three-hop, train_hops [2, 3, 4], 8K tokens) at 20 paragraphs."""
    files = [str(shared_data / "musique" / name) for name in
             ("musique_ans_train_sample100.hipporag.json", "musique_ans_sample200.migres.jsonl")]
    records = {r.record_id: r for r in load_musique_files(files)}

    def run(**extra):
        return build_real_data(
            "musique", files, smollm_tokenizer, task_config={"hops": [3], "num_paragraphs": 20, **extra},
            eval_examples=30, max_train_examples=None, limited_fraction=0.25, seed=SEED, context_tokens=8192,
        )

    data = run(train_hops=[2, 3, 4])
    eval_recs = [records[i] for i in ids(data.eval)]
    full_recs = [records[i] for i in ids(data.real_full)]
    hop_ids = lambda recs: {h.hop_id for r in recs for h in r.decomposition}  # noqa: E731
    assert not hop_ids(eval_recs) & hop_ids(full_recs)
    assert not evidence_keys(eval_recs) & evidence_keys(full_recs)
    # neither side's prompts show the other side's evidence (as a distractor or padding)
    shown = lambda exs: {context.passage_key(loaders.Passage(d["title"], d["text"], "")) for e in exs  # noqa: E731
                         for d in e["documents"]}
    assert not shown(data.eval) & evidence_keys(full_recs)
    assert not shown(data.real_full) & evidence_keys(eval_recs)
    # padding (a prompt document from another record) is nobody's evidence, 2- and 4-hop included
    everyone = evidence_keys(records.values())
    assert not {context.passage_key(p) for _, p in ParagraphPool(list(records.values())).items} & everyone
    for ex in data.eval + data.real_full:
        own = {context.passage_key(p) for p in records[ex["example_id"]].paragraphs}
        assert not (shown([ex]) - own) & everyone
    hist = Counter(r.hops for r in full_recs)
    assert len(data.eval) == 30 and {r.hops for r in eval_recs} == {3}
    assert hist[2] > 0 and hist[4] > 0
    assert {k: data.counts[f"real_full_hops_{k}"] for k in (2, 3, 4)} == {k: hist[k] for k in (2, 3, 4)}
    dropped = sum(v for k, v in data.counts.items() if k.startswith("dropped_"))
    assert (len(data.eval) + len(data.real_full) + dropped + data.counts["train_linked_to_eval"]
            == data.counts["candidates"])
    # measured: Real (Full) 264 = 209 2-hop + 28 3-hop + 27 4-hop; 5 left out as linked to eval
    assert len(data.real_full) == 264 and data.counts["train_linked_to_eval"] == 5
    # the eval split is the three-hop-only one
    assert ids(data.eval) == ids(run().eval)


@pytest.mark.parametrize("value", [[5], [], "2,3"])
def test_schema_refuses_bad_train_hops(value):
    config = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))
    validate(copy.deepcopy(config), str(REPO / "schemas" / "config.schema.yaml"))  # null passes
    config["data"]["musique"]["train_hops"] = value
    from synthctx.study import check_config

    with pytest.raises(Exception) as err:
        # the schema, then the task's own section schema (the registry's check_config)
        validate(config, str(REPO / "schemas" / "config.schema.yaml"))
        check_config(config)
    assert "train_hops" in str(err.value), str(err.value)


def test_empty_train_hops_is_refused_by_the_build(tmp_path, smollm_tokenizer):
    files, _, _ = cross_hop_fixture(tmp_path)
    with pytest.raises(ValueError, match="train_hops"):
        build(files, smollm_tokenizer, train_hops=[])
