"""Head sets, bootstrap, summaries, and both causal experiments end to end on a tiny model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from synthctx.causal.settings import PatchingSettings
from synthctx.causal.head_sets import knockout_random_heads, patch_head_sets, ranked_heads, top_k_heads
from synthctx.causal.stats import paired_bootstrap
from synthctx.schema import ArtifactError, read_metadata, read_table, write_table

ALL_HEADS = [(layer, head) for layer in range(4) for head in range(5)]


def _scores(values: dict, task="mdqa", condition="real_full", layers=4, heads=5) -> pd.DataFrame:
    rows = [{"model": "tiny", "task": task, "condition": condition, "head_kind": "retrieval", "layer": l, "head": h,
             "score": float(values.get((l, h), 0.0)), "n_examples": 3, "n_seen": 4}
            for l in range(layers) for h in range(heads)]
    return pd.DataFrame(rows)


def test_ranking_is_by_score_then_layer_head():
    table = _scores({(3, 1): 0.9, (0, 4): 0.5, (2, 2): 0.5, (1, 0): 0.1})
    ranking = ranked_heads(table)
    assert ranking[:4] == [(3, 1), (0, 4), (2, 2), (1, 0)]
    assert ranking[4] == (0, 0)  # zeros tie-broken by (layer, head)
    assert top_k_heads(table, 2) == [(0, 4), (3, 1)]
    with pytest.raises(ArtifactError, match="insight"):
        ranked_heads(table, head_kind="insight")


def test_knockout_random_heads_avoid_the_top_and_are_seeded():
    ranking = ranked_heads(_scores({(l, h): 20 - i for i, (l, h) in enumerate(ALL_HEADS)}))
    draws = [knockout_random_heads(ALL_HEADS, ranking, 3, 10, seed) for seed in range(5)]
    for heads in draws:
        assert len(heads) == 3 == len(set(heads))
        assert not set(heads) & set(ranking[:10])
    assert draws[0] == knockout_random_heads(ALL_HEADS, ranking, 3, 10, 0)
    assert len({tuple(d) for d in draws}) > 1
    with pytest.raises(ValueError, match="cannot draw"):
        knockout_random_heads(ALL_HEADS, ranking, 11, 10, 0)


def test_patch_head_sets_sizes_and_disjointness():
    donor = [(0, 0), (0, 1), (1, 1), (2, 3), (3, 3)] + [h for h in ALL_HEADS if h not in {(0, 0), (0, 1), (1, 1), (2, 3), (3, 3)}]
    recipient = [(1, 1), (3, 3), (2, 0), (0, 1), (1, 4)] + [h for h in ALL_HEADS if h not in {(1, 1), (3, 3), (2, 0), (0, 1), (1, 4)}]
    sets = patch_head_sets(donor, recipient, 5, ALL_HEADS, seed=7)
    assert sets["intersection"] == [(0, 1), (1, 1), (3, 3)]
    assert sets["complement"] == [(0, 0), (2, 3)]
    assert len(sets["random"]) == len(sets["intersection"])
    tops = set(donor[:5]) | set(recipient[:5])
    assert not set(sets["random"]) & tops
    assert not set(sets["intersection"]) & set(sets["complement"])
    assert set(sets["intersection"]) | set(sets["complement"]) == set(donor[:5])
    assert patch_head_sets(donor, recipient, 5, ALL_HEADS, seed=7) == sets


def test_paired_bootstrap():
    same = paired_bootstrap([0.5, 1.0, 0.0], [0.5, 1.0, 0.0], 1000, seed=1)
    assert same.delta == 0 and same.p_value == 1.0
    rng = np.random.default_rng(0)
    base = rng.random(50)
    better = paired_bootstrap(base + 0.3, base, 2000, seed=1)
    assert better.delta == pytest.approx(0.3) and better.p_value < 0.01 and better.ci_low > 0
    noisy = rng.random(50)
    a = paired_bootstrap(noisy, base, 2000, seed=3)
    assert a == paired_bootstrap(noisy, base, 2000, seed=3)
    assert a.ci_low <= a.delta <= a.ci_high
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0], 10, seed=0)


def _prediction_rows(task, condition, intervention, scores, draw=0, heads=((0, 1),)):
    return [{"model": "tiny", "task": task, "condition": condition, "intervention": intervention, "draw": draw,
             "heads": json.dumps([list(h) for h in heads]), "example_id": f"e{i}", "prediction": "x",
             "score": float(s)} for i, s in enumerate(scores)]


def test_summaries_figure_and_table(tmp_path):
    from synthctx.causal.summary import (
        knockout_summary,
        patching_summary,
        plot_figure4,
        read_predictions,
        table3_markdown,
    )

    rows = []
    for task in ("mdqa", "summhay"):
        for condition in ("real_full", "high_low"):
            rows += _prediction_rows(task, condition, "none", [1, 1, 0.5, 1])
            rows += _prediction_rows(task, condition, "knockout_topk", [0, 0.5, 0, 0])
            rows += _prediction_rows(task, condition, "knockout_random", [1, 1, 0.5, 0], draw=0)
            rows += _prediction_rows(task, condition, "knockout_random", [1, 1, 0.5, 1], draw=1)
    path = tmp_path / "knockout.parquet"
    write_table(pd.DataFrame(rows), path, "intervention_predictions")
    summary = knockout_summary(read_predictions([path]), 500, 0.05, seed=1)
    write_table(summary, tmp_path / "summary.parquet", "intervention_summary")
    top = summary[(summary.task == "mdqa") & (summary.condition == "real_full") & (summary.intervention == "knockout_topk")]
    assert top["delta"].item() == pytest.approx(-0.75)
    rnd = summary[(summary.task == "mdqa") & (summary.condition == "real_full") & (summary.intervention == "knockout_random")]
    assert rnd["score"].item() == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)  # draws averaged per example
    plot_figure4(summary, str(tmp_path / "figure4.png"), title="tiny")
    assert (tmp_path / "figure4.png").stat().st_size > 1000

    rows = _prediction_rows("mdqa", "symbolic", "none", [0, 0, 1, 0])
    for name, scores in (("intersection", [1, 1, 1, 0]), ("complement", [0, 0, 1, 0]), ("random", [0, 1, 1, 0])):
        rows += _prediction_rows("mdqa", "symbolic", f"patch_{name}", scores)
    path = tmp_path / "patching.parquet"
    write_table(pd.DataFrame(rows), path, "intervention_predictions")
    summary = patching_summary(read_predictions([path]), 500, 0.05, seed=1)
    assert list(summary["intervention"]) == ["patch_intersection", "patch_complement", "patch_random"]
    text = table3_markdown(summary, 0.05, title="Table 3")
    assert "| MDQA | Symbolic / Symbolic | 0.250 | 0.750 (+0.500" in text


def test_summary_rejects_mismatched_examples(tmp_path):
    from synthctx.causal.summary import knockout_summary, read_predictions

    rows = _prediction_rows("mdqa", "real_full", "none", [1, 1])
    rows += _prediction_rows("mdqa", "real_full", "knockout_topk", [1])
    rows += _prediction_rows("mdqa", "real_full", "knockout_random", [1, 0])
    path = tmp_path / "k.parquet"
    write_table(pd.DataFrame(rows), path, "intervention_predictions")
    with pytest.raises(ArtifactError, match="different examples"):
        knockout_summary(read_predictions([path]), 10, 0.05, seed=1)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, smollm_tokenizer):
    """A tiny random Llama with the embedded model's tokenizer, two adapters, eval data, head scores."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from synthctx.data.examples import make_example, write_examples

    root = tmp_path_factory.mktemp("tiny_study")
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=len(smollm_tokenizer),
                      max_position_embeddings=1024, eos_token_id=smollm_tokenizer.eos_token_id)
    base = LlamaForCausalLM(cfg).eval()
    model_dir = root / "model"
    base.save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)

    from peft import LoraConfig, get_peft_model

    adapters = {}
    for i, name in enumerate(["real_full", "high_low"]):
        torch.manual_seed(100 + i)
        lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                                               target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        adapters[name] = root / "adapters" / name
        lora.save_pretrained(adapters[name])

    examples = []
    for i, (city, country) in enumerate(CITIES):
        text = f"{city} is the capital of {country}."
        docs = [{"doc_id": "d0", "title": "Geography", "text": "Rivers flow to the sea."},
                {"doc_id": "d1", "title": country, "text": text}]
        examples.append(make_example(
            example_id=f"ex{i}", task="mdqa", condition="real", split="eval", documents=docs,
            question=f"What is the capital of {country}?", answers=[city], target=city, gold_doc_ids=["d1"],
            needles=[{"doc_id": "d1", "start": 0, "end": len(city), "kind": "answer"}]))
    eval_path = root / "eval.parquet"
    write_examples(examples, str(eval_path))

    scores = {}
    for name, seed in (("real_full", 1), ("high_low", 2)):
        rng = np.random.default_rng(seed)
        frame = _scores({(l, h): rng.random() for l in range(2) for h in range(4)}, condition=name, layers=2, heads=4)
        scores[name] = root / f"{name}.parquet"
        # as the heads job records them: the examples it decoded (the ranking part)
        write_table(frame, scores[name], "head_scores",
                    {"predictions": [{"example_id": f"ex{i}", "prediction": ""} for i in range(RANKING)]})
    return {"model_dir": str(model_dir), "adapters": adapters, "eval": str(eval_path), "scores": scores, "root": root}


