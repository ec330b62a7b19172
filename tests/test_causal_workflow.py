"""The causal rules run through Snakemake on a tiny model with pre-placed upstream artifacts."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow


# The placed eval split: the first RANKING examples ranked the heads (the head tables record
# them), the causal jobs must take the CAUSAL after them.
CITIES = [("Paris", "France"), ("Lima", "Peru"), ("Oslo", "Norway"), ("Rome", "Italy"), ("Cairo", "Egypt")]
RANKING, CAUSAL = 2, 3
# The scratch study's name (study.name): its outputs lie under results/causal-tiny/.
STUDY = "causal-tiny"


def _place_inputs(work: Path, tokenizer) -> None:
    """What the model/data/train/heads stages would have produced, for a model called 'tiny'."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from synthctx.data.examples import make_example, write_examples
    from synthctx.schema import write_table

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=1024,
                      eos_token_id=tokenizer.eos_token_id)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(work / "resources/models/tiny")
    tokenizer.save_pretrained(work / "resources/models/tiny")
    for i, condition in enumerate(["real_full", "low_low"]):
        torch.manual_seed(10 + i)
        lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                                               target_modules=["q_proj", "v_proj"]))
        lora.save_pretrained(work / f"results/{STUDY}/adapters/tiny/mdqa/{condition}")
        rng = np.random.default_rng(i)
        rows = [{"model": "tiny", "task": "mdqa", "condition": condition, "head_kind": kind, "layer": layer,
                 "head": head, "score": float(rng.random()), "n_examples": 2, "n_seen": 3}
                for kind in ("retrieval", "insight") for layer in range(2) for head in range(4)]
        write_table(pd.DataFrame(rows), work / f"results/{STUDY}/heads/tiny/mdqa/{condition}.parquet", "head_scores",
                    {"predictions": [{"example_id": f"ex{i}"} for i in range(RANKING)]})
    examples = []
    for i, (city, country) in enumerate(CITIES):
        docs = [{"doc_id": "a", "title": "", "text": "Rivers flow to the sea."},
                {"doc_id": "b", "title": country, "text": f"{city} is the capital of {country}."}]
        examples.append(make_example(example_id=f"ex{i}", task="mdqa", condition="real", split="eval", documents=docs,
                                     question=f"Capital of {country}?", answers=[city], target=city,
                                     gold_doc_ids=["b"],
                                     needles=[{"doc_id": "b", "start": 0, "end": len(city), "kind": "answer"}]))
    write_examples(examples, str(work / f"results/{STUDY}/data/tiny/mdqa/eval.parquet"))


def _workdir(tmp_path) -> Path:
    work = tmp_path / "wf"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "report", "envs", "schemas", "config.yaml"):
        os.symlink(REPO / name, work / name)
    return work


def _snakemake() -> str:
    return str(Path(sys.executable).with_name("snakemake"))


def test_config_too_small_for_both_parts_is_refused(tmp_path):
    """heads.examples + causal.examples beyond a task's eval split: the workflow does not parse."""
    work = _workdir(tmp_path)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["data"]["musique"]["eval_examples"] = 10
    config["heads"]["examples"], config["causal"]["examples"] = 8, 4
    (work / "test-config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([_snakemake(), "-n", "--configfile", "test-config.yaml"], cwd=work, capture_output=True,
                            text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("invalid config: causal.examples: musique: data.eval_examples / data.musique.eval_examples = 10 eval "
            "examples") in out
    assert "heads.examples / heads.task_examples.musique = 8" in out and "8 + 4 = 12 > 10" in out


def test_causal_rules_run(tmp_path, smollm_tokenizer):
    work = _workdir(tmp_path)
    _place_inputs(work, smollm_tokenizer)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    tiny = copy.deepcopy(config["models"]["smollm2-135m"])
    tiny.update(source={"kind": "local", "path": str(work / "resources/models/tiny")}, context_tokens=512)
    config["models"]["tiny"] = tiny
    config["study"].update(name=STUDY, models=["tiny"], tasks=["mdqa"], synthetic_conditions=["low_low"],
                           real_conditions=["real_full"])
    config["heads"]["examples"] = RANKING
    config["causal"].update(knockout_top_k=2, random_exclude_top=4, random_draws=2, patch_top_k=3, examples=CAUSAL,
                            knockout_conditions=["real_full", "low_low"], patch_conditions=["low_low"])
    config["evaluate"].update(bootstrap_resamples=200, max_new_tokens={"mdqa": 3, "musique": 3, "summhay": 3})
    (work / "test-config.yaml").write_text(yaml.safe_dump(config))
    snakemake = _snakemake()
    targets = [f"results/{STUDY}/figures/tiny/figure4.png", f"results/{STUDY}/causal/tiny/knockout_summary.parquet",
               f"results/{STUDY}/tables/tiny/table3.md", f"results/{STUDY}/tables/tiny/table3.parquet"]
    cmd = [snakemake, "--cores", "2", "--configfile", "test-config.yaml", "--allowed-rules", "knockout",
           "patching", "knockout_figure", "patching_table", "--", *targets]
    result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    from synthctx.schema import read_metadata, read_table

    # every causal job ran on the examples after the ranking part, and says so
    causal_ids = [f"ex{i}" for i in range(RANKING, RANKING + CAUSAL)]
    for path in [work / f"results/{STUDY}/causal/tiny/mdqa/real_full/knockout.parquet",
                 work / f"results/{STUDY}/causal/tiny/mdqa/low_low/knockout.parquet",
                 work / f"results/{STUDY}/causal/tiny/mdqa/low_low/patching.parquet"]:
        assert sorted(set(read_table(path, "intervention_predictions")["example_id"])) == causal_ids, path
        meta = read_metadata(path)
        assert meta["example_ids"] == causal_ids and meta["ranking_example_ids"] == ["ex0", "ex1"], path
    summary = read_table(work / f"results/{STUDY}/causal/tiny/knockout_summary.parquet", "intervention_summary")
    assert set(summary["condition"]) == {"real_full", "low_low"}
    table = read_table(work / f"results/{STUDY}/tables/tiny/table3.parquet", "intervention_summary")
    assert set(table["intervention"]) == {"patch_intersection", "patch_complement", "patch_random"}
    assert "| MDQA | Low / Low |" in (work / f"results/{STUDY}/tables/tiny/table3.md").read_text()
    report = subprocess.run([snakemake, "--configfile", "test-config.yaml", "--report", "report.html", "--", *targets],
                            cwd=work, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-4000:]
    assert (work / "report.html").stat().st_size > 10_000
    shutil.rmtree(work / "results", ignore_errors=True)
