"""Issue 14 (data): set sizes, leak-free eval/train splits, SummHay insight-needle quality.

Fixtures are written by the tests themselves (tmp_path); the shared-sample tests read
../shared/data and skip when it is absent.
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import FIXTURES, REPO
from synthctx.data import loaders, splits
from synthctx.data.build import build_real_data
from synthctx.study import task_data_settings
from synthctx.schema import ArtifactError
from synthctx.tasks.mdqa import load_mdqa
from synthctx.tasks.musique import MusiqueRecord, ParagraphPool

BUDGET = 1024
MDQA_FIXTURE = [str(FIXTURES / "raw" / "mdqa" / "nq-open-small.jsonl")]


def page_key(title, text):
    """A paragraph's identity across records (independent of the code under test)."""
    return " ".join(title.casefold().split()), " ".join(text.casefold().split())


def raw_musique(files):
    """record id -> (single-hop question ids, supporting paragraph keys), read from the raw JSON."""
    out = {}
    for path in files:
        for _, record in loaders.iter_json_records(path):
            out[record["id"]] = (
                {str(step["id"]) for step in record["question_decomposition"]},
                {page_key(p["title"], p["paragraph_text"]) for p in record["paragraphs"] if p["is_supporting"]},
            )
    return out


def musique_overlap(files, data):
    """(shared hop ids, shared supporting paragraphs) of the eval split and Real (Full)."""
    raw = raw_musique(files)
    hops = lambda exs: set().union(*[raw[e["example_id"]][0] for e in exs])  # noqa: E731
    pages = lambda exs: set().union(*[raw[e["example_id"]][1] for e in exs])  # noqa: E731
    return hops(data.eval) & hops(data.real_full), pages(data.eval) & pages(data.real_full)


def sides(data):
    """example id -> 'eval' | 'full' for every example of the two splits."""
    out = {e["example_id"]: "eval" for e in data.eval}
    out.update({e["example_id"]: "full" for e in data.real_full})
    return out


def assert_groups_on_one_side(data, groups):
    placed = sides(data)
    for group in groups:
        where = {placed[i] for i in group if i in placed}
        assert len(where) <= 1, (group, {i: placed.get(i) for i in group})


# ----------------------------------------------------------------- writers of small raw files


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def musique_record(hop_ids, supports, answer, fillers):
    """A three-hop MuSiQue record; ``supports`` are (title, text) of its hops, the last holds ``answer``."""
    paragraphs = [{"idx": i, "title": t, "paragraph_text": x, "is_supporting": True}
                  for i, (t, x) in enumerate(supports)]
    paragraphs += [{"idx": len(supports) + j, "title": f"Filler {hop_ids[0]}-{j}", "paragraph_text": text,
                    "is_supporting": False} for j, text in enumerate(fillers)]
    return {
        "id": "3hop1__" + "_".join(str(h) for h in hop_ids),
        "paragraphs": paragraphs,
        "question": f"Which place ends chain {hop_ids}?",
        "question_decomposition": [
            {"id": h, "question": f"step {h}", "answer": f"Answer {h}", "paragraph_support_idx": k}
            for k, h in enumerate(hop_ids)
        ],
        "answer": answer,
        "answer_aliases": [],
        "answerable": True,
    }


def support(tag):
    return (f"Page {tag}", f"The page {tag} records a plain fact about item {tag} for the archive.")