# Eval split of the tiny study: the first RANKING examples ranked the heads, the rest are for the causal tests.
CITIES = [("Paris", "France"), ("Lima", "Peru"), ("Oslo", "Norway"), ("Rome", "Italy"), ("Cairo", "Egypt")]
RANKING = 2
SETTINGS = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 1024}


def knockout_settings(**values):
    """KnockoutSettings of the tiny study: single-example decoding, retrieval heads, positive ones only."""
    from synthctx.causal.settings import KnockoutSettings

    return KnockoutSettings(**{"batch_size": 1, "head_kind": "retrieval", "positive_heads_only": True, **values})


@pytest.mark.parametrize("operator", ["uniform", "mean"])
def test_run_knockout_end_to_end(tiny_study, operator):
    from synthctx.causal.experiments import run_knockout

    out = tiny_study["root"] / f"knockout_{operator}.parquet"
    kwargs = dict(model_dir=tiny_study["model_dir"], settings=SETTINGS, adapter_dir=str(tiny_study["adapters"]["high_low"]),
                  eval_path=tiny_study["eval"], head_scores_path=str(tiny_study["scores"]["high_low"]),
                  out_path=str(out), model_name="tiny", task="mdqa", condition="high_low",
                  knockout=knockout_settings(top_k=2, random_exclude_top=4, random_draws=2, operator=operator,
                                             ranking_examples=RANKING, examples=2, max_new_tokens=3, seed=9))
    frame = run_knockout(**kwargs)
    table = read_table(out, "intervention_predictions")
    assert len(table) == 2 * (1 + 1 + 2)
    # the two examples after the ranking part, none of those that ranked the heads
    assert set(table["example_id"]) == {"ex2", "ex3"}
    meta = read_metadata(out)
    assert meta["ranking_example_ids"] == ["ex0", "ex1"] and meta["example_ids"] == ["ex2", "ex3"]
    assert (meta["ranking_examples"], meta["examples"]) == (2, 2)
    assert set(table["intervention"]) == {"none", "knockout_topk", "knockout_random"}
    top = json.loads(table.loc[table.intervention == "knockout_topk", "heads"].iloc[0])
    assert len(top) == 2
    ranking = ranked_heads(read_table(tiny_study["scores"]["high_low"], "head_scores"))
    for heads in table.loc[table.intervention == "knockout_random", "heads"]:
        assert not {tuple(h) for h in json.loads(heads)} & set(ranking[:4])
    # same seed => identical content
    again = run_knockout(**{**kwargs, "out_path": str(tiny_study["root"] / "again.parquet")})
    pd.testing.assert_frame_equal(frame, again)


