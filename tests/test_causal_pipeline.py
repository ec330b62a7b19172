"""Head sets, bootstrap, summaries, and both causal experiments end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synthctx.causal.head_sets import knockout_random_heads, patch_head_sets, ranked_heads, top_k_heads
from synthctx.causal.stats import paired_bootstrap
from synthctx.schema import ArtifactError, read_table, write_table

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
    assert "| MDQA | Symbolic | 0.250 | 0.750 (+0.500" in text


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
    for i, (city, country) in enumerate([("Paris", "France"), ("Lima", "Peru"), ("Oslo", "Norway")]):
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
        write_table(frame, scores[name], "head_scores")
    return {"model_dir": str(model_dir), "adapters": adapters, "eval": str(eval_path), "scores": scores, "root": root}


SETTINGS = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 1024}


@pytest.mark.parametrize("operator", ["uniform", "mean"])
def test_run_knockout_end_to_end(tiny_study, operator):
    from synthctx.causal.experiments import run_knockout

    out = tiny_study["root"] / f"knockout_{operator}.parquet"
    kwargs = dict(model_dir=tiny_study["model_dir"], settings=SETTINGS, adapter_dir=str(tiny_study["adapters"]["high_low"]),
                  eval_path=tiny_study["eval"], head_scores_path=str(tiny_study["scores"]["high_low"]),
                  out_path=str(out), model_name="tiny", task="mdqa", condition="high_low", top_k=2,
                  random_exclude_top=4, random_draws=2, operator=operator, examples=2, max_new_tokens=3, seed=9)
    frame = run_knockout(**kwargs)
    table = read_table(out, "intervention_predictions")
    assert len(table) == 2 * (1 + 1 + 2)
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
                 task="mdqa", recipient="high_low", top_k=3, examples=3, max_new_tokens=3, seed=9)
    table = read_table(out, "intervention_predictions")
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