def musique_fixture(tmp_path):
    """12 records: two share hop 1000, two share a supporting paragraph, three form a chain."""
    shared_page = support("shared")
    chain_page = support("chain")
    specs = [
        ([1000, 1001, 1002], None), ([1000, 1101, 1102], None),              # same first hop
        ([2001, 2002, 2003], shared_page), ([2101, 2102, 2103], shared_page),  # same paragraph
        ([3000, 3001, 3002], None), ([3000, 3101, 3102], chain_page), ([3201, 3202, 3203], chain_page),
    ] + [([4000 + 10 * k, 4001 + 10 * k, 4002 + 10 * k], None) for k in range(5)]
    records = []
    for n, (hops, extra) in enumerate(specs):
        answer = f"Town{n:02d}"
        supports = [support(f"{n}-a"), extra or support(f"{n}-b"),
                    (f"End {hops[2]}", f"The chain that starts with item {hops[0]} ends in {answer} at last.")]
        fillers = [f"Filler text number {n}-{j} about weather, roads and rivers." for j in range(3)]
        records.append(musique_record(hops, supports, answer, fillers))
    groups = [
        [records[0]["id"], records[1]["id"]],
        [records[2]["id"], records[3]["id"]],
        [records[4]["id"], records[5]["id"], records[6]["id"]],
    ]
    return [write_jsonl(tmp_path / "musique.jsonl", records)], groups


def mdqa_fixture(tmp_path):
    """10 questions; 0-1 and 2-3-4 share a gold passage."""
    records = []
    for n in range(10):
        gold_tag = {1: 0, 3: 2, 4: 2}.get(n, n)
        answer = f"Person{gold_tag:02d}"
        gold = {"title": f"Gold {gold_tag}", "text": f"The book {gold_tag} was written by {answer} long ago.",
                "hasanswer": True, "isgold": True}
        distractors = [{"id": str(100 * n + j), "title": f"Other {n}-{j}", "hasanswer": False, "isgold": False,
                        "text": f"Unrelated note {n}-{j} about rain."} for j in range(3)]
        records.append({"question": f"who wrote book {gold_tag} (asked {n})", "answers": [answer],
                        "ctxs": [gold] + distractors})
    groups = [["mdqa-00000", "mdqa-00001"], ["mdqa-00002", "mdqa-00003", "mdqa-00004"]]
    return [write_jsonl(tmp_path / "mdqa.jsonl", records)], groups


def build(task, files, tokenizer, task_config, **overrides):
    settings = dict(task_config=task_config, eval_examples=4, max_train_examples=None, limited_fraction=0.25,
                    seed=1234, context_tokens=BUDGET)
    settings.update(overrides)
    return build_real_data(task, files, tokenizer, **settings)


# ----------------------------------------------------------------- defect 3: linked groups


def test_linked_groups_are_connected_components_in_hash_order():
    items = [("a", ["x"]), ("b", ["y"]), ("c", ["x", "z"]), ("d", ["z"]), ("e", [])]
    groups = splits.linked_groups(items, 7, lambda i: i[0], lambda i: i[1])
    as_ids = [sorted(i[0] for i in g) for g in groups]
    assert sorted(as_ids) == [["a", "c", "d"], ["b"], ["e"]]
    # singletons keep their plain hash position; groups sit at their first member
    firsts = [g[0][0] for g in groups]
    order = [i[0] for i in splits.order_by_hash(items, 7, lambda i: i[0])]
    assert firsts == [i for i in order if i in firsts]
    assert groups == splits.linked_groups(list(reversed(items)), 7, lambda i: i[0], lambda i: i[1])


def test_take_eval_groups_never_splits_a_group():
    class Ok:
        def __init__(self, i):
            self.example, self.reason = {"example_id": i}, ""

    groups = [["a1", "a2", "a3"], ["b"], ["c1", "c2"], ["d"], ["e"]]
    dropped = splits.Counter()
    eval_set, rest = splits.take_eval_groups(groups, 4, Ok, dropped)
    # a (3) fits, b (1) fills the split; c, d, e stay for training
    assert [e["example_id"] for e in eval_set] == ["a1", "a2", "a3", "b"]
    assert rest == ["c1", "c2", "d", "e"]
    eval_set, rest = splits.take_eval_groups(groups, 2, Ok, dropped)
    # a is larger than the room: it goes to training whole, b and d fill the split
    assert [e["example_id"] for e in eval_set] == ["b", "d"]
    assert rest == ["a1", "a2", "a3", "c1", "c2", "e"]


