"""The paper-scale rehearsal (issue 14) on the CPU: random-weight models of exact shapes (source kind
random_init), config/paper-rehearsal.yaml, the GPU-slot claim of the device script, the report's
projection, and (slow) the rehearsal's rules end to end at a tiny shape."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import MODEL_CACHE, REPO, SHARED_DATA

LLAMA3_8B_PARAMETERS = 8_030_261_248
MISTRAL_7B_PARAMETERS = 7_241_732_096
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "initializer_range": 0.02}
REHEARSAL_STACK = ["config.yaml", "config/paper.yaml", "config/paper-rehearsal.yaml"]


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return load_module("rehearsal_report", REPO / "benchmarks" / "rehearsal_report.py")


def rehearsal_config() -> dict:
    from snakemake.utils import update_config

    config: dict = {}
    for path in REHEARSAL_STACK:
        update_config(config, yaml.safe_load((REPO / path).read_text()))
    return config


def random_source(architecture="llama", vocab_size=50_000, seed=3, **config):
    return {"kind": "random_init", "architecture": architecture, "seed": seed, "tokenizer_from": str(MODEL_CACHE),
            "config": {**TINY, "vocab_size": vocab_size, **config}}


def safetensors_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# ---------------------------------------------------------------- random_init models


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, smollm_dir):
    from synthctx.models.prepare import prepare_model

    out = tmp_path_factory.mktemp("random") / "llama"
    prepare_model(random_source(), out, cache_dir=out.parent / "cache")
    return out


def test_random_init_shapes_vocab_and_tokens(tiny_llama_dir, smollm_tokenizer):
    from transformers import AutoConfig

    from synthctx.models.loading import load_tokenizer

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size) == (32, 2, 4, 2, 64)
    assert not config.tie_word_embeddings
    weights = safetensors_weights(tiny_llama_dir)
    # The vocabulary keeps its configured (padded) size, beyond the tokenizer's 49,152 tokens.
    assert weights["model.embed_tokens.weight"].shape == (50_000, 32)
    assert weights["lm_head.weight"].shape == (50_000, 32)
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)  # 2 KV heads x head_dim 8
    assert {str(w.dtype) for w in weights.values()} == {"torch.bfloat16"}
    assert float(weights["model.norm.weight"].float().mean()) == 1.0
    std = float(weights["model.layers.1.mlp.down_proj.weight"].float().std())
    assert 0.018 < std < 0.022  # initializer_range
    tok = load_tokenizer(str(tiny_llama_dir))
    assert len(tok) == len(smollm_tokenizer) == 49_152
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(config, key) == getattr(smollm_tokenizer, key) and 0 <= getattr(config, key) < len(tok)
    text = "Rivers of Peru flow to the Pacific, 1889 \u2014 caf\u00e9."
    assert tok.decode(tok(text)["input_ids"]) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in prompt  # the borrowed ChatML template
    record = json.loads((tiny_llama_dir / "random_init.json").read_text())
    assert record["parameters"] == sum(w.numel() for w in weights.values()) and record["seed"] == 3


def test_random_init_forward_pass(tiny_llama_dir):
    import torch

    from synthctx.models.loading import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_llama_dir))
    model = load_model(str(tiny_llama_dir), dtype="float32", rope_theta=4e6, context_tokens=2048)
    assert model.config.max_position_embeddings == 2048
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 50_000) and torch.isfinite(logits).all()


def test_random_init_is_seeded_and_sharded_alike(tiny_llama_dir, tmp_path):
    """Same seed: identical tensors, also when written in many shards (one generator per tensor);
    another seed: other tensors."""
    import torch

    from synthctx.models.prepare import random_init_model

    sharded = random_init_model(random_source(), tmp_path / "sharded", MODEL_CACHE, shard_bytes=200_000)
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) >= 3
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    reference = safetensors_weights(tiny_llama_dir)
    assert set(index["weight_map"]) == set(reference)
    again = safetensors_weights(sharded)
    assert all(torch.equal(again[k], reference[k]) for k in reference)
    other = safetensors_weights(random_init_model(random_source(seed=4), tmp_path / "other", MODEL_CACHE))
    assert not torch.equal(other["model.layers.0.self_attn.q_proj.weight"],
                           reference["model.layers.0.self_attn.q_proj.weight"])

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(sharded, dtype=torch.bfloat16)
    assert torch.equal(loaded.state_dict()["model.layers.1.self_attn.o_proj.weight"],
                       reference["model.layers.1.self_attn.o_proj.weight"])


def test_random_init_mistral_cuts_the_tokenizer_to_its_vocabulary(tmp_path, smollm_dir):
    """Mistral's 32,000 rows are fewer than the borrowed 49,152 tokens: the tokenizer keeps its
    first 32,000 (still encoding any text), the sliding window stays, and a forward pass runs."""
    import torch
    from transformers import AutoConfig

    from synthctx.models.loading import load_model, load_tokenizer
    from synthctx.models.prepare import prepare_model

    out = prepare_model(random_source("mistral", vocab_size=32_000, sliding_window=16), tmp_path / "mistral",
                        cache_dir=tmp_path / "cache")
    config = AutoConfig.from_pretrained(out)
    assert config.architectures == ["MistralForCausalLM"] and config.sliding_window == 16
    tok = load_tokenizer(str(out))
    assert len(tok) == 32_000 and tok.eos_token_id == 2 and tok.chat_template
    text = "Zyxwvut qwerty \u6771\u4eac 2024: la na\u00efvet\u00e9 d'Ang\u00e9lique."
    ids = tok(text)["input_ids"]
    assert max(ids) < 32_000 and tok.decode(ids) == text
    model = load_model(str(out), dtype="float32")
    with torch.no_grad():
        assert model(input_ids=torch.tensor([ids])).logits.shape == (1, len(ids), 32_000)


def test_random_init_config_errors_name_the_field(smollm_tokenizer):
    from synthctx.models.prepare import random_init_config

    with pytest.raises(ValueError, match="sliding_window"):  # not a Llama field
        random_init_config("llama", {**TINY, "vocab_size": 50_000, "sliding_window": 4096}, smollm_tokenizer)
    with pytest.raises(ValueError, match="eos_token_id"):  # ids come from the tokenizer
        random_init_config("llama", {**TINY, "vocab_size": 50_000, "eos_token_id": 128009}, smollm_tokenizer)
    with pytest.raises(ValueError, match="vocab_size"):
        random_init_config("llama", {**TINY, "vocab_size": 1000}, smollm_tokenizer)
    with pytest.raises(ValueError, match="architecture"):
        random_init_config("gpt2", {**TINY, "vocab_size": 50_000}, smollm_tokenizer)


def test_rehearsal_models_have_the_published_shapes(smollm_tokenizer):
    """The full Llama-3-8B / Mistral-7B shapes of config/paper-rehearsal.yaml, on the meta device:
    parameter counts of the published checkpoints, and the 8 KV heads / sliding window."""
    from synthctx.models.prepare import parameter_count, random_init_config, truncate_bpe_tokenizer

    models = rehearsal_config()["models"]
    llama = random_init_config("llama", models["llama3-8b-random"]["source"]["config"], smollm_tokenizer)
    assert parameter_count(llama) == LLAMA3_8B_PARAMETERS
    assert (llama.vocab_size, llama.num_key_value_heads, llama.rope_parameters["rope_theta"]) == (128256, 8, 500000.0)

    class Cut:  # the tokenizer as random_init_model cuts it for Mistral: 32,000 tokens
        def __init__(self, tok):
            self.tok = tok

        def __len__(self):
            return 32_000

        def __getattr__(self, name):
            return getattr(self.tok, name)

    mistral = random_init_config("mistral", models["mistral-7b-random"]["source"]["config"], Cut(smollm_tokenizer))
    assert parameter_count(mistral) == MISTRAL_7B_PARAMETERS
    assert (mistral.sliding_window, mistral.max_position_embeddings, mistral.vocab_size) == (4096, 32768, 32000)
    assert truncate_bpe_tokenizer  # (the cut itself: test_random_init_mistral_cuts_the_tokenizer_to_its_vocabulary)


# ---------------------------------------------------------------- the rehearsal config


def test_rehearsal_config_stands_in_for_paper():
    """Schema-valid on top of paper.yaml; each random model keeps its paper model's budget, RoPE
    base, dtype and window; HF backends; one knockout and one patching condition."""
    from snakemake.utils import validate

    config = rehearsal_config()
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    assert config["study"]["models"] == ["llama3-8b-random", "mistral-7b-random"]
    for name in config["study"]["models"]:
        spec = config["models"][name]
        paper = config["models"][spec["source"]["shape_of"]]
        assert spec["source"]["kind"] == "random_init" and spec["source"]["tokenizer_from"] == "smollm2-135m"
        for key in ("native_context", "context_tokens", "rope_theta", "dtype"):
            assert spec[key] == paper[key], (name, key)
        assert spec["context_tokens"] == 32768 and spec["attn_implementation"] == "sdpa"
    assert config["generation"]["backend"] == config["evaluate"]["backend"] == "hf"
    assert config["causal"]["knockout_conditions"] == ["real_full"] and config["causal"]["patch_conditions"] == ["symbolic"]
    assert config["causal"]["positive_heads_only"] is False
    assert max(config["heads"]["niah"]["lengths"]) <= 32768
    assert config["heads"]["examples"] <= config["data"]["eval_examples"]


@pytest.mark.slow
def test_rehearsal_dry_run_schedules_every_gpu_rule(tmp_path, report):
    """`snakemake -n` of the device script's targets: every GPU rule of paper.yaml, from scratch."""
    from slurm.workflow import job_counts, run_snakemake

    if not SHARED_DATA.is_dir():
        pytest.skip("the rehearsal reads the real data samples (../shared/data), which are not here")

    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump({"raw_data": {"local_dir": str(SHARED_DATA)}}))
    stack = [str(REPO / "config/paper.yaml"), str(REPO / "config/paper-rehearsal.yaml"), str(tmp_path / "overlay.yaml")]
    targets = report.rehearsal_targets(report.load_config(["config.yaml", *stack], tmp_path))
    proc = run_snakemake("-n", *targets, "-s", str(REPO / "Snakefile"), "--configfile", *stack, cwd=tmp_path,
                         timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    counts = job_counts(out)
    # 2 models x 3 tasks; conditions real_full + symbolic + real_full__allmod (the all-module
    # recipe; + nonft in the evaluation)
    assert counts["synth_pool"] == 3 and counts["train_adapter"] == 18 and counts["evaluate_task"] == 6
    assert counts["heads"] == 18 and counts["niah_heads"] == 2
    assert counts["knockout"] == 6 and counts["patching"] == 6
    assert counts["prepare_model"] == 3  # both random models and the tokenizer's model


# ---------------------------------------------------------------- zero-score heads (causal.positive_heads_only)


def test_zero_score_heads_fill_the_sets_only_when_asked(tiny_llama_dir, tmp_path):
    """A random model's heads all score 0. The study keeps only positive heads (empty sets: no
    hook, no donor run); positive_heads_only=False ranks them (lowest layer/head first), so that
    the knockout hooks and patching's lockstep donor run."""
    import pandas as pd

    from synthctx.causal.experiments import run_knockout, run_patching
    from synthctx.data.examples import make_example, write_examples
    from synthctx.schema import write_table

    docs = [{"doc_id": "1", "title": "", "text": "Lima is the capital of Peru."},
            {"doc_id": "2", "title": "", "text": "Rivers flow to the sea."}]
    example = make_example(example_id="e0", task="mdqa", condition="real", split="eval", documents=docs,
                           question="Capital of Peru?", answers=["Lima"], target="Lima", gold_doc_ids=["1"],
                           needles=[{"doc_id": "1", "start": 0, "end": 4, "kind": "answer"}])
    # The first example ranks the heads, the second runs the causal tests (disjoint parts).
    second = dict(example, example_id="e1")
    write_examples([example, second], str(tmp_path / "eval.parquet"))
    rows = [{"model": "m", "task": "mdqa", "condition": c, "head_kind": "retrieval", "layer": layer, "head": head,
             "score": 0.0, "n_examples": 1, "n_seen": 1} for c in ("x",) for layer in range(2) for head in range(4)]
    write_table(pd.DataFrame(rows), tmp_path / "scores.parquet", "head_scores")
    from dataclasses import replace

    from synthctx.causal.settings import KnockoutSettings, PatchingSettings

    common = dict(model_dir=str(tiny_llama_dir), settings={"dtype": "float32"}, eval_path=str(tmp_path / "eval.parquet"),
                  model_name="m", task="mdqa")
    run = dict(top_k=2, ranking_examples=1, examples=1, max_new_tokens=2, seed=1, batch_size=1, head_kind="retrieval",
               positive_heads_only=True)
    ko = KnockoutSettings(**run, random_exclude_top=4, random_draws=1, operator="uniform")
    knockout = dict(common, adapter_dir=None, head_scores_path=str(tmp_path / "scores.parquet"), condition="x")
    patch = PatchingSettings(**run)
    patching = dict(common, donor_adapter=None, recipient_adapter=None, donor_scores_path=str(tmp_path / "scores.parquet"),
                    recipient_scores_path=str(tmp_path / "scores.parquet"), recipient="x")

    def heads_of(frame, intervention):
        return json.loads(frame[frame["intervention"] == intervention]["heads"].iloc[0])

    study = run_knockout(**knockout, knockout=ko, out_path=str(tmp_path / "k1.parquet"))
    assert heads_of(study, "knockout_topk") == [] and heads_of(study, "knockout_random") == []
    rehearsal = run_knockout(**knockout, knockout=replace(ko, positive_heads_only=False), out_path=str(tmp_path / "k2.parquet"))
    assert heads_of(rehearsal, "knockout_topk") == [[0, 0], [0, 1]]
    assert len(heads_of(rehearsal, "knockout_random")) == 2
    study = run_patching(**patching, patching=patch, out_path=str(tmp_path / "p1.parquet"))
    assert all(heads_of(study, f"patch_{s}") == [] for s in ("intersection", "complement", "random"))
    rehearsal = run_patching(**patching, patching=replace(patch, positive_heads_only=False),
                             out_path=str(tmp_path / "p2.parquet"))
    assert heads_of(rehearsal, "patch_intersection") == [[0, 0], [0, 1]]
    assert heads_of(rehearsal, "patch_complement") == [] and len(heads_of(rehearsal, "patch_random")) == 2


# ---------------------------------------------------------------- GPU slots of the device script


def test_gpu_slots_give_each_gpu_job_its_own_card(tmp_path):
    """Two GPU job scripts running at once get different cards; a CPU job script and a process that
    already sees CUDA_VISIBLE_DEVICES claim nothing."""
    site = REPO / "benchmarks" / "gpu_slots"
    body = "import os, sys, time; print(os.environ.get('CUDA_VISIBLE_DEVICES')); sys.stdout.flush(); time.sleep(1.5)\n"
    scripts = {}
    for name in ("tmpab12_x.heads.py", "tmpcd34.knockout.py", "tmpef56.build_real_data.py", "evaluate_task.py"):
        scripts[name] = tmp_path / name
        scripts[name].write_text(body)
    env = {**os.environ, "PYTHONPATH": str(site), "SYNTHCTX_GPU_SLOT_DIR": str(tmp_path / "slots"),
           "SYNTHCTX_GPU_COUNT": "2", "SYNTHCTX_GPU_SLOTS": "2"}
    env.pop("CUDA_VISIBLE_DEVICES", None)

    def start(name, **extra):
        return subprocess.Popen([sys.executable, str(scripts[name])], env={**env, **extra}, stdout=subprocess.PIPE,
                                text=True)

    first, second = start("tmpab12_x.heads.py"), start("tmpcd34.knockout.py")
    cpu, preset = start("tmpef56.build_real_data.py"), start("evaluate_task.py", CUDA_VISIBLE_DEVICES="5")
    got = {name: p.communicate(timeout=30)[0].strip() for name, p in
           [("a", first), ("b", second), ("cpu", cpu), ("preset", preset)]}
    assert {got["a"], got["b"]} == {"0", "1"}
    assert got["cpu"] == "None" and got["preset"] == "5"
    # A third GPU job after both ended gets a free slot again.
    third = start("evaluate_task.py")
    assert third.communicate(timeout=30)[0].strip() in {"0", "1"}
    lines = (tmp_path / "slots" / "assignments.tsv").read_text().splitlines()
    assert len(lines) == 3 and {line.split("\t")[4] for line in lines} == {"tmpab12_x.heads.py", "tmpcd34.knockout.py",
                                                                            "evaluate_task.py"}


def test_gpu_job_names():
    site = load_module("gpu_slots_site", REPO / "benchmarks" / "gpu_slots" / "sitecustomize.py")
    assert site.is_gpu_job("/w/.snakemake/scripts/tmp8m5qjqj7.patching.py")
    assert site.is_gpu_job("/repo/workflow/scripts/synth_pool.py")
    assert site.is_gpu_job("tmpx.niah_heads.py") and site.is_gpu_job("tmpx.heads.py")
    assert not site.is_gpu_job("tmpx.synth_variant.py") and not site.is_gpu_job("-c")
    assert not site.is_gpu_job("/usr/bin/snakemake")


# ---------------------------------------------------------------- the report's projection


def test_report_parsers(report, tmp_path):
    log = ("2026-12-01 10:00:00,000 INFO synthctx: loading\n"
           "2026-12-01 10:00:20,500 INFO synthctx.heads: m/mdqa/real_full: 4 examples, adapter=x\n"
           "heads: 100%|##########| 4/4\n"
           "2026-12-01 10:00:31,000 INFO synthctx: peak GPU memory: 41.25 GiB allocated, 44.50 GiB reserved by PyTorch\n")
    assert report.parse_peak(log) == (41.25, 44.5)
    assert report.seconds_between(log, report.HEADS_START_RE) == pytest.approx(10.5)
    assert report.parse_peak("no GPU here") == (None, None)
    tsv = tmp_path / "x.benchmark.tsv"
    tsv.write_text("s\th:m:s\tmax_rss\tmax_vms\n12.5\t0:00:12\t20480.5\t30000\n")
    assert report.read_benchmark(tsv) == (12.5, 20480.5)


def _paper_config(report):
    config = report.load_config(["config.yaml", "config/paper.yaml"], REPO)
    return config


def test_paper_job_counts(report):
    """Jobs and units per rule from config/paper.yaml (2 models x 3 tasks, 7 trained conditions
    + the all-module recipe's 6: Real (Full) and the five synthetic ones)."""
    config = _paper_config(report)
    with pytest.raises(ValueError, match="--real-full mdqa=N"):
        report.paper_jobs(config)
    jobs = report.paper_jobs(config, {"mdqa": 2455, "musique": 1000, "summhay": 300})
    by_rule: dict = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job)
    train = {(j.task, j.condition): j.units for j in by_rule["train_adapter"] if j.model == "llama3-8b-instruct"}
    assert len(by_rule["train_adapter"]) == 2 * 3 * (7 + 6)
    # 2 epochs: synthetic 500 examples, Real (Full) all given, Real (Limited) its 0.25.
    assert train[("mdqa", "symbolic")] == 1000.0 and train[("mdqa", "real_full")] == 4910.0
    assert train[("mdqa", "real_limited")] == 2 * 614 and train[("summhay", "real_full")] == 600.0
    # a recipe condition trains on its base condition's set
    assert train[("mdqa", "real_full__allmod")] == 4910.0 and train[("musique", "symbolic__allmod")] == 1000.0
    assert ("mdqa", "real_limited__allmod") not in train
    # 13 trained conditions + Non-FT, 200 eval examples each
    assert len(by_rule["evaluate_task"]) == 6 and {j.units for j in by_rule["evaluate_task"]} == {200 * 14}
    assert {j.reloads for j in by_rule["evaluate_task"]} == {14}
    assert len(by_rule["heads"]) == 6 * 14 and {j.units for j in by_rule["heads"]} == {100}
    # knockout: Real (Full), the 5 synthetic, real_full__allmod; patching: 5 synthetic + high_high__allmod
    assert len(by_rule["knockout"]) == 6 * 7 and {j.units for j in by_rule["knockout"]} == {700}
    assert len(by_rule["patching"]) == 6 * 6 and {j.units for j in by_rule["patching"]} == {400}
    assert [(j.units, j.mean_length) for j in by_rule["niah_heads"]] == [(500, 16800.0)] * 2
    pools = by_rule["synth_pool"]
    assert len(pools) == 3 and {j.model for j in pools} == {"llama3-8b-instruct"}
    assert all(j.units % 512 == 0 and j.units >= 4000 * 512 for j in pools)


