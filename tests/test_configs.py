"""The study configs (config.yaml, config/gpu-small.yaml, config/paper.yaml): schema, dry-run
job counts, and that the schema / config checks refuse bad configs naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from conftest import REPO
from slurm.workflow import job_counts, run_snakemake, stub_stages

SCHEMA = str(REPO / "schemas" / "config.schema.yaml")
CONFIGS = {"default": None, "gpu-small": "config/gpu-small.yaml", "paper": "config/paper.yaml"}


def merged(name: str) -> dict:
    """The config Snakemake sees: config.yaml updated (nested) by --configfile."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if CONFIGS[name]:
        update_config(config, yaml.safe_load((REPO / CONFIGS[name]).read_text()))
    return config


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_passes_schema(name):
    config = merged(name)
    validate(config, SCHEMA)
    for model in config["study"]["models"]:
        assert model in config["models"]
        spec = config["models"][model]
        # Contexts beyond the native window need a raised RoPE base.
        if spec["context_tokens"] > spec["native_context"]:
            assert spec["rope_theta"], model


def test_paper_config_scale():
    config = merged("paper")
    models = config["study"]["models"]
    assert models == ["llama3-8b-instruct", "mistral-7b-instruct"]
    for name in models:
        spec = config["models"][name]
        assert spec["source"]["kind"] == "hub"
        assert spec["dtype"] == "bfloat16" and spec["context_tokens"] == 32768
        assert spec["attn_implementation"] == "flash_attention_2"
    assert config["models"]["llama3-8b-instruct"]["rope_theta"] > 500000
    assert config["models"]["mistral-7b-instruct"]["rope_theta"] > 10000
    assert config["generation"]["backend"] == "vllm" and config["evaluate"]["backend"] == "vllm"
    assert len(config["study"]["synthetic_conditions"]) == 5 and len(config["study"]["real_conditions"]) == 2
    assert config["raw_data"]["local_dir"] is None  # the download rules fetch the full datasets


def test_gpu_small_config_scale():
    config, default = merged("gpu-small"), merged("default")
    spec = config["models"]["smollm2-135m"]
    assert spec["dtype"] == "bfloat16" and 4096 <= spec["context_tokens"] <= spec["native_context"]
    assert config["raw_data"]["local_dir"] == "../shared/data"
    assert config["data"]["max_train_examples"] is None  # all the real data here
    for section, key in [("data", "eval_examples"), ("generation", "examples_per_variant"), ("heads", "examples")]:
        assert config[section][key] > default[section][key], (section, key)