@pytest.mark.parametrize("seed", range(12))
def test_musique_records_sharing_a_hop_or_paragraph_stay_on_one_side(tmp_path, smollm_tokenizer, seed):
    files, groups = musique_fixture(tmp_path)
    data = build("musique", files, smollm_tokenizer, {"hops": [3], "num_paragraphs": 5}, seed=seed)
    assert len(data.eval) == 4
    assert_groups_on_one_side(data, groups)
    assert musique_overlap(files, data) == (set(), set())
    assert data.counts["split_groups"] == 12 - 1 - 1 - 2 and data.counts["split_group_max"] == 3


@pytest.mark.parametrize("seed", range(12))
def test_mdqa_questions_sharing_a_gold_passage_stay_on_one_side(tmp_path, smollm_tokenizer, seed):
    files, groups = mdqa_fixture(tmp_path)
    data = build("mdqa", files, smollm_tokenizer, {"num_documents": 3, "gold_position": "uniform"},
                 eval_examples=3, seed=seed)
    assert len(data.eval) == 3
    assert_groups_on_one_side(data, groups)
    golds = lambda exs: {e["documents"][int(e["gold_doc_ids"][0]) - 1]["text"] for e in exs}  # noqa: E731
    assert not golds(data.eval) & golds(data.real_full)


def test_split_is_deterministic_given_the_seed(tmp_path, smollm_tokenizer):
    files, _ = musique_fixture(tmp_path)
    cfg = {"hops": [3], "num_paragraphs": 5}
    a, b = (build("musique", files, smollm_tokenizer, cfg, seed=5) for _ in range(2))
    assert json.dumps(a.eval + a.real_full, sort_keys=True) == json.dumps(b.eval + b.real_full, sort_keys=True)
    # the eval split does not depend on the Real (Full) cap
    capped = build("musique", files, smollm_tokenizer, cfg, seed=5, max_train_examples=4)
    assert [e["example_id"] for e in capped.eval] == [e["example_id"] for e in a.eval]


def test_padding_pool_skips_paragraphs_that_support_another_record():
    raw = [musique_record([1, 2, 3], [support("p1"), support("p2"), ("End", "It ends in Oslo.")], "Oslo",
                          ["A free paragraph about hills."]),
           musique_record([4, 5, 6], [support("p4"), support("p5"), ("End 2", "It ends in Rome.")], "Rome",
                          ["A free paragraph about lakes."])]
    # record 2 carries record 1's evidence paragraph as a distractor
    raw[1]["paragraphs"].append({"idx": 9, "title": "Page p1", "paragraph_text": support("p1")[1],
                                 "is_supporting": False})
    records = []
    for r in raw:
        records.append(MusiqueRecord(
            record_id=r["id"], question=r["question"], answer=r["answer"], aliases=(),
            paragraphs=tuple(loaders.Passage(p["title"], p["paragraph_text"], str(p["idx"])) for p in r["paragraphs"]),
            supporting=tuple(i for i, p in enumerate(r["paragraphs"]) if p["is_supporting"]),
            decomposition=(), hops=3, answerable=True, source_file="x"))
    pool = ParagraphPool(records)
    texts = {p.text for _, p in pool.items}
    assert texts == {"A free paragraph about hills.", "A free paragraph about lakes."}


# ----------------------------------------------------------------- defect 2: set sizes


def test_real_limited_must_be_nonempty_and_smaller_than_real_full(smollm_tokenizer):
    cfg = {"num_documents": 3, "gold_position": "uniform"}
    ok = build("mdqa", MDQA_FIXTURE, smollm_tokenizer, cfg, eval_examples=4, limited_fraction=0.5)
    assert (len(ok.real_full), len(ok.real_limited)) == (3, 2)
    with pytest.raises(ArtifactError, match=r"mdqa: Real \(Limited\) must be smaller than Real \(Full\): "
                                            r"Real \(Full\) has 3 examples.*Real \(Limited\) 3"):
        build("mdqa", MDQA_FIXTURE, smollm_tokenizer, cfg, eval_examples=4, limited_fraction=1.0)
    with pytest.raises(ArtifactError, match=r"must be smaller.*has 1 examples \(data.max_train_examples=1\)"):
        build("mdqa", MDQA_FIXTURE, smollm_tokenizer, cfg, eval_examples=1, limited_fraction=0.5,
              max_train_examples=1)
    with pytest.raises(ArtifactError, match=r"mdqa: Real \(Limited\) would be empty: Real \(Full\) has 3"):
        build("mdqa", MDQA_FIXTURE, smollm_tokenizer, cfg, eval_examples=4, limited_fraction=0.1)