def test_projection_on_constructed_measures(report):
    M = report.Measure
    measures = [
        # trainings: 4 example-epochs each; the largest per task counts (real 10 s, symbolic 2 s per example)
        M("train_adapter", "llama", "mdqa", "real_full", wall_s=60.0, work_s=40.0, units=4),
        M("train_adapter", "llama", "mdqa", "symbolic", wall_s=28.0, work_s=8.0, units=4),
        M("train_adapter", "llama", "musique", "real_full", wall_s=100.0, work_s=80.0, units=4,
          peak_allocated_gib=30.0, peak_reserved_gib=33.0, max_rss_mb=20000.0),
        # knockout: overhead 20 s (= the model's load estimate), 2 s per decode
        M("knockout", "llama", "mdqa", "real_full", wall_s=44.0, work_s=24.0, units=12, peak_reserved_gib=50.0),
        # evaluation: 3 conditions each loading the model (20 s) + 12 decodes of 5 s = 120 s
        M("evaluate_task", "llama", "mdqa", "", wall_s=185.0, work_s=180.0, units=12, reloads=3),
        # patching: half its decodes in lockstep, 3 s per decode measured
        M("patching", "llama", "mdqa", "symbolic", wall_s=56.0, work_s=24.0, units=8, lockstep_fraction=0.5),
        # NIAH at mean length 20,000: 4 s per decode
        M("niah_heads", "llama", "", "", wall_s=36.0, work_s=16.0, units=4, mean_length=20000.0,
          peak_reserved_gib=80.0),
    ]
    table = report.rates(measures)
    train = table[("train_adapter", "llama")]
    assert train.per_unit_s == {"mdqa": 10.0, "musique": 20.0} and train.overhead_s == 20.0
    assert table[("knockout", "llama")].load_s == 20.0
    assert table[("evaluate_task", "llama")].per_unit_s == {"mdqa": 10.0}  # (180 - 3 x 20) / 12
    assert table[("patching", "llama")].per_unit_s["mdqa"] == pytest.approx(3.0 * 1.75 / 1.5)
    P = report.PaperJob
    jobs = [P("train_adapter", "llama", "mdqa", "real_full", 1000), P("train_adapter", "llama", "summhay", "x", 1000),
            P("evaluate_task", "llama", "mdqa", "", 1600, reloads=8),
            P("knockout", "llama", "musique", "real_full", 700),  # unmeasured task: the rule's largest rate
            P("patching", "llama", "mdqa", "s", 400),
            P("niah_heads", "llama", "", "", 500, mean_length=16800.0),
            P("heads", "llama", "mdqa", "nonft", 100)]  # rule not measured
    assert report.job_seconds(jobs[0], train) == 20.0 + 1000 * 10.0
    assert report.job_seconds(jobs[1], train) == 20.0 + 1000 * 20.0  # summhay not rehearsed: largest (musique)
    assert report.job_seconds(jobs[2], table[("evaluate_task", "llama")]) == 5.0 + 8 * 20.0 + 1600 * 10.0
    assert report.job_seconds(jobs[3], table[("knockout", "llama")]) == 20.0 + 700 * 2.0
    assert report.job_seconds(jobs[5], table[("niah_heads", "llama")]) == pytest.approx(20.0 + 500 * 4.0 * 16800 / 20000)
    rows = report.project(jobs, table)
    by_rule = {r["rule"]: r for r in rows}
    assert by_rule["train_adapter"]["jobs"] == 2
    assert by_rule["train_adapter"]["gpu_hours"] == pytest.approx((10020.0 + 20020.0) / 3600)
    assert by_rule["train_adapter"]["max_job_hours"] == pytest.approx(20020.0 / 3600)
    assert by_rule["heads"]["gpu_hours"] is None
    totals = report.stage_totals(rows)["llama"]
    assert totals["train"] == pytest.approx(30040.0 / 3600)
    assert totals["causal"] == pytest.approx((1420.0 + 32.0 + 400 * 3.5) / 3600)  # patching overhead 56 - 24
    assert totals["heads"] is None and totals["total"] is None  # heads unmeasured: no total
    resources = {r["rule"]: r for r in report.suggested_resources(rows, table)}
    assert resources["train_adapter"]["runtime_h"] == 9  # ceil(5.56 h x 1.5)
    assert resources["train_adapter"]["fits_80gb"] is True and resources["train_adapter"]["mem_mb"] == 30000
    assert resources["niah_heads"]["fits_80gb"] is False  # 80 GiB reserved: over the 76 GiB limit
    text = report.markdown(measures, table, rows, _paper_config(report))
    assert "| train_adapter | llama | mdqa 10.000, musique 20.000 | 20.0 | 20.0 | 320.0 |" in text


