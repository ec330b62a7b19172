"""Issue 15 item 5 and the native_context/chat_template item: settings spelled once, one
dataset_stats, one gold-position convention, SummHay's eval haystacks and MuSiQue's synthetic
hop count as settings, native_context enforced at parse time."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re

import pandas as pd
import pytest
import yaml

from conftest import FIXTURES, REPO

SUMMHAY = [str(FIXTURES / "raw" / "summhay" / f"topic_small{i}.json") for i in (1, 2, 3)]
SUMMHAY_CONFIG = {"eval_haystacks": 1, "num_documents": 5, "max_gold_documents": 2, "excerpt_sentences": 4,
                  "min_insight_match": 0.5}
EMPTY_POOL = pd.DataFrame(columns=["pool_id", "kind", "entity", "fields", "status", "text"])


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _defaults(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]


# ------------------------------------------------------------------ a. typed settings, no defaults


def test_train_settings_equal_config_yaml_and_have_no_defaults():
    from synthctx.train.lora import TrainSettings

    config = default_config()
    settings = TrainSettings.from_config(config["train"])
    assert dataclasses.asdict(settings) == config["train"]
    # The old defaults (lr 5e-4, warmup 0.0) disagreed with config.yaml (now 1e-3, 0.1).
    assert (settings.learning_rate, settings.warmup_ratio) == (1.0e-3, 0.1)
    assert _defaults(TrainSettings) == []
    missing = {k: v for k, v in config["train"].items() if k != "warmup_ratio"}
    with pytest.raises(ValueError, match=r"config train: missing keys \['warmup_ratio'\]"):
        TrainSettings.from_config(missing)
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rte'\]"):
        TrainSettings.from_config({**config["train"], "learning_rte": 1e-4})


def test_causal_settings_equal_config_yaml_and_have_no_defaults():
    from synthctx.causal.settings import KnockoutSettings, PatchingSettings

    config = default_config()
    causal = config["causal"]
    for task in config["study"]["tasks"]:
        knockout = KnockoutSettings.from_config(config, task)
        common = {"ranking_examples": config["heads"]["examples"], "examples": causal["examples"],
                  "batch_size": causal["batch_size"], "max_new_tokens": config["evaluate"]["max_new_tokens"][task],
                  "head_kind": "retrieval", "positive_heads_only": causal["positive_heads_only"],
                  "seed": config["study"]["seed"]}
        assert knockout.as_params() == {**common, "top_k": causal["knockout_top_k"],
                                        "random_exclude_top": causal["random_exclude_top"],
                                        "random_draws": causal["random_draws"],
                                        "operator": causal["knockout_operator"]}
        assert PatchingSettings.from_config(config, task).as_params() == {**common, "top_k": causal["patch_top_k"]}
        # the script's way back from the rule's params entry
        assert KnockoutSettings.from_params(knockout.as_params()) == knockout
    for cls in (KnockoutSettings, PatchingSettings):
        assert _defaults(cls) == []
    with pytest.raises(ValueError, match=r"missing keys \['operator'\]"):
        KnockoutSettings.from_params({k: v for k, v in KnockoutSettings.from_config(config, "mdqa").as_params().items()
                                      if k != "operator"})


def test_generation_params_equal_config_yaml_and_have_no_defaults():
    from synthctx.synth.backends import GenerationParams

    config = default_config()
    params = GenerationParams.from_config(config["generation"], seed=config["study"]["seed"])
    # max_new_tokens defaulted to 160 against config.yaml's 128
    assert (params.temperature, params.top_p, params.max_new_tokens, params.seed) == (
        config["generation"]["temperature"], config["generation"]["top_p"], config["generation"]["max_new_tokens"],
        config["study"]["seed"])
    assert _defaults(GenerationParams) == ["json_schema"]  # per document kind, not a config key


def test_variant_settings_have_no_defaults():
    from synthctx.synth.variants import VariantSettings

    # max_gold_documents defaulted to 2, a copy of data.summhay.max_gold_documents
    assert _defaults(VariantSettings) == []


# ------------------------------------------------------------------ b. model-settings keys once


def test_model_settings_keys_are_listed_once():
    from synthctx.models.loading import MODEL_SETTINGS_KEYS, model_settings

    assert tuple(model_settings({})) == MODEL_SETTINGS_KEYS
    spec = default_config()["models"]["smollm2-135m"]
    assert model_settings(spec) == {k: spec[k] for k in MODEL_SETTINGS_KEYS}
    # No rule spells the keys out: every rule that loads a model passes load_settings(model).
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        for key in ("attn_implementation", "rope_theta"):
            assert key not in text, f"{path.name} lists model-settings key {key!r}"


# ------------------------------------------------------------------ c./d. one dataset_stats, 0-based gold positions


@pytest.fixture(scope="module")
def symbolic_mdqa(smollm_tokenizer):
    from synthctx.synth.variants import build_variant

    return build_variant("mdqa", "symbolic", EMPTY_POOL, smollm_tokenizer, seed=5, examples=3, context_tokens=640,
                         num_documents=4)


def test_synthetic_needle_depth_and_gold_positions_follow_the_real_definitions(symbolic_mdqa, smollm_tokenizer):
    from synthctx.data.stats import gold_positions, needle_depth

    examples, stats = symbolic_mdqa
    for ex in examples:
        # 0-based, as the real data's (the synthetic examples said 1-based before)
        assert ex["meta"]["gold_positions"] == gold_positions(ex)
        assert ex["documents"][ex["meta"]["gold_positions"][0]]["doc_id"] == ex["gold_doc_ids"][0]
        # relative token position in the prompt, as the real data's (a position inside the
        # gold document before)
        assert ex["meta"]["needle_depth"] == pytest.approx(needle_depth(ex, smollm_tokenizer), abs=1e-4)
    rows = dict(zip(stats["stat"], stats["value"]))
    depths = [ex["meta"]["needle_depth"] for ex in examples]
    assert rows["needle_depth_mean"] == pytest.approx(sum(depths) / len(depths))
    positions = [p / 3 for ex in examples for p in ex["meta"]["gold_positions"]]
    assert rows["gold_position_mean"] == pytest.approx(sum(positions) / len(positions))


def test_real_and_synthetic_stats_share_one_definition(symbolic_mdqa, smollm_tokenizer):
    from synthctx.data import build, stats as stats_module
    from synthctx.data.build import build_real_data
    from synthctx.synth import variants

    assert variants.dataset_stats is stats_module.dataset_stats and build.needle_depth is stats_module.needle_depth
    real = build_real_data("summhay", SUMMHAY, smollm_tokenizer, task_config=SUMMHAY_CONFIG, eval_examples=1,
                           max_train_examples=None, limited_fraction=0.5, seed=1234, context_tokens=1024)
    real_stats = set(real.stats.loc[real.stats.condition == "real_full", "stat"])
    _, synthetic = symbolic_mdqa
    synthetic_stats = set(synthetic["stat"])
    shared = {f"{name}_{s}" for name in ("prompt_tokens", "needle_depth", "documents", "gold_documents", "needles",
                                         "gold_position") for s in ("min", "mean", "max")} | {"examples"}
    assert shared <= real_stats and shared <= synthetic_stats
    for ex in real.real_full:  # MuSiQue/SummHay real data were 0-based already
        assert ex["meta"]["gold_positions"] == stats_module.gold_positions(ex)


# ------------------------------------------------------------------ e. knockout / patching parameters once


def test_causal_parameters_are_one_params_entry():
    from synthctx.causal.experiments import run_knockout, run_patching
    from synthctx.causal.settings import KnockoutSettings, PatchingSettings

    rules = (REPO / "rules" / "causal.smk").read_text()
    for cls, function, script in ((KnockoutSettings, run_knockout, "knockout"), (PatchingSettings, run_patching,
                                                                                "patching")):
        names = [f.name for f in dataclasses.fields(cls)]
        parameters = set(inspect.signature(function).parameters)
        assert not parameters & set(names) - {"settings"}, parameters & set(names)
        text = (REPO / "workflow" / "scripts" / f"{script}.py").read_text()
        assert not re.findall(r"sm\.params\.(?!settings\b|%s\b)\w+" % script, text)
    for key in ("knockout_top_k", "random_exclude_top", "random_draws", "knockout_operator", "patch_top_k",
                "positive_heads_only"):
        assert key not in rules, key


# ------------------------------------------------------------------ f. SummHay eval haystacks


def test_summhay_eval_haystacks_are_a_config_key(smollm_tokenizer):
    from synthctx.data.build import build_real_data
    from synthctx.schema import ArtifactError
    from synthctx.tasks.summhay import load_summhay_files

    def build(**task_config):
        return build_real_data("summhay", SUMMHAY, smollm_tokenizer, task_config={**SUMMHAY_CONFIG, **task_config},
                               eval_examples=2, max_train_examples=None, limited_fraction=0.5, seed=1234,
                               context_tokens=1024)

    ids = sorted(h.topic_id for h in load_summhay_files(SUMMHAY))

    by_hash = build(eval_haystack_ids=None)
    hashed = {ex["meta"]["topic_id"] for ex in by_hash.eval}
    assert len(hashed) == 1
    # a haystack the seeded hash does not choose can now be the eval haystack
    other = next(i for i in ids if i not in hashed)
    chosen = build(eval_haystack_ids=[other])
    assert {ex["meta"]["topic_id"] for ex in chosen.eval} == {other}
    assert other not in {ex["meta"]["topic_id"] for ex in chosen.real_full}
    assert chosen.counts["eval_haystacks"] == 1
    # null keeps the seeded-hash choice: the default data stay as they were
    assert build().eval == by_hash.eval
    with pytest.raises(ArtifactError, match=r"data.summhay.eval_haystack_ids: \['nope'\] are not topic ids .*"
                                            r"topic_small1.json"):
        build(eval_haystack_ids=["nope"])
    with pytest.raises(ArtifactError, match="no training haystack would remain"):
        build(eval_haystack_ids=ids)


# ------------------------------------------------------------------ g. native_context, chat_template


def test_context_beyond_native_needs_a_rope_change_at_parse_time():
    from snakemake.utils import validate

    from synthctx.study import check_config

    config = default_config()
    check_config(copy.deepcopy(config))
    long = copy.deepcopy(config)
    long["models"]["smollm2-135m"]["context_tokens"] = 16384  # native_context 8192, rope_theta null
    with pytest.raises(ValueError, match=r"models.smollm2-135m.context_tokens: 16384 exceeds native_context 8192"):
        check_config(long)
    long["models"]["smollm2-135m"]["rope_theta"] = 4.0e5
    check_config(long)
    # chat_template was a documented key no code read: the schema now refuses it
    templated = copy.deepcopy(config)
    templated["models"]["smollm2-135m"]["chat_template"] = "model"
    with pytest.raises(Exception, match="chat_template"):
        validate(templated, str(REPO / "schemas" / "config.schema.yaml"))


# ------------------------------------------------------------------ h. MuSiQue's synthetic hop count


@pytest.mark.parametrize("variant", ["symbolic", "low_low"])
def test_musique_synthetic_hops_is_the_task_setting(monkeypatch, smollm_tokenizer, variant):
    from synthctx.synth.variants import build_variant
    from synthctx.tasks import get_task

    musique = get_task("musique")
    monkeypatch.setattr(musique, "synthetic_hops", 4)
    last = "value" if variant == "symbolic" else "answer"
    examples, _ = build_variant("musique", variant, EMPTY_POOL, smollm_tokenizer, seed=3, examples=2,
                                context_tokens=1024, num_documents=6)
    assert examples
    for ex in examples:
        kinds = {n["kind"] for n in ex["needles"]}
        assert {"hop1", "hop2", "hop3", last} <= kinds and "hop4" not in kinds
        assert len(ex["gold_doc_ids"]) == 4
        if variant == "symbolic":
            assert len(ex["meta"]["chain"]) == 5 and "twice more" in ex["question"]
        else:
            assert len(ex["meta"]["facts"]) == 4