def test_run_patching_end_to_end(tiny_study):
    from synthctx.causal.experiments import run_patching

    out = tiny_study["root"] / "patching.parquet"
    run_patching(model_dir=tiny_study["model_dir"], settings=SETTINGS,
                 donor_adapter=str(tiny_study["adapters"]["real_full"]),
                 recipient_adapter=str(tiny_study["adapters"]["high_low"]), eval_path=tiny_study["eval"],
                 donor_scores_path=str(tiny_study["scores"]["real_full"]),
                 recipient_scores_path=str(tiny_study["scores"]["high_low"]), out_path=str(out), model_name="tiny",
                 task="mdqa", recipient="high_low",
                 patching=PatchingSettings(top_k=3, ranking_examples=RANKING, examples=3, max_new_tokens=3, seed=9,
                                           batch_size=1, head_kind="retrieval", positive_heads_only=True))
    table = read_table(out, "intervention_predictions")
    assert set(table["example_id"]) == {"ex2", "ex3", "ex4"}
    meta = read_metadata(out)
    assert meta["ranking_example_ids"] == ["ex0", "ex1"] and meta["example_ids"] == ["ex2", "ex3", "ex4"]
    assert list(dict.fromkeys(table["intervention"])) == ["none", "patch_intersection", "patch_complement", "patch_random"]
    assert len(table) == 4 * 3
    sizes = {i: len(json.loads(h)) for i, h in zip(table["intervention"], table["heads"])}
    assert sizes["patch_intersection"] + sizes["patch_complement"] == 3
    assert sizes["patch_random"] == sizes["patch_intersection"]


