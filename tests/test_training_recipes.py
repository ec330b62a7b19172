"""Extra training recipes (config training_recipes, issue 17 section 4): LoRA on every linear
layer beside the attention-only recipe, as derived conditions "<base>__<recipe>" that go through
training, Table 1, similarity and the claims with their own labels."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from synthctx import study
from synthctx.study import base_condition, recipe_condition, recipe_reference, recipe_train_settings

from conftest import REPO, tiny_llama
from test_causal_pipeline import tiny_study  # noqa: F401  (a fixture: tiny random model, adapters, eval data)
from test_configs import SCHEMA, merged

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MLP = {"gate_proj", "up_proj", "down_proj"}


def with_recipe(conditions=("real_full", "high_high"), name="allmod", label="all modules") -> dict:
    config = copy.deepcopy(merged("default"))
    config["training_recipes"] = {name: {"label": label, "target_modules": list(ALL_LINEAR),
                                         "conditions": list(conditions)}}
    return config


# ---------------------------------------------------------------- registry and config


def test_recipe_conditions_are_registered_with_kind_label_and_data_source():
    config = with_recipe(["real_full", "high_high", "low_low"])
    validate(copy.deepcopy(config), SCHEMA)
    study.check_config(config)
    trained = study.trained_conditions(config, "mdqa")
    base = list(config["study"]["real_conditions"]) + list(config["study"]["synthetic_conditions"])
    assert trained == base + ["real_full__allmod", "high_high__allmod", "low_low__allmod"]
    assert study.evaluated_conditions(config, "mdqa")[-1] == "nonft"
    full, high = study.get_condition("real_full__allmod"), study.get_condition("high_high__allmod")
    assert (full.kind, full.base, full.recipe) == ("real", "real_full", "allmod")
    assert (high.kind, high.axes) == ("synthetic", ("high", "high"))
    assert study.condition_label("real_full__allmod") == "Real Data (Full), all modules"
    assert study.condition_label("low_low__allmod", "summhay") == "Simplified / Low, all modules"
    # the data source: the base condition's training file; the reference: the recipe's Real (Full)
    assert base_condition("high_high__allmod") == "high_high" and base_condition("high_high") == "high_high"
    assert recipe_reference("low_low__allmod") == "real_full__allmod" and recipe_reference("low_low") == "real_full"
    # the training settings differ in the target modules only
    main, derived = recipe_train_settings(config, "high_high"), recipe_train_settings(config, "high_high__allmod")
    assert main == config["train"]
    assert derived["lora"]["target_modules"] == ALL_LINEAR
    assert {k: v for k, v in derived.items() if k != "lora"} == {k: v for k, v in main.items() if k != "lora"}
    assert {k: v for k, v in derived["lora"].items() if k != "target_modules"} == \
        {k: v for k, v in main["lora"].items() if k != "target_modules"}


def test_job_labels_register_recipe_conditions_in_a_job_process():
    config = with_recipe(["real_full", "myqa"])
    config["datasets"] = {"myqa": {"label": "My QA set", "files": {"mdqa": "data/my.jsonl"}}}
    study.check_config(config)
    labels = study.job_labels(config)
    assert labels["myqa"] == "My QA set"
    assert labels["myqa__allmod"] == {"base": "myqa", "recipe": "allmod", "label": "all modules"}
    assert "myqa__allmod" in study.trained_conditions(config, "mdqa")
    assert "myqa__allmod" not in study.trained_conditions(config, "musique")  # the dataset covers mdqa only
    study.register_user_labels(labels)
    assert study.condition_label("myqa__allmod", "mdqa") == "My QA set, all modules"
    assert study.get_condition("myqa__allmod").kind == "user"


@pytest.mark.parametrize("conditions, words", [
    (["real_full", "nonft"], "'nonft' is not a trained condition"),
    (["closed_book"], "'closed_book' is not a trained condition"),
    (["hotpot"], "'hotpot' is not a trained condition"),
])
def test_check_config_refuses_unknown_recipe_conditions(conditions, words):
    config = with_recipe(conditions)
    with pytest.raises(ValueError, match=re.escape(words)) as err:
        study.check_config(config)
    assert "training_recipes.allmod.conditions" in str(err.value)


def test_recipe_not_in_the_study_is_refused():
    config = with_recipe(["real_full"])
    config["study"]["real_conditions"] = ["real_limited"]
    with pytest.raises(ValueError, match="training_recipes.allmod.conditions: 'real_full' is not a trained"):
        study.check_config(config)


def test_user_dataset_name_cannot_clash_with_a_recipe_condition():
    config = with_recipe(["real_full"])
    config["datasets"] = {"real_full__allmod": {"label": "clash", "files": {"mdqa": "data/x.jsonl"}}}
    with pytest.raises(Exception, match="real_full__allmod"):
        validate(copy.deepcopy(config), SCHEMA)  # the schema refuses "__" in a dataset name
    with pytest.raises(ValueError, match="datasets.real_full__allmod: '__' joins"):
        study.check_config(config)  # and so does the registry, for a config the schema did not see


@pytest.mark.parametrize("name", ["all_mod", "AllMod"])
def test_schema_refuses_a_recipe_name_that_would_not_split(name):
    config = with_recipe(["real_full"], name=name)
    with pytest.raises(Exception, match=name):
        validate(config, SCHEMA)


def test_patching_a_recipe_condition_needs_the_recipes_own_real_full():
    """Knockout and patching of recipe conditions: the patching donor of "<synthetic>__<recipe>"
    is the same recipe's Real (Full), so a recipe that does not train real_full is refused at
    config time, naming the keys; Real (Full) itself is no recipient."""
    from synthctx.config_checks import causal_conditions

    config = with_recipe(["real_full", "high_high"])
    study.check_config(config)
    config["causal"]["knockout_conditions"] = ["real_full", "real_full__allmod"]
    config["causal"]["patch_conditions"] = ["high_high", "high_high__allmod"]
    assert causal_conditions(config) == (["real_full", "real_full__allmod"], ["high_high", "high_high__allmod"])
    assert recipe_reference("high_high__allmod") == "real_full__allmod" and recipe_reference("high_high") == "real_full"
    config["causal"]["patch_conditions"] = ["real_full__allmod"]
    with pytest.raises(ValueError, match=r"causal\.patch_conditions: \['real_full__allmod'\] are not synthetic"):
        causal_conditions(config)
    config["causal"]["patch_conditions"] = ["low_low__allmod"]  # not a condition of the recipe
    with pytest.raises(ValueError, match="causal.patch_conditions"):
        causal_conditions(config)

    without = with_recipe(["high_high"])
    study.check_config(without)
    without["causal"]["patch_conditions"] = ["high_high__allmod"]
    with pytest.raises(ValueError, match=r"causal\.patch_conditions: 'high_high__allmod'.*'real_full__allmod'.*"
                                         r"training_recipes\.allmod\.conditions"):
        causal_conditions(without)


def test_shipped_configs_turn_the_recipe_on_where_the_time_goal_allows():
    from synthctx.config_checks import causal_conditions

    default = merged("default")
    assert default["training_recipes"] == {}
    assert not [c for c in causal_conditions(default)[0] + causal_conditions(default)[1] if "__" in c]
    for name in ("gpu-small", "paper"):
        config = merged(name)
        validate(copy.deepcopy(config), SCHEMA)
        recipe = config["training_recipes"]["allmod"]
        assert set(recipe["target_modules"]) >= MLP | {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert recipe["conditions"] == ["real_full", *config["study"]["synthetic_conditions"]]
        # C5 and C6 under the recipe: its Real (Full) knocked out, the synthetic condition the
        # main recipe patches first patched under the recipe too
        knockout, patch = causal_conditions(config)
        assert [c for c in knockout if "__" in c] == ["real_full__allmod"]
        assert [c for c in patch if "__" in c] == [f"{patch[0]}__allmod"] == ["high_high__allmod"]


# ---------------------------------------------------------------- training


def test_recipe_condition_trains_an_adapter_with_mlp_modules(tmp_path, smollm_tokenizer):
    """The done-when test: the adapter of real_full__allmod adapts the MLP projections (read
    from the adapter config it writes), real_full's only the attention projections; same data."""
    from synthctx.data.examples import write_examples
    from synthctx.train.lora import train_from_files
    from test_train import SPEC, qa_examples

    model_dir = tmp_path / "tiny"
    model = tiny_llama(num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, vocab_size=len(smollm_tokenizer))
    model.config.max_position_embeddings = 2048
    model.save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    data = tmp_path / "real_full.parquet"
    write_examples(qa_examples(2), data)
    config = with_recipe(["real_full"])
    config["train"].update(epochs=1, checkpoint_every=0, cpu_autocast=None)
    study.check_config(config)
    modules = {}
    for condition in ("real_full", "real_full__allmod"):
        out = tmp_path / condition
        train_from_files(train_path=str(data), model_dir=str(model_dir), model_spec=SPEC,
                         train_cfg=recipe_train_settings(config, condition), seed=1, out_dir=str(out),
                         checkpoint_dir=str(tmp_path / "ck" / condition), run_info={"condition": condition})
        modules[condition] = set(json.loads((out / "adapter_config.json").read_text())["target_modules"])
    assert modules["real_full"] == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert modules["real_full__allmod"] == set(ALL_LINEAR)
    assert MLP <= modules["real_full__allmod"] and not MLP & modules["real_full"]


