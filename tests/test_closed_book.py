"""The closed-book baseline (issue 17 section 3): the base model given the question without the
documents. Its prompts hold no document text and differ from the task's prompts only by the
documents (and the instruction's words about them), on the project's fixtures of every task
(always) and on the real samples with the default config (skipped when ../shared/data is absent);
Table 1 gets its row, the claims page's CB row fills from it; and SummHay's cite-all baseline
equals its hand-computed F1."""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from synthctx import study
from synthctx.data.build import build_real_data
from synthctx.data.examples import make_example
from synthctx.data.prompts import document_header, render_prompt, user_content
from synthctx.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "raw"
TASKS = ["mdqa", "musique", "summhay"]
FIXTURE_FILES = {
    "mdqa": ["mdqa/nq-open-small.jsonl"],
    "musique": ["musique/musique_ans_small.jsonl", "musique/musique_ans_small_array.json"],
    "summhay": ["summhay/topic_small1.json", "summhay/topic_small2.json", "summhay/topic_small3.json"],
}


def _config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _meta(example):
    meta = example.get("meta") or {}
    return json.loads(meta) if isinstance(meta, str) else meta


def check_closed_book_prompt(example, tokenizer):
    """The closed-book prompt of ``example`` holds none of its documents, keeps the question block
    and the chat template, and is the with-documents prompt with the documents (and the
    instruction's words about them) taken out."""
    spec = get_task(example["task"])
    meta = _meta(example)
    closed = render_prompt(example, tokenizer, documents=False)
    full = render_prompt(example, tokenizer)
    closed_content, closed_text_spans, _ = user_content(example, documents=False)
    full_content, _, _ = user_content(example)
    assert example["documents"], example["example_id"]
    for doc in example["documents"]:
        assert doc["text"].strip() and doc["text"] not in closed.text, (example["example_id"], doc["doc_id"])
    assert "Document [" not in closed.text and closed.doc_text_spans == {} and closed_text_spans == {}
    # the question (SummHay: the query and the insight) and the closed-book instruction are there
    block = spec.question_block(example, meta)
    instruction = spec.closed_book_instruction if spec.closed_book_instruction is not None else spec.instruction
    assert example["question"] in closed.text and block in closed.text and instruction in closed.text
    if example["task"] == "summhay":
        assert meta["query"] and f"Query: {meta['query']}" in closed.text
    # only the documents differ: full = instruction + "\n" + documents block + question block
    documents_block = "\n" + "".join(document_header(i, d.get("title") or "") + " " + d["text"] + "\n"
                                     for i, d in enumerate(example["documents"], start=1))
    assert full_content == spec.instruction + "\n" + documents_block + block
    assert closed_content == instruction + "\n" + block
    # same chat template around the user message
    assert full.text.split(full_content) == closed.text.split(closed_content)
    return closed


def _build_fixture(task, tokenizer):
    config = _config()
    task_config = copy.deepcopy(config["data"][task])
    # the e2e test's sizes for the small fixtures (tests/test_workflow_e2e.py)
    if task == "musique":
        task_config.update(hops=[2, 3, 4], num_paragraphs=3)
    if task == "summhay":
        task_config.update(num_documents=3, excerpt_sentences=2)
    task_config.pop("eval_examples", None)
    return build_real_data(task, [str(FIXTURES / f) for f in FIXTURE_FILES[task]], tokenizer, task_config=task_config,
                           eval_examples=2, max_train_examples=2, limited_fraction=0.5, seed=7, context_tokens=512)


@pytest.mark.parametrize("task", TASKS)
def test_closed_book_prompts_hold_no_document_text_on_the_fixtures(task, smollm_tokenizer):
    data = _build_fixture(task, smollm_tokenizer)
    examples = data.eval + data.real_full
    assert len(examples) >= 2
    for example in examples:
        check_closed_book_prompt(example, smollm_tokenizer)


def test_closed_book_prompt_of_a_registered_task_defaults_to_its_instruction(smollm_tokenizer):
    sys.path.insert(0, str(Path(__file__).parent))
    import toytask

    from synthctx.tasks import register_task, unregister_task

    register_task(toytask.TOY, replace=True)
    try:
        candidates, _ = toytask.TOY.load_candidates([str(FIXTURES / "toy" / "lookup.tsv")], smollm_tokenizer,
                                                    {"num_documents": 3}, 7, 512, Counter())
        built = [c.build().example for c in candidates[:3]]
        built = [b for b in built if b is not None]
        assert built
        for example in built:
            closed = check_closed_book_prompt(example, smollm_tokenizer)
            assert toytask.TOY.instruction in closed.text  # no closed_book_instruction: the instruction as is
    finally:
        unregister_task("toy")