def test_real_full_is_every_remaining_train_example(tmp_path, smollm_tokenizer):
    files, _ = mdqa_fixture(tmp_path)
    data = build("mdqa", files, smollm_tokenizer, {"num_documents": 3, "gold_position": "uniform"}, eval_examples=3)
    dropped = sum(v for k, v in data.counts.items() if k.startswith("dropped_"))
    assert len(data.eval) + len(data.real_full) + dropped == data.counts["candidates"] == 10
    assert len(data.real_limited) == 2  # 0.25 x 7, rounded half up
    stats = data.stats.set_index(["condition", "stat"])["value"]
    assert (stats["real_full", "examples"], stats["real_limited", "examples"]) == (7, 2)


def merged(name):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if name == "default":
        return config

    def merge(base, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(config, yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()))
    return config


@pytest.mark.parametrize("name", ["default", "gpu-small", "paper"])
def test_configs_give_real_full_and_limited_their_own_sizes(name):
    from synthctx.train.lora import TrainSettings

    config = merged(name)
    assert "max_examples" not in config["train"]  # no training-side cap that equalizes the conditions
    TrainSettings.from_config(config["train"])
    fraction = config["data"]["limited_fraction"]
    for task in config["study"]["tasks"]:
        cap = task_data_settings(config, task)[2]  # the task's own cap, else the study-wide one
        if name == "default":
            # the CPU study caps Real (Full) (training cost), at least as large as a synthetic set
            # (the CPU sweep: 20 real examples x 2 epochs teach MDQA, 10 do not; SummHay 40)
            assert isinstance(cap, int) and cap >= config["generation"]["examples_per_variant"]
            assert 1 <= splits.limited_size(cap, fraction) < cap
        else:
            # the GPU configs inherit no CPU cap, the study-wide one nor a task's
            assert cap is None, (task, cap)
    if name == "default":
        assert task_data_settings(config, "summhay")[2] == 40 and task_data_settings(config, "mdqa")[2] == 20
    assert 0 <= config["data"]["summhay"]["min_insight_match"] <= 1


# ----------------------------------------------------------------- defect 6: SummHay insight needles

FILLER = ["The weather stayed mild for most of the week.", "Local shops opened later than usual.",
          "A new bus line connects the two districts.", "Schools planned an open day in spring."]


def haystack(topic, n):
    strong = f"The harbor festival in town {n} drew twelve thousand visitors in June."
    weak_a = f"Officials in town {n} declined to comment further on the matter."
    weak_b = f"Nobody in town {n} could say what the budget would be."
    docs = [
        {"document_id": f"{topic}-0", "document_text": " ".join(FILLER[:2] + [strong] + FILLER[2:]),
         "insights_included": ["A"]},
        {"document_id": f"{topic}-1", "document_text": " ".join(FILLER[1:3] + [weak_a]), "insights_included": ["A"]},
        {"document_id": f"{topic}-2", "document_text": " ".join([weak_b] + FILLER[:2]), "insights_included": ["B"]},
    ] + [{"document_id": f"{topic}-{k}", "document_text": " ".join(FILLER[k % 4:] + FILLER[: k % 4]),
          "insights_included": []} for k in range(3, 7)]
    return {
        "topic_id": topic, "topic": f"Town {n}",
        "subtopics": [{"subtopic_id": "s", "query": "What happened at the harbor?", "insights": [
            {"insight_id": "A", "insight": strong},
            {"insight_id": "B", "insight": f"The town {n} council raised the festival budget by a third."},
        ]}],
        "documents": docs,
    }


