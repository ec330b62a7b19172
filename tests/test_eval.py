"""Evaluation: bootstrap statistics, Table 1 assembly, HF greedy decoding, and vLLM (slow)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthctx.data.examples import make_example, write_examples
from synthctx.evaluate.table1 import (
    build_table1,
    condition_label,
    paired_bootstrap_pvalue,
    plot_table1,
    table1_markdown,
)
from synthctx.schema import read_metadata, read_table

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("SYNTHCTX_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
SYNTHETIC = ["high_high", "high_low", "low_high", "low_low", "symbolic"]
REAL = ["real_full", "real_limited"]


def test_paired_bootstrap_clear_winner_and_identical_systems():
    rng = np.random.default_rng(0)
    other = rng.uniform(0, 0.5, size=40)
    better = other + 0.3
    assert paired_bootstrap_pvalue(better, other, 2000, seed=1) == 0.0
    # Identical systems: the better one never wins -> p = 1 (no dagger).
    assert paired_bootstrap_pvalue(other, other, 2000, seed=1) == 1.0
    # Noise around zero difference: p near 0.5.
    a = rng.integers(0, 2, size=400).astype(float)
    b = rng.permutation(a)
    assert 0.05 < paired_bootstrap_pvalue(a, b, 2000, seed=2) < 0.95
    # Seeded: same inputs, same p.
    assert paired_bootstrap_pvalue(a, b, 500, seed=3) == paired_bootstrap_pvalue(a, b, 500, seed=3)


def test_condition_labels_follow_the_paper():
    assert condition_label("mdqa", "low_high") == "Low / High"
    assert condition_label("summhay", "low_high") == "Simplified / High"
    assert condition_label("summhay", "high_low") == "High / Low"
    assert condition_label("musique", "symbolic") == "Symbolic / Symbolic"
    assert condition_label("mdqa", "real_limited") == "Real Data (Limited)"
    assert condition_label("mdqa", "nonft") == "Non-FT"


def _predictions(task, means, n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for condition, mean in means.items():
        scores = (rng.uniform(size=n) < mean).astype(float)
        for i, s in enumerate(scores):
            rows.append({"example_id": f"e{i}", "task": task, "condition": condition, "prediction": "x", "score": s,
                         "metrics": "{}", "prompt_tokens": 10, "generated_tokens": 1})
    return pd.DataFrame(rows)


def test_build_table1_best_synthetic_and_daggers(tmp_path):
    means = {"high_high": 0.2, "high_low": 0.3, "low_high": 0.9, "low_low": 0.85, "symbolic": 0.1,
             "real_full": 0.95, "real_limited": 0.9, "nonft": 0.05}
    preds = {"mdqa": _predictions("mdqa", means), "summhay": _predictions("summhay", means, seed=1)}
    table = build_table1(preds, "m", SYNTHETIC, REAL, resamples=2000, alpha=0.05, seed=5)
    assert len(table) == 16
    mdqa = table[table.task == "mdqa"].set_index("condition")
    assert mdqa.loc["low_high", "is_best_synthetic"] and np.isnan(mdqa.loc["low_high", "p_vs_best_synthetic"])
    assert mdqa.loc["symbolic", "significantly_worse"] and mdqa.loc["nonft", "significantly_worse"]
    assert not mdqa.loc["real_full", "significantly_worse"]
    assert (table.ci_low <= table.score).all() and (table.score <= table.ci_high).all()
    again = build_table1(preds, "m", SYNTHETIC, REAL, resamples=2000, alpha=0.05, seed=5)
    pd.testing.assert_frame_equal(table, again)
    md = table1_markdown(table, 0.05, 2000)
    assert "Simplified / High" in md and "†" in md and "**" in md
    plot_table1(table, tmp_path / "t1.png")
    assert (tmp_path / "t1.png").stat().st_size > 1000


def eval_examples(n=2):
    out = []
    facts = [("France", "Paris"), ("Italy", "Rome"), ("Norway", "Oslo"), ("Peru", "Lima")]
    for i in range(n):
        country, city = facts[i % 4]
        docs = [{"doc_id": "a", "title": "Weather", "text": "The grass is green. The sky is blue."},
                {"doc_id": "b", "title": country, "text": f"The capital of {country} is {city}."}]
        start = docs[1]["text"].index(city)
        out.append(make_example(
            example_id=f"ev{i}", task="mdqa", condition="real", split="eval", documents=docs,
            question=f"What is the capital of {country}?", answers=[city], target=city, gold_doc_ids=["b"],
            needles=[{"doc_id": "b", "start": start, "end": start + len(city), "kind": "answer"}],
        ))
    return out


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory, smollm_dir):
    """Two eval examples and one freshly initialised LoRA adapter (B = 0: same outputs as the base)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from synthctx.models.loading import load_model

    root = tmp_path_factory.mktemp("eval")
    write_examples(eval_examples(2), str(root / "eval.parquet"))
    torch.manual_seed(0)
    model = get_peft_model(load_model(str(smollm_dir)), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(root / "adapter")
    return root


SPEC = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 1024}