def test_positive_ranking_drops_heads_that_never_retrieved():
    from synthctx.causal.head_sets import positive_ranking

    table = _scores({(l, h): (1.0 if (l, h) == (2, 1) else 0.0) for (l, h) in ALL_HEADS})
    ranking = ranked_heads(table)
    assert positive_ranking(table, ranking) == [(2, 1)]


def _eval_records(n, task="mdqa"):
    return [{"example_id": f"e{i}", "task": task} for i in range(n)]


def test_causal_split_takes_the_examples_after_the_ranking_part():
    from synthctx.causal.eval_split import causal_split

    ranking, causal = causal_split(_eval_records(6), 3, 2, task="mdqa", source="eval.parquet")
    assert [e["example_id"] for e in ranking] == ["e0", "e1", "e2"]
    assert [e["example_id"] for e in causal] == ["e3", "e4"]
    # the heads job decodes the first heads.examples of the file: exactly the ranking part
    assert not {e["example_id"] for e in ranking} & {e["example_id"] for e in causal}
    assert [e["example_id"] for e in causal_split(_eval_records(5), 3, 2, task="mdqa", source="x")[1]] == ["e3", "e4"]


def test_causal_split_refuses_a_split_too_small_for_both_parts():
    from synthctx.causal.eval_split import causal_split

    with pytest.raises(ValueError, match=r"eval.parquet holds = 4 eval examples .*heads.examples.* = 3.*"
                                         r"causal.examples.* = 2\): 3 \+ 2 = 5 > 4"):
        causal_split(_eval_records(4), 3, 2, task="mdqa", source="eval.parquet")
    records = _eval_records(6)
    records[4] = {"example_id": "e4", "task": "musique"}
    with pytest.raises(ValueError, match=r"eval.parquet: record 4 \('e4'\): field task is 'musique'"):
        causal_split(records, 3, 2, task="mdqa", source="eval.parquet")
    with pytest.raises(ValueError, match=r"\['e1'\] occur in both"):
        causal_split([{"example_id": i, "task": "mdqa"} for i in ("e0", "e1", "e1")], 2, 1, task="mdqa", source="x")