@pytest.fixture(scope="module")
def shared_eval_sets(shared_data, smollm_tokenizer):
    """Every task's eval and Real (Full) examples built from ../shared/data with the default config."""
    config = _config()
    raw, data = config["raw_data"], config["data"]
    out = {}
    for task in TASKS:
        spec = get_task(task)
        files = [str(shared_data / f) for f in spec.raw_files(raw[task])]
        from synthctx.study import task_data_settings

        task_config, eval_examples, max_train_examples = task_data_settings(config, task)
        built = build_real_data(task, files, smollm_tokenizer, task_config=task_config,
                                eval_examples=eval_examples, max_train_examples=max_train_examples,
                                limited_fraction=data["limited_fraction"], seed=config["study"]["seed"],
                                context_tokens=config["models"]["smollm2-135m"]["context_tokens"])
        out[task] = built.eval
    return out


@pytest.mark.parametrize("task", TASKS)
def test_closed_book_prompts_hold_no_document_text_on_the_real_samples(task, shared_eval_sets, smollm_tokenizer):
    examples = shared_eval_sets[task]
    assert len(examples) == _config()["data"]["eval_examples"]
    for example in examples:
        closed = check_closed_book_prompt(example, smollm_tokenizer)
        # a question-only prompt is short: the documents were most of the budget
        assert len(smollm_tokenizer(closed.text)["input_ids"]) < 0.5 * example["meta"]["prompt_tokens"]


# ---------------------------------------------------------------- config and vocabulary


def test_closed_book_is_an_evaluation_only_condition_on_in_the_default_config():
    found = study.get_condition("closed_book")
    assert found.kind == "evaluation_only" and not found.trained and not found.with_documents
    assert study.condition_label("closed_book", "mdqa") == "Closed book"
    assert study.BUILTIN_EVALUATION_ONLY == ("nonft", "closed_book")
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    prop = schema["properties"]["study"]["properties"]["evaluation_conditions"]
    assert prop["items"]["enum"] == list(study.BUILTIN_EVALUATION_ONLY)
    config = _config()
    assert config["study"]["evaluation_conditions"] == ["nonft", "closed_book"] == prop["default"]
    assert study.evaluation_conditions(config) == ["nonft", "closed_book"]
    study.check_config(config)
    for bad, words in (([], "must contain 'nonft'"), (["nonft", "real_full"], "not an evaluation-only")):
        broken = copy.deepcopy(config)
        broken["study"]["evaluation_conditions"] = bad
        with pytest.raises(ValueError, match=words):
            study.check_config(broken)


def test_closed_book_never_reaches_heads_or_causal_jobs():
    common = (REPO / "rules" / "common.smk").read_text()
    # heads and causal expand task_conditions: the trained conditions and nonft, never closed_book
    assert "return study_vocabulary.evaluated_conditions(config, task)" in common
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert "closed_book" in config["study"]["evaluation_conditions"]
    for task in config["study"]["tasks"]:
        evaluated = study.evaluated_conditions(config, task)
        assert "nonft" in evaluated and "closed_book" not in evaluated
    evaluate = (REPO / "rules" / "evaluate.smk").read_text()
    assert "EVALUATION_ONLY = study_vocabulary.evaluation_conditions(config)" in evaluate


# ---------------------------------------------------------------- Table 1 and the claims page

N = 20


def _frame(task, hits, metrics=None):
    """Per-example predictions: condition c scores 1 on its first hits[c] examples."""
    rows = []
    for condition, k in hits.items():
        for i in range(N):
            score = float(i < k)
            extra = {"best_subspan_em": score} if metrics else {}
            rows.append({"example_id": f"e{i}", "task": task, "condition": condition,
                         "prediction": f"{condition} answer {i}", "score": score,
                         "metrics": json.dumps(extra), "prompt_tokens": 30 if condition == "closed_book" else 300,
                         "generated_tokens": 3})
    return pd.DataFrame(rows)