def test_report_collects_a_rehearsal_folder(report, tmp_path):
    """collect() reads logs, benchmark TSVs and output metadata of a (constructed) rehearsal folder."""
    import pandas as pd

    from synthctx.schema import write_table

    config = rehearsal_config()
    study = tmp_path / "results" / "paper-rehearsal"  # study.name of config/paper-rehearsal.yaml
    log_dir = study / "logs" / "causal" / "patching" / "llama3-8b-random" / "mdqa"
    log_dir.mkdir(parents=True)
    (log_dir / "symbolic.log").write_text(
        "2026-12-01 10:00:00,000 INFO synthctx.causal: patching ...: sets {}\n"
        "2026-12-01 10:01:00,000 INFO synthctx: peak GPU memory: 70.00 GiB allocated, 75.00 GiB reserved by PyTorch\n")
    (log_dir / "symbolic.benchmark.tsv").write_text("s\tmax_rss\n90.0\t35000\n")
    rows = [{"model": "llama3-8b-random", "task": "mdqa", "condition": "symbolic", "intervention": i, "draw": 0,
             "heads": "[]" if i in ("none", "patch_complement") else "[[0, 0]]", "example_id": f"e{n}",
             "prediction": "", "score": 0.0}
            for i in ("none", "patch_intersection", "patch_complement", "patch_random") for n in range(2)]
    write_table(pd.DataFrame(rows), study / "causal/llama3-8b-random/mdqa/symbolic/patching.parquet",
                "intervention_predictions", {"seconds": 40.0})
    (measure,) = report.collect(tmp_path, config)
    assert (measure.rule, measure.model, measure.task, measure.condition) == ("patching", "llama3-8b-instruct", "mdqa",
                                                                            "symbolic")
    assert (measure.wall_s, measure.work_s, measure.units, measure.max_rss_mb) == (90.0, 40.0, 8.0, 35000.0)
    assert (measure.peak_allocated_gib, measure.peak_reserved_gib) == (70.0, 75.0)
    assert measure.lockstep_fraction == 0.5