def expected_counts(config: dict, name: str) -> dict[str, int]:
    """Jobs per rule a dry-run from scratch must schedule (for the rules that exist)."""
    study = config["study"]
    n_models, n_tasks = len(study["models"]), len(study["tasks"])
    trained = len(study["synthetic_conditions"]) + len(study["real_conditions"])
    # each extra training recipe (training_recipes) trains its listed conditions once more
    trained += sum(len(r["conditions"]) for r in (config.get("training_recipes") or {}).values())
    counts = {
        "build_real_data": n_models * n_tasks,
        "train_adapter": n_models * n_tasks * trained,
        "evaluate_task": n_models * n_tasks,
        # one document pool per task (the generator model is shared by the studied models)
        "synth_pool": n_tasks,
        "synth_variant": n_models * n_tasks * len(study["synthetic_conditions"]),
        # head scores for every trained condition and the base model
        "heads": n_models * n_tasks * (trained + 1),
        "niah_heads": n_models,
        # knockout and activation patching for the conditions the causal section names
        "knockout": n_models * n_tasks * len(config["causal"]["knockout_conditions"]),
        "patching": n_models * n_tasks * len(config["causal"]["patch_conditions"]),
        "all": 1,
    }
    if name == "paper":
        counts.update({
            "prepare_model": n_models,
            "download_raw_mdqa": 1,
            "download_raw_summhay": len(config["raw_data"]["summhay"]["files"]),
            "download_raw_musique": len(config["raw_data"]["musique"]["files"]),
            "download_raw_musique_archive": 1,
        })
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpu-small", "paper"])
def test_config_dry_run(name, tmp_path):
    """`snakemake -n` plans the whole study; per-rule job counts follow from the config.

    Run in a scratch directory (nothing built yet) so the counts are those of a fresh run."""
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    config = merged(name)
    overrides = yaml.safe_load((REPO / CONFIGS[name]).read_text())
    if config["raw_data"]["local_dir"]:
        local = (REPO / config["raw_data"]["local_dir"]).resolve()
        if not local.is_dir():
            pytest.skip(f"{name} reads the real data samples at {local}, which are not here")
        overrides["raw_data"]["local_dir"] = str(local)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(overrides))
    proc = run_snakemake("-n", "-s", str(REPO / "Snakefile"), "--configfile", str(tmp_path / "study.yaml"),
                         cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "Missing input files" in out and stub_stages():
        pytest.skip(f"stages still stubs: {stub_stages()}")
    assert proc.returncode == 0, out[-5000:]
    counts = job_counts(out)
    assert counts, out[-3000:]
    for rule, n in expected_counts(config, name).items():
        if rule in counts or rule in ("build_real_data", "all"):
            assert counts[rule] == n, (rule, counts)
    if name == "gpu-small":
        # The embedded model is prepared locally; nothing is downloaded.
        assert not any(rule.startswith("download_raw") for rule in counts), counts


# ---- bad configs are refused, naming the key --------------------------------------------


def _schema_error(config: dict) -> str:
    with pytest.raises(Exception) as err:
        validate(config, SCHEMA)
    return str(err.value)


def test_config_check_refuses_unknown_task():
    # The schema only knows the shape of a task name; the task registry decides which exist.
    from synthctx.study import check_config

    config = copy.deepcopy(merged("default"))
    config["study"]["tasks"] = ["mdqa", "hotpotqa"]
    validate(copy.deepcopy(config), SCHEMA)
    with pytest.raises(ValueError) as err:
        check_config(config)
    assert "hotpotqa" in str(err.value) and "study.tasks" in str(err.value)


@pytest.mark.parametrize("path, value", [
    (("models", "smollm2-135m", "context_tokens"), -512),
    (("heads", "niah", "lengths"), [256, -1]),
    (("generation", "max_new_tokens"), -8),
])
def test_schema_refuses_negative_length(path, value):
    config = copy.deepcopy(merged("default"))
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    msg = _schema_error(config)
    assert "".join(f"['{k}']" for k in path) in msg, msg


def test_schema_refuses_unknown_key():
    config = copy.deepcopy(merged("default"))
    config["train"]["learning_rte"] = 1e-4
    msg = _schema_error(config)
    assert "learning_rte" in msg


@pytest.mark.slow
def test_unknown_study_model_is_refused(tmp_path):
    """study.models naming no entry under models: fails before any job, naming the key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"study": {"models": ["smollm2-135m", "llama-9000"]}}))
    proc = run_snakemake("-n", "--configfile", str(bad), timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "study.models" in out and "llama-9000" in out, out[-2000:]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_niah_needles_fit_two_disjoint_sets(name):
    """The shipped configs ask for no more NIAH needles than two disjoint sets can hold (a 10-per-set
    paper config once failed only when the job ran)."""
    from synthctx.heads.niah import NEEDLES, needle_sets

    per_set = merged(name)["heads"]["niah"]["needles_per_set"]
    first, second = needle_sets(per_set, 1234)
    assert len(first) == len(second) == per_set and not set(first) & set(second)
    assert 2 * per_set <= len(NEEDLES)


@pytest.mark.slow
def test_too_many_niah_needles_is_refused_at_parse_time(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"heads": {"niah": {"needles_per_set": 11}}}))
    proc = run_snakemake("-n", "--configfile", str(bad), timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "heads.niah.needles_per_set" in out and "at most 10" in out, out[-2000:]


def test_task_eval_examples_override():
    """data.<task>.eval_examples overrides data.eval_examples for that task only (gpu-small's MuSiQue
    sample holds 59 three-hop questions: 100 for eval left none to train on)."""
    cfg = merged("gpu-small")
    assert cfg["data"]["musique"]["eval_examples"] == 30 and cfg["data"]["eval_examples"] == 100
    assert "eval_examples" not in cfg["data"]["mdqa"]
    validate(copy.deepcopy(cfg), str(REPO / "schemas/config.schema.yaml"))