SYNTHETIC, REAL = ["low_low", "symbolic"], ["real_full"]
HITS = {
    # MDQA: memory answers 2 of 20, Real (Full) 18
    "mdqa": {"low_low": 10, "symbolic": 8, "real_full": 18, "nonft": 4, "closed_book": 2},
    # MuSiQue: Real (Full) no better than Non-FT (the positive control fails)
    "musique": {"low_low": 5, "symbolic": 6, "real_full": 3, "nonft": 3, "closed_book": 1},
    # SummHay: closed book cannot cite; a guessed "[1]" scores now and then
    "summhay": {"low_low": 10, "symbolic": 12, "real_full": 18, "nonft": 2, "closed_book": 3},
}


def _table1():
    from synthctx.evaluate.table1 import TaskExtras, build_table1

    preds = {t: _frame(t, h, metrics=t == "mdqa") for t, h in HITS.items()}
    extras = {t: TaskExtras(trivial_scores={f"e{i}": 0.0 for i in range(N)}) for t in HITS}
    table = build_table1(preds, "m", SYNTHETIC, REAL, resamples=500, alpha=0.05, seed=3, extras=extras,
                         evaluation=["nonft", "closed_book"])
    return preds, table


def test_table1_has_the_closed_book_row_with_its_label():
    from synthctx.evaluate.table1 import build_table1, table1_markdown
    from synthctx.schema import ArtifactError

    preds, table = _table1()
    closed = table[table["condition"] == "closed_book"].set_index("task")
    assert list(closed.index) == TASKS and (closed["label"] == "Closed book").all()
    assert closed.loc["mdqa", "score"] == pytest.approx(2 / N) and closed.loc["summhay", "score"] == pytest.approx(3 / N)
    assert closed["train_examples"].isna().all()
    assert (closed["ci_low"] <= closed["score"]).all() and (closed["score"] <= closed["ci_high"]).all()
    # the rows come in the registry's order: Non-FT, then closed book, then the trivial baseline
    assert list(table[table["task"] == "mdqa"]["condition"])[-3:] == ["nonft", "closed_book", "trivial"]
    md = table1_markdown(table, 0.05, 500)
    assert "| Closed book | 0.10† | 0.05† | Closed book | 0.15†‡ |" in md
    assert "| mdqa | Closed book | 0.100 |" in md
    assert "- Closed book: the base model given the question without the documents" in md
    assert "- ‡ SummHay / Closed book: not a memory baseline: the gold citations are numbers of documents" in md
    # a study that runs closed book needs its predictions
    without = {t: f[f["condition"] != "closed_book"] for t, f in preds.items()}
    with pytest.raises(ArtifactError, match=r"conditions \['closed_book'\] missing"):
        build_table1(without, "m", SYNTHETIC, REAL, resamples=100, alpha=0.05, seed=3,
                     evaluation=["nonft", "closed_book"])
    # a study without it: no row
    plain = build_table1(without, "m", SYNTHETIC, REAL, resamples=100, alpha=0.05, seed=3)
    assert "closed_book" not in set(plain["condition"])


def test_table1_notes_degenerate_conditions_by_task_title():
    """Defect: the degenerate-outputs note named TASK_TITLES, which table1.py no longer defines
    (NameError as soon as Table 1 flags a condition)."""
    from synthctx.analysis.claims import degenerate_flags
    from synthctx.evaluate.table1 import TaskExtras, build_table1, table1_markdown

    preds = {t: _frame(t, {c: k for c, k in h.items() if c != "closed_book"}) for t, h in HITS.items()}
    extras = {t: TaskExtras(trivial_scores={f"e{i}": 0.0 for i in range(N)}) for t in HITS}
    table = build_table1(preds, "m", SYNTHETIC, REAL, resamples=500, alpha=0.05, seed=3, extras=extras)
    flags = degenerate_flags(table, 0.05, 0.1)
    assert ("summhay", "nonft") in flags
    md = table1_markdown(table, 0.05, 500, flags)
    assert "- SummHay / Non-FT: degenerate outputs, does not beat the trivial baseline (0.100 vs 0.000" in md