def test_task_examples_override_one_task():
    from synthctx.causal.eval_split import task_examples

    section = {"examples": 60, "task_examples": {"musique": 20}}
    assert task_examples(section, "musique") == 20 and task_examples(section, "mdqa") == 60
    assert task_examples({"examples": 8, "task_examples": {}}, "summhay") == 8
    assert task_examples({"examples": 8}, "summhay") == 8


def test_knockout_refuses_heads_ranked_on_its_examples(tiny_study, tmp_path):
    """Head scores whose detection decoded a causal example are refused; nothing is written."""
    from synthctx.causal.experiments import run_knockout

    frame = read_table(tiny_study["scores"]["high_low"], "head_scores")
    overlapping = tmp_path / "heads.parquet"
    write_table(frame, overlapping, "head_scores", {"predictions": [{"example_id": f"ex{i}"} for i in range(4)]})
    out = tmp_path / "knockout.parquet"
    kwargs = dict(model_dir=tiny_study["model_dir"], settings=SETTINGS, adapter_dir=None, eval_path=tiny_study["eval"],
                  head_scores_path=str(overlapping), out_path=str(out), model_name="tiny", task="mdqa",
                  condition="nonft", knockout=knockout_settings(top_k=2, random_exclude_top=4, random_draws=1,
                                                                operator="uniform", ranking_examples=RANKING,
                                                                examples=2, max_new_tokens=2, seed=9))
    with pytest.raises(ValueError, match=r"ranked on example ids \['ex2', 'ex3'\]"):
        run_knockout(**kwargs)
    # the built split holds 5 examples: 2 ranking + 4 causal do not fit
    with pytest.raises(ValueError, match=r"2 \+ 4 = 6 > 5"):
        run_knockout(**{**kwargs, "head_scores_path": str(tiny_study["scores"]["high_low"]),
                        "knockout": replace(kwargs["knockout"], examples=4)})
    assert not out.exists()


@pytest.mark.parametrize("name", [None, "config/gpu-small.yaml", "config/paper.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_fit_ranking_and_causal_parts(name):
    """Every shipped config's ranking + causal parts fit its configured eval split of every task."""
    import yaml
    from snakemake.utils import update_config

    from conftest import REPO
    from synthctx.causal.eval_split import split_error, task_examples

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if name:
        update_config(config, yaml.safe_load((REPO / name).read_text()))
    for task in ("mdqa", "musique", "summhay"):
        n = config["data"][task].get("eval_examples", config["data"]["eval_examples"])
        assert split_error(task, n, task_examples(config["heads"], task), task_examples(config["causal"], task),
                           "eval") is None, (name, task)


def test_gpu_small_summhay_parts_fit_one_held_out_haystack(shared_data):
    """gpu-small holds out one SummHay haystack: one eval example per insight, so its ranking and
    causal parts must fit the smallest local haystack (the configured 100 would not be reached)."""
    import yaml
    from snakemake.utils import update_config

    from conftest import REPO
    from synthctx.causal.eval_split import task_examples

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/gpu-small.yaml").read_text()))
    assert config["data"]["summhay"]["eval_haystacks"] == 1
    insights = [sum(len(s["insights"]) for s in json.loads((shared_data / f).read_text())["subtopics"])
                for f in config["raw_data"]["summhay"]["files"]]
    assert task_examples(config["heads"], "summhay") + task_examples(config["causal"], "summhay") <= min(insights)