def summhay_fixture(tmp_path):
    files = []
    for n in range(3):
        path = tmp_path / f"topic_t{n}.json"
        path.write_text(json.dumps(haystack(f"t{n}", n)))
        files.append(str(path))
    return files


SUMMHAY_CFG = {"eval_haystacks": 1, "num_documents": 4, "max_gold_documents": 2, "excerpt_sentences": 3,
               "min_insight_match": 0.5}


def test_summhay_drops_gold_documents_below_min_insight_match(tmp_path, smollm_tokenizer):
    files = summhay_fixture(tmp_path)
    data = build("summhay", files, smollm_tokenizer, SUMMHAY_CFG, eval_examples=5, limited_fraction=0.5)
    examples = data.eval + data.real_full
    # insight B has only a weak gold document: dropped in all three haystacks
    assert sorted(e["meta"]["insight_id"] for e in examples) == ["A", "A", "A"]
    assert data.counts["dropped_weak_insight_match"] == 3
    # per haystack A has a strong and a weak gold document, B one weak one
    assert data.counts["insight_documents_scored"] == 3 * 3
    assert data.counts["insight_documents_below_match"] == 3 * 2
    for ex in examples:
        assert ex["gold_doc_ids"] == [n["doc_id"] for n in ex["needles"] if n["kind"] == "insight"]
        assert len(ex["gold_doc_ids"]) == 1 and ex["meta"]["insight_f1"] == [1.0]
        assert ex["meta"]["gold_below_match"] == 1
        # the left-out gold document is not smuggled in as a non-gold one either
        assert not any("declined to comment" in d["text"] for d in ex["documents"])
    stats = data.stats.set_index(["condition", "stat"])["value"]
    for condition in ("real", "real_full", "real_limited"):
        assert stats[condition, "insight_match_min"] >= 0.5
        assert stats[condition, "insight_match_share_below_0.5"] == 0.0
    assert stats["all", "insight_match_scored_min"] < 0.5 <= stats["all", "insight_match_scored_max"]
    assert stats["all", "dropped_weak_insight_match"] == 3
    # with no minimum the weak documents are gold needles again (the old behaviour)
    loose = build("summhay", files, smollm_tokenizer, {**SUMMHAY_CFG, "min_insight_match": 0.0}, eval_examples=5,
                  limited_fraction=0.5)
    assert len(loose.eval + loose.real_full) == 6 and loose.counts["insight_documents_below_match"] == 0


# ----------------------------------------------------------------- shared real samples


def shared_files(config, task, shared_data):
    raw = config["raw_data"][task]
    names = [raw["documents_file"]] if task == "mdqa" else raw["files"]
    return [str(shared_data / name) for name in names]


def build_shared(config, task, shared_data, tokenizer):
    data = config["data"]
    return build_real_data(
        task, shared_files(config, task, shared_data), tokenizer,
        task_config=task_data_settings(config, task)[0], eval_examples=task_data_settings(config, task)[1],
        max_train_examples=task_data_settings(config, task)[2], limited_fraction=data["limited_fraction"],
        seed=config["study"]["seed"], context_tokens=config["models"]["smollm2-135m"]["context_tokens"],
    )


def gpu_small_like():
    """gpu-small's split settings (eval counts, no Real (Full) cap) with fewer documents per
    prompt: the split does not depend on them (every example fits 8K tokens), the build time does."""
    config = merged("gpu-small")
    config["data"]["mdqa"]["num_documents"] = 5
    config["data"]["musique"]["num_paragraphs"] = 8
    return config


@pytest.fixture(scope="module")
def shared_splits(shared_data, smollm_tokenizer):
    configs = {"default": merged("default"), "gpu-small": gpu_small_like()}
    return {
        (name, task): (config, build_shared(config, task, shared_data, smollm_tokenizer))
        for name, config in configs.items() for task in ("mdqa", "musique")
    }