def test_claims_cb_row_fills_from_a_table1_with_closed_book_rows(tmp_path):
    from synthctx.analysis import claims as cl
    from synthctx.schema import write_table

    preds, table = _table1()
    paths = cl.study_paths(str(tmp_path), "m", TASKS, SYNTHETIC, ["real_full"], ["symbolic"])
    write_table(table, paths.table1, "table1")
    for task, frame in preds.items():
        write_table(frame, paths.predictions[task], "predictions")
    settings = {"model": "m", "tasks": TASKS, "synthetic": SYNTHETIC, "alpha": 0.05, "resamples": 500, "seed": 11,
                "top_k": 10, "min_distinct_fraction": 0.1}
    frame, _ = cl.build_claims(paths, settings)
    cb = frame[frame["claim_id"] == "CB"].set_index("task")
    assert list(cb.index) == TASKS
    subject = "Real Data (Full) vs Closed book"
    assert (cb["subject"] == subject).all()
    mdqa = cb.loc["mdqa"]
    assert mdqa["verdict"] == cl.HOLDS and mdqa["statistic"] == pytest.approx((18 - 2) / N) and mdqa["n"] == N
    assert mdqa["ci_low"] > 0 and mdqa["paper"].startswith("closed-book 0.333 / 0.209")
    closed_ci = table[(table["task"] == "mdqa") & (table["condition"] == "closed_book")].iloc[0]
    assert mdqa["measured"] == (
        f"closed book 0.100 [{closed_ci['ci_low']:.3f}, {closed_ci['ci_high']:.3f}] vs Non-FT 0.200, Real (Full) "
        "0.900: memory reaches 11% of the Real (Full) score; best_subspan_em (the paper's measure): closed book "
        "0.100, Real (Full) 0.900")
    musique = cb.loc["musique"]
    assert musique["verdict"] == cl.CONTROL_FAILS and musique["paper"].startswith("closed-book F1 0.086 / 0.042")
    assert "memory reaches 33% of the Real (Full) score" in musique["measured"]
    summhay = cb.loc["summhay"]
    assert summhay["verdict"] == cl.CANNOT and summhay["reason"].startswith("not applicable: the gold citations")
    assert summhay["measured"].startswith("closed book 0.150 [") and summhay["statistic"] == pytest.approx(0.75)
    text = cl.claims_markdown(frame, settings, {}, {}, [])
    assert f"| CB | mdqa | {subject} | closed book 0.100 [" in text


# ---------------------------------------------------------------- SummHay's cite-all baseline


@pytest.mark.parametrize("documents,gold,expected", [
    (8, ["2", "5"], 2 * (2 / 8) * 1 / (2 / 8 + 1)),  # precision 2/8, recall 1: F1 0.4
    (5, ["1", "3", "4"], 2 * (3 / 5) * 1 / (3 / 5 + 1)),  # precision 3/5, recall 1: F1 0.75
])
def test_summhay_cite_all_baseline_equals_its_hand_computed_f1(documents, gold, expected):
    from synthctx.evaluate.baselines import trivial_predictions
    from synthctx.evaluate.metrics import score_prediction

    docs = [{"doc_id": str(i), "title": "", "text": f"News item {i} about the harbour."}
            for i in range(1, documents + 1)]
    example = make_example(
        example_id="sh0", task="summhay", condition="real", split="eval", documents=docs,
        question="The harbour reopened.", answers=["".join(f"[{g}]" for g in gold)],
        target="".join(f"[{g}]" for g in gold), gold_doc_ids=gold,
        needles=[{"doc_id": g, "start": 0, "end": 4, "kind": "insight"} for g in gold],
        meta={"query": "What happened to the harbour?"})
    [prediction] = trivial_predictions("summhay", [example], [])
    assert prediction == "".join(f"[{i}]" for i in range(1, documents + 1))
    score, metrics = score_prediction("summhay", prediction, example)
    assert score == pytest.approx(expected) and metrics["citation_recall"] == 1.0
    assert metrics["citation_precision"] == pytest.approx(len(gold) / documents)
    assert expected == pytest.approx(2 * len(gold) / (documents + len(gold)))  # the baselines module's 2k/(n+k)


# ---------------------------------------------------------------- evaluation (HF)


