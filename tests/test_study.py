"""The study's vocabulary (synthctx.study) and the task registry (synthctx.tasks): one source
for labels, order, schema enums and wildcards; unknown names are errors, never dropped rows."""

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synthctx import study
from synthctx.tasks import BUILTIN_TASKS, get_task, task_names

REPO = Path(__file__).resolve().parents[1]


def test_schema_condition_enums_match_the_registry():
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["study"]["properties"]
    assert props["synthetic_conditions"]["items"]["enum"] == list(study.BUILTIN_SYNTHETIC)
    assert props["real_conditions"]["items"]["enum"] == list(study.BUILTIN_REAL)
    assert props["evaluation_conditions"]["items"]["enum"] == list(study.BUILTIN_EVALUATION_ONLY)
    # the schema lists no task: the registry does
    text = (REPO / "schemas" / "config.schema.yaml").read_text()
    assert not any(name in text.split() for name in BUILTIN_TASKS)


def test_wildcards_come_from_the_registry():
    common = (REPO / "rules" / "common.smk").read_text()
    assert "wildcard_pattern(study_vocabulary.task_names())" in common
    assert study.wildcard_pattern(["a_b", "c"]) == "a_b|c"


def test_one_label_per_condition_everywhere():
    from synthctx.causal import summary
    from synthctx.evaluate.table1 import condition_label

    assert condition_label("mdqa", "high_low") == "High / Low" == study.condition_label("high_low")
    assert condition_label("summhay", "low_high") == "Simplified / High"
    assert study.condition_label("real_full") == "Real Data (Full)"
    # a condition added by config (no x_y shape) is its own label, never a crash
    assert study.condition_label("my_condition", "mdqa") == "my_condition"
    assert not hasattr(summary, "CONDITION_LABELS")
    assert study.display_order(["nonft", "symbolic", "mine", "real_full"]) == ["real_full", "symbolic", "nonft", "mine"]


def test_config_adds_a_condition_and_checks_task_sections():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    changed = copy.deepcopy(config)
    changed["study"]["real_conditions"] = ["real_full", "real_limited"]
    study.check_config(changed)
    # a section is required only for the study's tasks
    only = copy.deepcopy(config)
    only["study"]["tasks"] = ["mdqa"]
    del only["data"]["musique"], only["raw_data"]["musique"], only["evaluate"]["max_new_tokens"]["musique"]
    study.check_config(only)
    bad = copy.deepcopy(config)
    del bad["data"]["summhay"]["num_documents"]
    with pytest.raises(ValueError, match="data.summhay"):
        study.check_config(bad)
    missing = copy.deepcopy(config)
    del missing["evaluate"]["max_new_tokens"]["mdqa"]
    with pytest.raises(ValueError, match="evaluate.max_new_tokens.mdqa"):
        study.check_config(missing)


def test_table2_refuses_an_unknown_task_instead_of_dropping_it():
    from synthctx.analysis.similarity import cross_task_vectors

    frame = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "head_kind": ["retrieval"] * 2, "score": [0.5, 0.1]})
    with pytest.raises(ValueError, match="unknown task 'hotpotqa'"):
        cross_task_vectors({"mdqa": frame, "hotpotqa": frame})


def test_builtin_tasks_are_registered_in_order():
    assert task_names()[:3] == list(BUILTIN_TASKS)
    assert get_task("summhay").rows_of_table2() == (("summhay_insight", "insight"), ("summhay_retrieval", "retrieval"))
    with pytest.raises(ValueError, match="registered tasks"):
        get_task("nope")


def test_default_real_data_unchanged_by_the_registries(shared_data, smollm_tokenizer):
    """The default config's real data (every task) hashes as on the commit before the registries
    (tests/fixtures/real_data_hashes.json): same eval examples, prompts, targets. The stats hashes
    were renewed once, when the one dataset_stats (synthctx.data.stats) added the gold_position_*
    rows to the real sets (every earlier row unchanged), and the MuSiQue and SummHay example hashes
    once, when examples began to record their source file by name instead of by absolute path (every
    other field unchanged; the absolute path made the hashes depend on the checkout's location)."""
    from synthctx.data.build import build_real_data

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    # The data settings the hashes were recorded with (config.yaml's before session 7's CPU
    # recipe raised Real (Full) to 20 and SummHay to one gold document): this checks the code.
    config["data"]["max_train_examples"] = 10
    config["data"]["summhay"]["max_gold_documents"] = 2
    expected = json.loads((REPO / "tests" / "fixtures" / "real_data_hashes.json").read_text())
    for task in config["study"]["tasks"]:
        files = [str(shared_data / f) for f in get_task(task).raw_files(config["raw_data"][task])]
        data = build_real_data(
            task, files, smollm_tokenizer, task_config={k: v for k, v in config["data"][task].items()
                                                        if k not in study.TASK_SIZE_OVERRIDES},
            eval_examples=config["data"][task].get("eval_examples", config["data"]["eval_examples"]),
            max_train_examples=config["data"]["max_train_examples"],
            limited_fraction=config["data"]["limited_fraction"], seed=config["study"]["seed"],
            context_tokens=config["models"]["smollm2-135m"]["context_tokens"])
        for name in ("eval", "real_full", "real_limited"):
            digest = hashlib.sha256(json.dumps(getattr(data, name), sort_keys=True, default=str).encode()).hexdigest()
            assert digest == expected[f"{task}/{name}"], (task, name)
        assert hashlib.sha256(data.stats.to_csv(index=False).encode()).hexdigest() == expected[f"{task}/stats"]


def test_real_full_cap_per_task_and_eval_size_override():
    """data.max_train_examples is one cap or a task -> cap mapping naming every study task; an
    overlay's single number (or null) replaces the mapping whole. data.<task>.eval_examples
    overrides the study-wide eval size; the task's own schema fragment never sees it."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["data"]["max_train_examples"] = {"mdqa": 20, "musique": None, "summhay": 40}
    config["data"]["musique"]["eval_examples"] = 7
    study.check_config(config)
    summhay_config, summhay_eval, summhay_cap = study.task_data_settings(config, "summhay")
    assert (summhay_eval, summhay_cap) == (config["data"]["eval_examples"], 40)
    assert "eval_examples" not in study.task_data_settings(config, "musique")[0]
    assert study.task_data_settings(config, "musique")[1:] == (7, None)
    assert study.task_data_settings(config, "mdqa")[1:] == (config["data"]["eval_examples"], 20)
    # an overlay that sets one number (Snakemake replaces a mapping by a scalar) caps every task
    overlaid = copy.deepcopy(config)
    overlaid["data"]["max_train_examples"] = 4
    assert {study.task_data_settings(overlaid, t)[2] for t in ("mdqa", "musique", "summhay")} == {4}
    missing = copy.deepcopy(config)
    del missing["data"]["max_train_examples"]["summhay"]
    with pytest.raises(ValueError, match="data.max_train_examples.summhay"):
        study.check_config(missing)
    wrong = copy.deepcopy(config)
    wrong["data"]["summhay"]["eval_examples"] = "12"
    with pytest.raises(ValueError, match="data.summhay.eval_examples"):
        study.check_config(wrong)