# ---------------------------------------------------------------- Table 1, similarity, claims


def predictions(task: str, means: dict[str, float], n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for condition, mean in means.items():
        for i in range(n):
            rows.append({"model": "m", "task": task, "condition": condition, "example_id": f"{task}-{i}",
                         "prediction": f"{condition} {i}", "score": float(np.clip(mean + rng.normal(0, 0.05), 0, 1))})
    return pd.DataFrame(rows)


MEANS = {"high_high": 0.5, "low_low": 0.3, "real_full": 0.8, "nonft": 0.1,
         "high_high__allmod": 0.35, "low_low__allmod": 0.6, "real_full__allmod": 0.9}


def test_table1_has_recipe_rows_with_their_own_labels_and_best():
    from synthctx.evaluate.table1 import build_table1, table1_markdown

    study.check_config(with_recipe(["real_full", "high_high", "low_low"]))
    recipes = {"mdqa": ["real_full__allmod", "high_high__allmod", "low_low__allmod"]}
    table = build_table1({"mdqa": predictions("mdqa", MEANS)}, "m", ["high_high", "low_low"], ["real_full"], 200,
                         0.05, 1, recipes=recipes)
    assert list(table["condition"]) == ["high_high", "low_low", "real_full", "nonft", "high_high__allmod",
                                        "low_low__allmod", "real_full__allmod"]
    labels = dict(zip(table["condition"], table["label"]))
    assert labels["low_low__allmod"] == "Low / Low, all modules"
    assert labels["real_full__allmod"] == "Real Data (Full), all modules"
    # each recipe has its own best synthetic condition; its conditions are compared with it
    best = set(table.loc[table["is_best_synthetic"], "condition"])
    assert best == {"high_high", "low_low__allmod"}
    row = table.set_index("condition").loc["high_high__allmod"]
    assert row["significantly_worse"] and row["p_vs_best_synthetic"] < 0.05
    text = table1_markdown(table, 0.05, 200)
    assert "| Low / Low, all modules | **" in text and "| Real Data (Full), all modules | 0.9" in text


def test_similarity_reference_of_a_recipe_condition_is_its_recipes_real_full():
    from synthctx.analysis import similarity as sim

    def heads(vector):
        return pd.DataFrame([{"head_kind": "retrieval", "layer": i // 2, "head": i % 2, "score": v}
                             for i, v in enumerate(vector)])

    frames = {"real_full": heads([1, 0, 0, 0]), "high_high": heads([1, 0, 0, 0]),
              "real_full__allmod": heads([0, 0, 0, 1]), "high_high__allmod": heads([0, 0, 0, 1]),
              "nonft": heads([0, 1, 0, 0])}
    groups = sim.reference_groups(frames)
    assert set(groups) == {"real_full", "real_full__allmod"}
    assert set(groups["real_full__allmod"]) == {"real_full__allmod", "high_high__allmod"}
    assert set(groups["real_full"]) == {"real_full", "high_high", "nonft"}
    rows = [r for ref, group in groups.items() for r in sim.similarity_rows("m", "mdqa", group, {}, 1, 0.5, ref)]
    cosine = {r["condition"]: r["cosine"] for r in rows}
    assert cosine["high_high__allmod"] == pytest.approx(1.0)  # not 0: compared with real_full__allmod
    assert cosine["high_high"] == pytest.approx(1.0) and cosine["nonft"] == pytest.approx(0.0)
    # a recipe without its own Real (Full): compared with the main recipe's
    only = sim.reference_groups({"real_full": frames["real_full"], "low_low__allmod": frames["high_high__allmod"]})
    assert set(only) == {"real_full"}


def test_correlations_are_computed_per_recipe(tmp_path):
    from synthctx.analysis.run import run_correlations
    from synthctx.schema import write_table

    study.check_config(with_recipe(["real_full", "high_high", "low_low", "symbolic"]))
    rows = []
    for condition, cosine, score in [("real_full", 1, 0.9), ("high_high", 0.9, 0.6), ("low_low", 0.5, 0.4),
                                     ("symbolic", 0.1, 0.1), ("real_full__allmod", 1, 0.9),
                                     ("high_high__allmod", 0.1, 0.6), ("low_low__allmod", 0.5, 0.4),
                                     ("symbolic__allmod", 0.9, 0.1)]:
        rows.append({"model": "m", "task": "mdqa", "condition": condition, "head_kind": "retrieval",
                     "cosine": cosine, "recall_topk": cosine, "recall_threshold": cosine, "positive_heads": 3,
                     "score": score})
    write_table(pd.DataFrame(rows), tmp_path / "sim.parquet", "head_similarity", {})
    frame = run_correlations(similarity_path=str(tmp_path / "sim.parquet"),
                             synthetic=["high_high", "low_low", "symbolic", "high_high__allmod", "low_low__allmod",
                                        "symbolic__allmod"], output=str(tmp_path / "c.parquet"),
                             figure=str(tmp_path / "f.png"), seed=1)
    rho = dict(zip(frame["measure"], frame["spearman_rho"]))
    assert rho["cosine"] == pytest.approx(1.0) and rho["cosine__allmod"] == pytest.approx(-1.0)
    assert set(frame["n_conditions"]) == {3}


def recipe_study_outputs(tmp_path):
    """An MDQA study with the recipe for real_full, high_high and low_low: its predictions and
    Table 1 written under tmp_path/results (model "m"). (config, results dir, predictions, recipes)."""
    from synthctx.evaluate.table1 import build_table1
    from synthctx.schema import write_table

    config = with_recipe(["real_full", "high_high", "low_low"])
    study.check_config(config)
    results = tmp_path / "results"
    frame = predictions("mdqa", MEANS, n=30)
    recipes = {"mdqa": ["real_full__allmod", "high_high__allmod", "low_low__allmod"]}
    write_table(frame.drop(columns=["model"]).assign(metrics="{}", prompt_tokens=10, generated_tokens=2),
                results / "eval/m/mdqa/predictions.parquet", "predictions", {})
    write_table(build_table1({"mdqa": frame}, "m", ["high_high", "low_low"], ["real_full"], 200, 0.05, 1,
                             recipes=recipes), results / "tables/m/table1.parquet", "table1", {})
    return config, results, frame, recipes


def test_claims_are_checked_again_under_the_recipe(tmp_path):
    """C1-C6 under the recipe: claim ids "C1 [all modules]", its own Real (Full) and best synthetic."""
    from synthctx.analysis import claims as cl

    config, results, frame, recipes = recipe_study_outputs(tmp_path)
    trained = {"mdqa": ["real_full", "high_high", "low_low", *recipes["mdqa"]]}
    settings = {"model": "m", "tasks": ["mdqa"], "synthetic": ["high_high", "low_low"], "alpha": 0.05,
                "resamples": 200, "seed": 1, "top_k": 2, "min_distinct_fraction": 0.1, "trained": trained,
                "user_labels": study.job_labels(config)}
    paths = cl.study_paths(str(results), "m", ["mdqa"], ["high_high", "low_low"], ["real_full"], ["high_high"],
                           lambda t: trained[t])
    assert ("mdqa", "low_low__allmod") in paths.head_examples
    out, _ = cl.build_claims(paths, settings)
    ids = list(dict.fromkeys(out["claim_id"]))
    for claim in cl.RECIPE_CLAIMS:
        assert f"{claim} [all modules]" in ids
        assert ids.index(f"{claim} [all modules]") == ids.index(claim) + 1  # beside the main recipe's claim
    assert "C7 [all modules]" not in ids and "CB [all modules]" not in ids
    rows = out.set_index("claim_id")
    main, recipe = rows.loc["C1"], rows.loc["C1 [all modules]"]
    assert main["subject"] == "Real Data (Full) vs High / High"
    assert recipe["subject"] == "Real Data (Full), all modules vs Low / Low, all modules"
    assert main["verdict"] == recipe["verdict"] == cl.HOLDS
    assert recipe["statistic"] == pytest.approx(frame[frame.condition == "real_full__allmod"].score.mean()
                                                - frame[frame.condition == "low_low__allmod"].score.mean())
    assert rows.loc["C2 [all modules]", "subject"] == "Low / Low, all modules vs Non-FT"
    assert "training recipe: all modules" in rows.loc["C1 [all modules]", "claim"]
    assert rows.loc["C6 [all modules]", "verdict"] == cl.CANNOT
    assert "causal.patch_conditions" in rows.loc["C6 [all modules]", "reason"]
    text = cl.claims_markdown(out, settings, {}, {}, [])
    assert "| C1 [all modules] | " in text


def intervention_rows(condition: str, means: dict[str, float], heads: dict[str, int], n: int = 30,
                      draws: int = 1, seed: int = 0) -> pd.DataFrame:
    """An intervention_predictions table: per intervention, ``n`` examples around its mean score."""
    rng = np.random.default_rng(seed)
    rows = []
    for intervention, mean in means.items():
        for draw in range(draws if intervention.endswith("random") else 1):
            chosen = json.dumps([[i // 4, i % 4] for i in range(heads.get(intervention, 0))])
            for i in range(n):
                rows.append({"model": "m", "task": "mdqa", "condition": condition, "intervention": intervention,
                             "draw": draw, "heads": chosen, "example_id": f"mdqa-{i}", "prediction": f"{i}",
                             "score": float(np.clip(mean + rng.normal(0, 0.05), 0, 1))})
    return pd.DataFrame(rows)


def test_claims_c5_and_c6_are_evaluated_under_the_recipe_from_its_causal_tables(tmp_path):
    """Knockout of real_full__allmod and patching into high_high__allmod (donor real_full__allmod)
    give "C5 [all modules]" / "C6 [all modules]" verdicts, apart from the main recipe's rows; Table 3
    labels the recipe's row and names its donor."""
    from synthctx.analysis import claims as cl
    from synthctx.causal.summary import patching_summary, table3_markdown
    from synthctx.schema import write_table

    config, results, frame, recipes = recipe_study_outputs(tmp_path)
    knockout = {"none": 0.9, "knockout_topk": 0.2, "knockout_random": 0.85}
    ko_heads = {"knockout_topk": 2, "knockout_random": 2}
    patch = {"none": 0.35, "patch_intersection": 0.8, "patch_complement": 0.5, "patch_random": 0.35}
    patch_heads = {"patch_intersection": 2, "patch_complement": 1, "patch_random": 2}
    tables = {("real_full", "knockout"): intervention_rows("real_full", knockout, ko_heads, draws=2),
              ("real_full__allmod", "knockout"): intervention_rows("real_full__allmod", knockout, ko_heads, draws=2),
              # the main recipe's patching does not hold (no gain): its row must not take the recipe's
              ("high_high", "patching"): intervention_rows("high_high", {**patch, "patch_intersection": 0.35},
                                                           patch_heads),
              ("high_high__allmod", "patching"): intervention_rows("high_high__allmod", patch, patch_heads)}
    for (condition, kind), table in tables.items():
        write_table(table, results / f"causal/m/mdqa/{condition}/{kind}.parquet", "intervention_predictions", {})
    trained = {"mdqa": ["real_full", "high_high", "low_low", *recipes["mdqa"]]}
    settings = {"model": "m", "tasks": ["mdqa"], "synthetic": ["high_high", "low_low"], "alpha": 0.05,
                "resamples": 200, "seed": 1, "top_k": 2, "min_distinct_fraction": 0.1, "trained": trained,
                "user_labels": study.job_labels(config)}
    paths = cl.study_paths(str(results), "m", ["mdqa"], ["high_high", "low_low"], ["real_full", "real_full__allmod"],
                           ["high_high", "high_high__allmod"], lambda t: trained[t])
    out, missing = cl.build_claims(paths, settings)
    assert not [p for p in missing if "/causal/" in p]
    c5, c6 = out[out["claim_id"] == "C5 [all modules]"], out[out["claim_id"] == "C6 [all modules]"]
    assert list(c5["subject"]) == ["Real Data (Full), all modules"] and list(c5["verdict"]) == [cl.HOLDS]
    assert list(c6["subject"]) == ["High / High, all modules"] and list(c6["verdict"]) == [cl.HOLDS]
    assert c6["statistic"].iloc[0] == pytest.approx(
        tables[("high_high__allmod", "patching")].query("intervention == 'patch_intersection'").score.mean()
        - tables[("high_high__allmod", "patching")].query("intervention == 'none'").score.mean())
    main5, main6 = out[out["claim_id"] == "C5"], out[out["claim_id"] == "C6"]
    assert list(main5["subject"]) == ["Real Data (Full)"] and list(main6["subject"]) == ["High / High"]
    assert main6["verdict"].iloc[0] != cl.HOLDS
    ids = list(dict.fromkeys(out["claim_id"]))
    assert ids.index("C6 [all modules]") == ids.index("C6") + 1

    predictions_frame = pd.concat([t.assign(_path=f"{c}.parquet") for (c, kind), t in tables.items()
                                   if kind == "patching"], ignore_index=True)
    text = table3_markdown(patching_summary(predictions_frame, 200, 0.05, 1), 0.05)
    assert "| MDQA | High / High | 0.3" in text and "| MDQA | High / High, all modules | 0.3" in text
    assert "Donor: Real (Full) of the recipient's training recipe (High / High, all modules: Real Data (Full), " \
           "all modules)." in text


# ---------------------------------------------------------------- the workflow plan


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "gpu-small"])
def test_dry_run_plans_recipe_jobs_only_where_configured(name, tmp_path):
    """gpu-small trains, evaluates and head-scores real_full__allmod and every synthetic
    condition's __allmod variant, each reading its base condition's training file; the default
    config plans none."""
    from slurm.workflow import run_snakemake

    config = merged(name)
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    overrides = yaml.safe_load((REPO / "config" / "gpu-small.yaml").read_text()) if name != "default" else {}
    local = (REPO / config["raw_data"]["local_dir"]).resolve() if config["raw_data"]["local_dir"] else None
    if local is not None and not local.is_dir():
        pytest.skip(f"{name} reads the real data samples at {local}, which are not here")
    if local is not None:
        overrides.setdefault("raw_data", {})["local_dir"] = str(local)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(overrides))
    proc = run_snakemake("-n", "-s", str(REPO / "Snakefile"), "--configfile", str(tmp_path / "study.yaml"),
                         cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    trained = re.findall(r"output: results/[\w.-]+/adapters/[^/]+/(\w+)/(\w+)/adapter_model\.safetensors", out)
    heads = set(re.findall(r"output: results/[\w.-]+/heads/[^/]+/(\w+)/(\w+)\.parquet", out))
    recipe_trained = {(t, c) for t, c in trained if "__" in c}
    if name == "default":
        assert trained and not recipe_trained and not any("__" in c for _, c in heads)
        return
    expected = {(t, f"{c}__allmod") for t in config["study"]["tasks"]
                for c in ["real_full", *config["study"]["synthetic_conditions"]]}
    assert recipe_trained == expected
    assert expected <= heads
    # each recipe training reads its base condition's file: no copy of the data
    checked = set()
    for block in re.split(r"\n(?=\[[^\]]*\]\n(?:local)?rule )", out):
        if "rule train_adapter:" not in block:
            continue
        trained_as = re.search(r"output: results/[\w.-]+/adapters/[^/]+/(\w+)/(\w+)/", block)
        data = re.search(r"input: results/[\w.-]+/data/[^/]+/\w+/train/(\w+)\.parquet", block)
        assert data.group(1) == base_condition(trained_as.group(2)), block
        checked.add(trained_as.groups())
    assert expected <= checked
    # the evaluation of a task decodes every adapter, the recipe's included
    assert re.search(r"adapters/[^/]+/mdqa/high_high__allmod/adapter_model\.safetensors", out)
    # causal: the recipe's Real (Full) is knocked out; patching into a recipe condition takes the
    # donor adapter and head scores (its Intersection) from the same recipe's Real (Full), the
    # main recipe's patching from real_full as before
    blocks = re.split(r"\n(?=\[[^\]]*\]\n(?:local)?rule )", out)
    knocked = {m.groups() for b in blocks if "rule knockout:" in b
               for m in [re.search(r"output: results/[\w.-]+/causal/[^/]+/(\w+)/(\w+)/knockout\.parquet", b)]}
    assert {(t, "real_full__allmod") for t in config["study"]["tasks"]} <= knocked
    donors = {}
    for block in blocks:
        if "rule patching:" not in block:
            continue
        task, recipient = re.search(r"output: results/[\w.-]+/causal/[^/]+/(\w+)/(\w+)/patching\.parquet",
                                    block).groups()
        inputs = re.search(r"input: ([^\n]+)", block).group(1).split(", ")
        adapters = {re.search(r"adapters/[^/]+/\w+/(\w+)/", p).group(1) for p in inputs if "/adapters/" in p}
        heads = {re.search(r"heads/[^/]+/\w+/(\w+)\.parquet", p).group(1) for p in inputs if "/heads/" in p}
        assert adapters == heads, block
        donors[(task, recipient)] = sorted(adapters - {recipient})
    for task in config["study"]["tasks"]:
        assert donors[(task, "high_high__allmod")] == ["real_full__allmod"]
        for recipient in config["causal"]["patch_conditions"]:
            if "__" not in recipient:
                assert donors[(task, recipient)] == ["real_full"]
    assert len(donors) == len(config["study"]["tasks"]) * len(config["causal"]["patch_conditions"])


def test_patching_into_a_recipe_condition_records_the_recipes_real_full_as_donor(tmp_path, tiny_study):
    """run_patching with all-module adapters (MLP LoRA merged too): the donor of high_low__allmod is
    real_full__allmod, written in the output's metadata; the main recipe's donor stays real_full."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from synthctx.causal.experiments import run_patching
    from synthctx.causal.settings import PatchingSettings
    from synthctx.schema import read_metadata
    from test_causal_pipeline import RANKING, SETTINGS

    base = AutoModelForCausalLM.from_pretrained(tiny_study["model_dir"])
    adapters = {}
    for i, name in enumerate(["real_full__allmod", "high_low__allmod"]):
        torch.manual_seed(200 + i)
        lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                                               target_modules=list(ALL_LINEAR)))
        adapters[name] = tmp_path / name
        lora.save_pretrained(adapters[name])
    settings = PatchingSettings(top_k=3, ranking_examples=RANKING, examples=2, max_new_tokens=2, seed=9, batch_size=1,
                                head_kind="retrieval", positive_heads_only=True)
    donors = {}
    for recipient, donor in (("high_low__allmod", "real_full__allmod"), ("high_low", "real_full")):
        out = tmp_path / f"{recipient}.parquet"
        recipient_dir = adapters.get(recipient, tiny_study["adapters"].get(recipient))
        donor_dir = adapters.get(donor, tiny_study["adapters"].get(donor))
        table = run_patching(model_dir=tiny_study["model_dir"], settings=SETTINGS, donor_adapter=str(donor_dir),
                             recipient_adapter=str(recipient_dir), eval_path=tiny_study["eval"],
                             donor_scores_path=str(tiny_study["scores"]["real_full"]),
                             recipient_scores_path=str(tiny_study["scores"]["high_low"]), out_path=str(out),
                             model_name="tiny", task="mdqa", recipient=recipient, patching=settings)
        donors[recipient] = read_metadata(out)["donor"]
        assert set(table["condition"]) == {recipient} and len(table) == 4 * 2
    assert donors == {"high_low__allmod": "real_full__allmod", "high_low": "real_full"}