def test_hf_evaluation_decodes_closed_book_with_the_base_model(tmp_path, smollm_tokenizer):
    """A tiny random model: closed_book is decoded from the question-only prompts, beside nonft."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from synthctx.data.examples import write_examples
    from synthctx.evaluate.generate import prompt_token_ids
    from synthctx.evaluate.run import evaluate_task
    from synthctx.schema import read_metadata, read_table

    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=len(smollm_tokenizer),
                      max_position_embeddings=1024, eos_token_id=smollm_tokenizer.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    examples = _build_fixture("mdqa", smollm_tokenizer).eval
    write_examples(examples, str(tmp_path / "eval.parquet"))
    spec = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 1024}
    out = tmp_path / "predictions.parquet"
    frame = evaluate_task(eval_path=str(tmp_path / "eval.parquet"), model_dir=str(model_dir), model_settings=spec,
                          adapters={}, max_new_tokens=12, backend="hf", out_path=str(out), batch_size=2,
                          evaluation_conditions=["nonft", "closed_book"])
    table = read_table(out, "predictions")
    assert sorted(set(table["condition"])) == ["closed_book", "nonft"] and len(table) == 2 * len(examples)
    assert read_metadata(out)["evaluation_conditions"] == ["nonft", "closed_book"]
    by = {c: g.set_index("example_id") for c, g in frame.groupby("condition")}
    closed_lengths = [len(p) for p in prompt_token_ids(examples, smollm_tokenizer, documents=False)]
    full_lengths = [len(p) for p in prompt_token_ids(examples, smollm_tokenizer)]
    ids = [ex["example_id"] for ex in examples]
    assert by["closed_book"].loc[ids, "prompt_tokens"].tolist() == closed_lengths
    assert by["nonft"].loc[ids, "prompt_tokens"].tolist() == full_lengths
    assert all(c < f for c, f in zip(closed_lengths, full_lengths))
    with pytest.raises(ValueError, match="not a registered evaluation-only condition"):
        evaluate_task(eval_path=str(tmp_path / "eval.parquet"), model_dir=str(model_dir), model_settings=spec,
                      adapters={}, max_new_tokens=12, backend="hf", out_path=str(tmp_path / "x.parquet"),
                      evaluation_conditions=["nonft", "real_full"])
    assert not (tmp_path / "x.parquet").exists()


# ---------------------------------------------------------------- evaluation (vLLM)

VLLM_PYTHON = Path(__import__("os").environ.get("SYNTHCTX_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="vLLM environment (.venv-vllm) not installed")
def test_vllm_evaluation_decodes_closed_book_like_hf(tmp_path, smollm_dir, smollm_tokenizer):
    """The vLLM backend decodes closed_book from the same question-only prompt ids as HF."""
    import os
    import subprocess

    from synthctx.data.examples import write_examples
    from synthctx.evaluate.generate import prompt_token_ids
    from synthctx.evaluate.run import evaluate_task
    from synthctx.schema import read_metadata, read_table

    examples = _build_fixture("mdqa", smollm_tokenizer).eval
    write_examples(examples, str(tmp_path / "eval.parquet"))
    spec = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 1024}
    settings = {"model": "smollm2-135m", "model_spec": spec, "max_new_tokens": 12, "seed": 0, "batch_size": 8,
                "evaluation_conditions": ["nonft", "closed_book"],
                "vllm": {"gpu_memory_utilization": 0.3, "enforce_eager": True}}
    out = tmp_path / "vllm.parquet"
    cmd = [str(VLLM_PYTHON), str(REPO / "workflow" / "scripts" / "evaluate_task.py"), "--eval",
           str(tmp_path / "eval.parquet"), "--model-dir", str(smollm_dir), "--settings", json.dumps(settings),
           "--backend", "vllm", "--out", str(out)]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = read_table(out, "predictions")
    assert read_metadata(out)["backend"] == "vllm" and read_metadata(out)["evaluation_conditions"] == settings[
        "evaluation_conditions"]
    closed = table[table["condition"] == "closed_book"].set_index("example_id")
    ids = [ex["example_id"] for ex in examples]
    assert closed.loc[ids, "prompt_tokens"].tolist() == [len(p) for p in prompt_token_ids(examples, smollm_tokenizer,
                                                                                           documents=False)]
    hf = evaluate_task(eval_path=str(tmp_path / "eval.parquet"), model_dir=str(smollm_dir), model_settings=spec,
                       adapters={}, max_new_tokens=12, backend="hf", out_path=str(tmp_path / "hf.parquet"),
                       evaluation_conditions=["nonft", "closed_book"])
    merged = hf.merge(table, on=["example_id", "condition"], suffixes=("_hf", "_vllm"))
    assert len(merged) == 2 * len(examples)
    agreement = float((merged.prediction_hf == merged.prediction_vllm).mean())
    print(f"HF/vLLM greedy agreement (nonft + closed_book): {agreement:.2f}")
    assert agreement >= 0.5