# ---------------------------------------------------------------- the rehearsal's rules, tiny


@pytest.mark.slow
def test_rehearsal_tiny_workflow(tmp_path, report, smollm_dir):
    """config/paper-rehearsal.yaml's targets through the real rules, at tests/configs/rehearsal-tiny.yaml's
    2-layer Mistral shape and 512 tokens: random_init model, pool, symbolic variant, trainings,
    HF evaluation, heads, NIAH, knockout and patching (donor in lockstep); then the report."""
    from slurm.workflow import run_snakemake

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    overlay = {"raw_data": {"local_dir": str(SHARED_DATA)},
               "models": {"mistral-7b-random": {"source": {"tokenizer_from": str(smollm_dir)}}}}
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    stack = [str(REPO / p) for p in ("config/paper.yaml", "config/paper-rehearsal.yaml",
                                     "tests/configs/rehearsal-tiny.yaml")] + [str(tmp_path / "overlay.yaml")]
    config = report.load_config(["config.yaml", *stack], tmp_path)
    targets = report.rehearsal_targets(config)
    started = time.time()
    proc = run_snakemake(*targets, "-s", str(REPO / "Snakefile"), "--workflow-profile", "none", "--cores", "2",
                         "--configfile", *stack, cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    measures = report.collect(tmp_path, config)
    rules = {m.rule for m in measures}
    assert rules == set(report.GPU_RULES)
    assert all(m.units > 0 and m.wall_s and m.work_s is not None for m in measures), measures
    patching = [m for m in measures if m.rule == "patching"]
    assert patching and all(m.lockstep_fraction == 0.5 for m in patching)  # intersection + random runs
    print(f"tiny rehearsal: {len(measures)} GPU-rule jobs in {time.time() - started:.0f} s")


@pytest.mark.parametrize("models, tasks, expect_models, expect_tasks", [
    ("", "musique", {"llama3-8b-random", "mistral-7b-random"}, {"musique"}),
    ("llama3-8b-random", "", {"llama3-8b-random"}, {"mdqa", "musique", "summhay"}),
])
def test_device_overlay_narrows_the_rehearsal_to_the_given_models_and_tasks(
        report, tmp_path, models, tasks, expect_models, expect_tasks):
    """`paper_rehearsal_device.sh overlay ... MODELS TASKS` (setup's last step): one task runs every
    GPU rule of each model once, which is how one 30-minute device session holds both models."""
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(["bash", str(REPO / "benchmarks" / "paper_rehearsal_device.sh"), "overlay",
                    "/node/smollm2-135m", "/node/data", models, tasks], check=True, env=env, capture_output=True)
    overlay = yaml.safe_load((tmp_path / "paper-rehearsal-device.yaml").read_text())
    assert overlay["raw_data"]["local_dir"] == "/node/data"
    assert overlay["models"]["smollm2-135m"]["source"] == {"kind": "local", "path": "/node/smollm2-135m"}
    config = report.load_config([*REHEARSAL_STACK, tmp_path / "paper-rehearsal-device.yaml"])
    targets = report.rehearsal_targets(config)
    parts = [t.split("/") for t in targets]  # results/paper-rehearsal/<stage>/<model>/<task>/...
    assert {p[3] for p in parts} == expect_models
    assert {p[4] for p in parts} - {"niah"} == expect_tasks
    # per model: evaluation, heads of Real (Full), Symbolic and Real (Full) all modules, knockout,
    # patching per task, and the two NIAH sets
    assert len(targets) == len(expect_models) * (6 * len(expect_tasks) + 2)


def test_projection_scales_unrun_tasks_by_tokens_and_takes_estimates(report):
    """An unrun task's rate is the measured one x its prompt-token ratio (--task-tokens) for rules
    whose unit is one prompt, not for pools; --estimate fills an unreached (rule, model) from
    another rule's rate x a factor, with the given peak, and never replaces a measurement."""
    M, P = report.Measure, report.PaperJob
    measures = [
        M("train_adapter", "llama", "musique", "real_full", wall_s=60.0, work_s=40.0, units=4),
        M("knockout", "llama", "musique", "real_full", wall_s=44.0, work_s=24.0, units=12, peak_reserved_gib=40.0),
        M("synth_pool", "llama", "musique", "", wall_s=30.0, work_s=20.0, units=1000),
    ]
    table = report.rates(measures)
    tokens = {"mdqa": 3000.0, "musique": 30000.0}
    train = table[("train_adapter", "llama")]
    assert train.unit_rate("mdqa", tokens)[0] == pytest.approx(1.0)  # 10 s x 3K / 30K
    assert train.unit_rate("mdqa")[0] == 10.0 and train.unit_rate("summhay", tokens)[0] == 10.0  # no tokens: largest
    pool_job = P("synth_pool", "llama", "mdqa", "", 1000)
    assert report.job_seconds(pool_job, table[("synth_pool", "llama")], tokens) == pytest.approx(10.0 + 1000 * 0.02)
    table = report.add_estimates(table, ["patching:llama-rehearsal=knockout:llama*2.5@55.5"],
                                 {"llama-rehearsal": "llama"})
    patch = table[("patching", "llama")]
    assert patch.per_unit_s == {"musique": pytest.approx(5.0)} and patch.peak_reserved_gib == 55.5
    rows = report.project([P("train_adapter", "llama", "mdqa", "real_full", 100),
                           P("patching", "llama", "musique", "s", 40)], table, tokens)
    by_rule = {r["rule"]: r for r in rows}
    assert by_rule["train_adapter"]["gpu_hours"] == pytest.approx((20.0 + 100 * 1.0) / 3600)
    assert by_rule["train_adapter"]["basis"] == "mdqa from musique x tokens"
    assert by_rule["patching"]["gpu_hours"] == pytest.approx((20.0 + 40 * 5.0) / 3600)
    assert by_rule["patching"]["basis"] == "estimated: knockout of llama x 2.5"
    resources = {r["rule"]: r for r in report.suggested_resources(rows, table)}
    assert resources["patching"]["peak_basis"] == "given with --estimate" and resources["patching"]["fits_80gb"]
    with pytest.raises(ValueError, match="was measured"):
        report.add_estimates(table, ["knockout:llama=train_adapter:llama*2"], {})
    with pytest.raises(ValueError, match="no measurement of heads"):
        report.add_estimates(table, ["niah_heads:llama=heads:llama*2"], {})
    with pytest.raises(ValueError, match="expected RULE:MODEL"):
        report.add_estimates(table, ["patching=knockout*2"], {})


def test_device_collect_takes_what_a_partial_run_left(tmp_path):
    """`collect` of a run stopped early (no eval/ or causal/ folders yet) still packs its logs: it
    used to stop at the first missing folder (set -e) and return nothing (session 10's lease)."""
    import tarfile

    for rel in ("benchmarks/paper_rehearsal_device.sh", "benchmarks/rehearsal_report.py", "config.yaml",
                "config/paper.yaml", "config/paper-rehearsal.yaml"):
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text((REPO / rel).read_text())
    log = tmp_path / "repo/results/paper-rehearsal/logs/train_adapter/llama3-8b-random/musique/real_full.log"
    log.parent.mkdir(parents=True)
    log.write_text("peak GPU memory: 32.00 GiB allocated, 40.00 GiB reserved by PyTorch\n")
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    subprocess.run(["bash", "benchmarks/paper_rehearsal_device.sh", "overlay", "/node/smollm2-135m", "/node/data"],
                   cwd=tmp_path / "repo", env=env, check=True, capture_output=True)
    proc = subprocess.run(["bash", "benchmarks/paper_rehearsal_device.sh", "collect", str(tmp_path / "out")],
                          cwd=tmp_path / "repo", env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "out" / "paper_rehearsal.tgz") as tar:
        names = tar.getnames()
    assert "results/paper-rehearsal/logs/train_adapter/llama3-8b-random/musique/real_full.log" in names