@pytest.mark.parametrize("name", ["default", "gpu-small"])
def test_shared_musique_split_shares_no_hop_or_paragraph(shared_splits, shared_data, name):
    config, data = shared_splits[name, "musique"]
    files = shared_files(config, "musique", shared_data)
    assert len(data.eval) == config["data"]["musique"].get("eval_examples", config["data"]["eval_examples"])
    assert musique_overlap(files, data) == (set(), set())
    # no prompt shows the other side's evidence (as a distractor or padding)
    raw = raw_musique(files)
    pages = lambda exs: set().union(*[raw[e["example_id"]][1] for e in exs])  # noqa: E731
    shown = lambda exs: {page_key(d["title"], d["text"]) for e in exs for d in e["documents"]}  # noqa: E731
    assert not shown(data.eval) & pages(data.real_full)
    assert not shown(data.real_full) & pages(data.eval)
    assert 1 <= len(data.real_limited) < len(data.real_full)


@pytest.mark.parametrize("name", ["default", "gpu-small"])
def test_shared_mdqa_split_shares_no_gold_passage(shared_splits, shared_data, name):
    config, data = shared_splits[name, "mdqa"]
    records = {r.record_id: r for r in load_mdqa(shared_files(config, "mdqa", shared_data)[0])}
    golds = lambda exs: {page_key(records[e["example_id"]].gold.title, records[e["example_id"]].gold.text)  # noqa: E731
                         for e in exs}
    assert not golds(data.eval) & golds(data.real_full)
    assert 1 <= len(data.real_limited) < len(data.real_full)
    if task_data_settings(config, "mdqa")[2] is None:
        # Real (Full) = all remaining train examples
        dropped = sum(v for k, v in data.counts.items() if k.startswith("dropped_"))
        assert len(data.eval) + len(data.real_full) + dropped == data.counts["candidates"]


def test_shared_summhay_needles_meet_min_insight_match(shared_data, smollm_tokenizer):
    config = merged("default")
    data = build_shared(config, "summhay", shared_data, smollm_tokenizer)
    minimum = 0.5
    for ex in data.eval + data.real_full + data.real_limited:
        assert ex["meta"]["insight_f1"] and min(ex["meta"]["insight_f1"]) >= minimum, ex["meta"]["insight_f1"]
    assert config["data"]["summhay"]["min_insight_match"] == minimum
    # the samples hold many loosely matching gold documents (29% of all 2721 below 0.5)
    assert data.counts["insight_documents_below_match"] > 0
    stats = data.stats.set_index(["condition", "stat"])["value"]
    assert stats["all", "insight_match_scored_min"] < minimum <= stats["real", "insight_match_min"]


# ----------------------------------------------------------------- the data does not depend on where it lies


@pytest.mark.parametrize("task", ["mdqa", "musique", "summhay"])
def test_built_examples_do_not_depend_on_the_raw_files_directory(tmp_path, smollm_tokenizer, task):
    """The same raw files in two directories build byte-identical examples: an example records
    its source file by name, not by this machine's path (CI failed on the registries' hash test
    because MuSiQue and SummHay examples held the absolute path of ../shared/data)."""
    fixture, cfg = {
        "mdqa": (lambda d: mdqa_fixture(d)[0], {"num_documents": 3, "gold_position": "uniform"}),
        "musique": (lambda d: musique_fixture(d)[0], {"hops": [3], "num_paragraphs": 5}),
        "summhay": (summhay_fixture, SUMMHAY_CFG),
    }[task]
    built = []
    for where in ("here", "elsewhere/deeper"):
        (tmp_path / where).mkdir(parents=True)
        data = build(task, fixture(tmp_path / where), smollm_tokenizer, cfg,
                     **({"eval_examples": 1} if task == "summhay" else {}))
        built.append(json.dumps([data.eval, data.real_full, data.real_limited], sort_keys=True))
        assert str(tmp_path) not in built[-1]
    assert built[0] == built[1]