def test_greedy_decode_hf_batching_matches_single_prompts(smollm_tokenizer):
    """Left padding must not change greedy answers (tiny random Llama, SmolLM2 tokenizer)."""
    import torch

    from conftest import tiny_llama
    from synthctx.evaluate.generate import end_of_turn_ids, greedy_decode_hf, prompt_token_ids

    model = tiny_llama(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=len(smollm_tokenizer))
    examples = eval_examples(3)
    examples[1]["question"] += " Please answer briefly, in a few words."  # unequal lengths -> padding
    prompts = prompt_token_ids(examples, smollm_tokenizer)
    assert len({len(p) for p in prompts}) > 1
    stop = end_of_turn_ids(smollm_tokenizer)
    assert smollm_tokenizer.convert_tokens_to_ids("<|im_end|>") in stop
    batched = greedy_decode_hf(model, smollm_tokenizer, prompts, 5, batch_size=3)
    single = greedy_decode_hf(model, smollm_tokenizer, prompts, 5, batch_size=1)
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.generated_tokens <= 5 for g in batched)
    # A stop token ends the answer and is not counted.
    forced = stop[0]
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(smollm_tokenizer)))
    with torch.no_grad():
        model.lm_head.bias[forced] = 1e4
    stopped = greedy_decode_hf(model, smollm_tokenizer, prompts[:1], 5)
    assert stopped[0].generated_tokens == 0 and stopped[0].text == ""


@pytest.mark.slow
def test_hf_evaluation_on_embedded_model(eval_setup, smollm_dir):
    import torch

    from synthctx.evaluate.run import evaluate_task

    torch.set_num_threads(1)
    out = eval_setup / "hf.parquet"
    frame = evaluate_task(eval_path=str(eval_setup / "eval.parquet"), model_dir=str(smollm_dir), model_settings=SPEC,
                          adapters={"real_full": str(eval_setup / "adapter")}, max_new_tokens=8, backend="hf",
                          out_path=str(out), run_info={"model": "smollm2-135m"}, batch_size=2)
    table = read_table(out, "predictions")
    assert len(table) == 4 and set(table.condition) == {"nonft", "real_full"}
    assert read_metadata(out)["backend"] == "hf"
    assert (table.generated_tokens <= 8).all() and (table.prompt_tokens > 20).all()
    for row in table.itertuples():
        assert row.prediction == row.prediction.strip()
        assert 0.0 <= row.score <= 1.0 and "best_subspan_em" in json.loads(row.metrics)
    # A zero-initialised LoRA adapter leaves greedy decoding unchanged.
    by_cond = {c: g.sort_values("example_id").prediction.tolist() for c, g in table.groupby("condition")}
    assert by_cond["nonft"] == by_cond["real_full"]
    # Batched left padding gives the same answers as one prompt at a time.
    single = evaluate_task(eval_path=str(eval_setup / "eval.parquet"), model_dir=str(smollm_dir), model_settings=SPEC,
                           adapters={}, max_new_tokens=8, backend="hf", out_path=str(eval_setup / "hf1.parquet"),
                           batch_size=1)
    assert single.sort_values("example_id").prediction.tolist() == by_cond["nonft"]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="vLLM environment (.venv-vllm) not installed")
def test_vllm_evaluation_matches_hf_schema(eval_setup, smollm_dir):
    out = eval_setup / "vllm.parquet"
    settings = {"model": "smollm2-135m", "model_spec": SPEC, "max_new_tokens": 8, "seed": 0, "batch_size": 8,
                "evaluation_conditions": ["nonft"], "vllm": {"gpu_memory_utilization": 0.3, "enforce_eager": True}}
    cmd = [str(VLLM_PYTHON), str(REPO / "workflow" / "scripts" / "evaluate_task.py"), "--eval",
           str(eval_setup / "eval.parquet"), "--model-dir", str(smollm_dir), "--adapter",
           f"real_full={eval_setup / 'adapter'}", "--settings", json.dumps(settings), "--backend", "vllm",
           "--out", str(out)]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = read_table(out, "predictions")
    assert read_metadata(out)["backend"] == "vllm"
    assert len(table) == 4 and set(table.condition) == {"nonft", "real_full"}
    hf_path = eval_setup / "hf.parquet"
    if hf_path.exists():
        hf = read_table(hf_path, "predictions")
        assert list(hf.columns) == list(table.columns)
        merged = hf.merge(table, on=["example_id", "condition"], suffixes=("_hf", "_vllm"))
        agreement = float((merged.prediction_hf == merged.prediction_vllm).mean())
        print(f"HF/vLLM greedy agreement: {agreement:.2f}")
        assert agreement >= 0.5
