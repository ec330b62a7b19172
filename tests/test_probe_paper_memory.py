"""benchmarks/probe_paper_memory.py: the paper-shape memory probe (issue 14), run tiny on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_probe():
    spec = importlib.util.spec_from_file_location("probe_paper_memory", REPO / "benchmarks" / "probe_paper_memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_probe_tiny_runs_every_op_for_both_shapes(tmp_path, capsys):
    probe = load_probe()
    out = tmp_path / "probe.json"
    assert probe.main(["--model", "both", "--tiny", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(r["model"], r["op"]): r for r in result["rows"]}
    assert sorted(rows) == sorted((m, op) for m in ("llama3-8b", "mistral-7b") for op in probe.OPS)
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row["error"])
        assert row["seconds"] > 0, key
        assert row["context"] == probe.TINY_CONTEXT
        assert row["peak_allocated_gib"] is None and row["fits_80gb"] is None  # CPU: no CUDA counters
    # Sizes follow config.yaml + paper.yaml: LoRA micro-batch 1, HF eval 4 x 32 tokens, heads 4 x 50,
    # causal 2 x 32 with 10 heads over as many (here: both) layers.
    assert rows["llama3-8b", "train"]["batch"] == 1 and rows["llama3-8b", "train"]["gradient_checkpointing"] is True
    assert rows["llama3-8b", "train"]["gradient_accumulation"] == 16
    assert (rows["llama3-8b", "evaluate"]["batch"], rows["llama3-8b", "evaluate"]["new_tokens"]) == (4, 32)
    assert (rows["mistral-7b", "heads"]["batch"], rows["mistral-7b", "heads"]["new_tokens"]) == (4, 50)
    assert (rows["mistral-7b", "knockout"]["batch"], rows["mistral-7b", "patching"]["batch"]) == (2, 2)
    assert len(rows["llama3-8b", "patching"]["heads"]) == 10
    assert {layer for layer, _ in rows["llama3-8b", "knockout"]["heads"]} == {0, 1}
    # Prompts are left-padded batches (lengths differ), the longest at the context.
    assert rows["llama3-8b", "evaluate"]["prompt_tokens"] == [1024 - 16 * i for i in range(4)]
    # The paper's RoPE bases reach the built models; Mistral keeps its (tiny: shortened) window.
    models = result["meta"]["models"]
    assert models["llama3-8b"]["rope_parameters"]["rope_theta"] == 4.0e6
    assert models["mistral-7b"]["rope_parameters"]["rope_theta"] == 1.0e6
    assert models["mistral-7b"]["sliding_window"] == probe.TINY_SLIDING_WINDOW
    table = capsys.readouterr().out
    assert "| llama3-8b | train | 1 | 1024 |" in table and table.count("| ok |") == 10


def test_probe_full_shapes_match_the_published_models():
    """Without --tiny the configs are the exact published shapes at 32K (counted on the meta device)."""
    from synthctx.models.prepare import parameter_count

    probe = load_probe()
    args = probe.argparse.Namespace(tiny=False, context=None, device="cpu", configfile=[REPO / "config.yaml",
                                    REPO / "config" / "paper.yaml"], out=None)
    p = probe.Probe(args, probe.load_configs(args.configfile), probe.load_configs([REPO / "config" / "paper-rehearsal.yaml"]))
    llama, _ = p.model_config("llama3-8b")
    mistral, _ = p.model_config("mistral-7b")
    assert parameter_count(llama) == 8_030_261_248 and parameter_count(mistral) == 7_241_732_096
    assert (llama.max_position_embeddings, llama.rope_parameters["rope_theta"]) == (32768, 4.0e6)
    assert (mistral.max_position_embeddings, mistral.sliding_window, mistral.rope_parameters["rope_theta"]) == (
        32768, 4096, 1.0e6)
    assert p.context("llama3-8b") == 32768
    assert probe.spread_heads(32, 32, 10) == [(i * 32 // 10, i) for i in range(10)]


@pytest.mark.parametrize("over,expected", [({"a": {"b": 2}}, {"a": {"b": 2, "c": 3}, "l": [1]}),
                                           ({"l": [9]}, {"a": {"b": 1, "c": 3}, "l": [9]})])
def test_deep_merge_follows_snakemake(over, expected):
    assert load_probe().deep_merge({"a": {"b": 1, "c": 3}, "l": [1]}, over) == expected
