"""One real end-to-end run of the whole workflow (`snakemake all`) on a tiny config.

Every stage runs for real on the project's own raw-data fixtures (tests/fixtures/raw, in the
datasets' original formats) and the embedded SmolLM2-135M-Instruct: data for all three tasks,
templated and symbolic synthetic variants (the LLM pools and both backends have their own
tests in test_synth_*), LoRA training, Table 1,
retrieval heads and NIAH, Figure 3 / Table 2 / heatmaps, knockout and patching, the claims page
and the HTML report. Assertions check values, not only that files exist; a second run must find nothing to do.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slurm.workflow import link_model  # tests/ is on sys.path (rootdir conftest)

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"

OVERLAY = {
    "study": {
        # every output under results/tiny/ (study.name)
        "name": "tiny",
        "models": [MODEL],
        "tasks": ["mdqa", "musique", "summhay"],
        "synthetic_conditions": ["low_low", "symbolic"],
        "real_conditions": ["real_full", "real_limited"],
        "seed": 7,
    },
    "raw_data": {
        "local_dir": str(REPO / "tests" / "fixtures" / "raw"),
        "mdqa": {"documents_file": "mdqa/nq-open-small.jsonl"},
        "musique": {"files": ["musique/musique_ans_small.jsonl", "musique/musique_ans_small_array.json"]},
        "summhay": {"files": ["summhay/topic_small1.json", "summhay/topic_small2.json", "summhay/topic_small3.json"]},
    },
}


def _tiny_config() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    # a deep copy: other tests build their configs from this one and change them
    config.update(copy.deepcopy(OVERLAY))
    config["models"][MODEL]["context_tokens"] = 512
    # Eval: 2 examples rank the heads, the next 2 run the causal tests (disjoint parts); SummHay's
    # held-out fixture haystack has 2 insights, so it ranks on 1 and tests on 1.
    config["data"].update(eval_examples=4, max_train_examples=2, limited_fraction=0.5)
    # MuSiQue's six fixture records: 2 eval (1 ranks, 1 tests), the rest for training.
    config["data"]["musique"].update(hops=[2, 3, 4], num_paragraphs=3, eval_examples=2)
    config["data"]["summhay"].update(num_documents=3, excerpt_sentences=2)
    config["generation"].update(backend="hf", max_new_tokens=64, pool_size=12, examples_per_variant=2)
    config["train"].update(epochs=1, gradient_accumulation=1, checkpoint_every=1)
    config["evaluate"].update(backend="hf", bootstrap_resamples=200, max_new_tokens={"mdqa": 12, "musique": 12, "summhay": 12})
    # Grouped decoding (the GPU configs' path) for heads and the causal jobs; 1 is unit-tested.
    config["heads"].update(examples=2, max_new_tokens=6, batch_size=2, task_examples={"summhay": 1, "musique": 1},
                           niah={"lengths": [128], "depths": [0.5], "needles_per_set": 1})
    config["causal"].update(examples=2, random_draws=1, batch_size=2, knockout_conditions=["real_full"],
                            task_examples={"summhay": 1, "musique": 1},
                            patch_conditions=["symbolic"])
    return config


# The all-module LoRA recipe (config training_recipes) for Real (Full) only: one more training,
# evaluation and head job per task. Only in this test's config, not in _tiny_config, which other
# tests build on.
RECIPE = {"allmod": {"label": "all modules", "conditions": ["real_full"],
                     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}}
MLP = {"gate_proj", "up_proj", "down_proj"}


def _e2e_config() -> dict:
    config = _tiny_config()
    config["training_recipes"] = copy.deepcopy(RECIPE)
    return config


@pytest.mark.slow
def test_whole_workflow_runs_end_to_end_on_a_tiny_config(tmp_path, smollm_dir):
    from synthctx.schema import read_table

    work = tmp_path / "study"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "report", "envs", "schemas", "profiles"):
        os.symlink(REPO / name, work / name)
    link_model(Path(smollm_dir), work / "resources" / "models" / MODEL)
    (work / "config.yaml").write_text(yaml.safe_dump(_e2e_config()))
    # The Snakefile loads config.yaml from the working folder: the tiny config written above.
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2"]
    env = {**os.environ, "SYNTHCTX_VLLM_PYTHON": "/nonexistent"}  # the tiny study uses HF only

    run = subprocess.run([*snakemake, "all"], cwd=work, capture_output=True, text=True, timeout=3000, env=env)
    assert run.returncode == 0, run.stderr[-6000:]

    # Every output lies in the study's folder, results/<study.name>/; only shared jobs (prepared
    # models, downloads; none here) log outside it.
    assert sorted(p.name for p in (work / "results").iterdir()) == [OVERLAY["study"]["name"]]
    shared_logs = {"prepare_model", "download_raw"}
    assert not (work / "logs").exists() or {p.name for p in (work / "logs").iterdir()} <= shared_logs
    results = work / "results" / OVERLAY["study"]["name"]
    table1 = read_table(results / "tables" / MODEL / "table1.parquet", "table1")
    from synthctx.data.examples import read_examples
    from synthctx.evaluate.baselines import cite_all_prediction
    from synthctx.evaluate.metrics import score_prediction

    # closed_book: config.yaml's study.evaluation_conditions default (the overlay's study section
    # omits it); real_full__allmod: the training recipe (RECIPE)
    expected = {"real_full", "real_limited", "low_low", "symbolic", "nonft", "closed_book", "real_full__allmod"}
    eval_sizes = {}
    for task in ("mdqa", "musique", "summhay"):
        rows = table1[table1["task"] == task].set_index("condition")
        assert set(rows.index) == expected | {"trivial"}, task
        assert rows.loc["real_full__allmod", "label"] == "Real Data (Full), all modules"
        assert rows.loc["real_full__allmod", "train_examples"] == 2  # Real (Full)'s own training file
        eval_sizes[task] = int(rows["n"].iloc[0])
        assert rows["score"].between(0, 1).all() and (rows["n"] == eval_sizes[task]).all() and eval_sizes[task] >= 2
        assert rows["is_best_synthetic"].sum() == 1
        # Training-set sizes come from the training curves: Real (Full) 2, Real (Limited) 1, variants 2.
        assert rows.loc["real_full", "train_examples"] == 2 and rows.loc["real_limited", "train_examples"] == 1
        assert rows.loc["symbolic", "train_examples"] == 2
        assert rows["train_examples"].isna()[["nonft", "closed_book"]].all()
        assert rows.loc[["real_full", "symbolic"], "loss_fell"].notna().all()
        assert 1 <= rows.loc["real_full", "distinct_predictions"] <= eval_sizes[task]
    # The trivial SummHay row is citing every document: its score is that prediction's mean F1.
    summhay_eval = read_examples(str(results / "data" / MODEL / "summhay" / "eval.parquet"))
    cite_all = sum(score_prediction("summhay", cite_all_prediction(ex), ex)[0] for ex in summhay_eval) / len(summhay_eval)
    trivial = table1[(table1["task"] == "summhay") & (table1["condition"] == "trivial")]["score"].iloc[0]
    assert abs(trivial - cite_all) < 1e-9 and cite_all > 0
    assert "## Positive control" in (results / "tables" / MODEL / "table1.md").read_text()
    # The recipe's adapters adapt the MLP projections too, Real (Full)'s the attention ones only.
    import json

    for task in ("mdqa", "musique", "summhay"):
        modules = {c: set(json.loads((results / "adapters" / MODEL / task / c / "adapter_config.json").read_text())
                          ["target_modules"]) for c in ("real_full", "real_full__allmod")}
        assert modules["real_full__allmod"] == set(RECIPE["allmod"]["target_modules"]), task
        assert not MLP & modules["real_full"] and modules["real_full"] == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (results / "figures" / MODEL / "training_curves.png").stat().st_size > 5000
    for task in ("mdqa", "musique", "summhay"):
        preds = read_table(results / "eval" / MODEL / task / "predictions.parquet", "predictions")
        assert len(preds) == eval_sizes[task] * len(expected)
        # the closed-book prompts are the question without the documents: shorter for every example
        prompt_tokens = preds.pivot(index="example_id", columns="condition", values="prompt_tokens")
        assert (prompt_tokens["closed_book"] < prompt_tokens["nonft"]).all()
        assert (preds["condition"] == "real_full__allmod").sum() == eval_sizes[task]
        assert preds.loc[preds["condition"] == "real_full__allmod", "score"].between(0, 1).all()
        for condition in ("real_full", "real_full__allmod"):
            heads = read_table(results / "heads" / MODEL / task / f"{condition}.parquet", "head_scores")
            assert len(heads[heads["head_kind"] == "retrieval"]) == 30 * 9, (task, condition)
            assert (heads["score"] >= 0).all()
    summhay_heads = read_table(results / "heads" / MODEL / "summhay" / "real_full.parquet", "head_scores")
    assert set(summhay_heads["head_kind"]) == {"retrieval", "insight"}

    similarity = read_table(results / "analysis" / MODEL / "similarity.parquet", "head_similarity")
    assert set(similarity["condition"]) >= {"low_low", "symbolic"}
    assert similarity["cosine"].dropna().between(-1, 1).all()
    correlations = read_table(results / "analysis" / MODEL / "correlations.parquet", "correlations")
    # At most two synthetic conditions have a finite similarity (a model whose heads never
    # retrieved has no cosine); Spearman needs three points, so it is reported as undefined.
    assert set(correlations["task"]) == {"mdqa", "musique", "summhay"}
    assert (correlations["n_conditions"] <= 2).all() and correlations["spearman_rho"].isna().all()
    table2 = read_table(results / "tables" / MODEL / "table2.parquet", "cross_task")
    diagonal = table2[table2["row"] == table2["column"]]["cosine"].dropna()
    assert ((diagonal - 1.0).abs() < 1e-9).all()
    knockout = read_table(results / "causal" / MODEL / "knockout_summary.parquet", "intervention_summary")
    assert set(knockout["task"]) == {"mdqa", "musique", "summhay"}
    table3 = read_table(results / "tables" / MODEL / "table3.parquet", "intervention_summary")
    assert set(table3["intervention"]) == {"patch_intersection", "patch_complement", "patch_random"}
    # Every decoded example's head scores average (over the counted ones) to the head_scores file.
    import numpy as np

    per_example = read_table(results / "heads" / MODEL / "mdqa" / "per_example" / "real_full.parquet",
                             "head_example_scores")
    mdqa_heads = read_table(results / "heads" / MODEL / "mdqa" / "real_full.parquet", "head_scores")
    counted = per_example[per_example["counted"] & (per_example["head_kind"] == "retrieval")]
    assert len(per_example) == 2 and len(counted) == int(mdqa_heads["n_examples"].iloc[0])
    if len(counted):
        mean = np.stack([np.asarray(v) for v in counted["scores"]]).mean(0)
        expected_scores = mdqa_heads[mdqa_heads["head_kind"] == "retrieval"].sort_values(["layer", "head"])["score"]
        np.testing.assert_allclose(mean, expected_scores.to_numpy())
    # The claims page: one row per claim and task (and condition or measure), valid verdicts.
    from synthctx.analysis.claims import CANNOT, CLAIMS, VERDICTS

    claims = read_table(results / "reports" / MODEL / "claims.parquet", "claims")
    recipe_rows = claims[claims["claim_id"].str.endswith(" [all modules]")]
    per_claim = claims.drop(recipe_rows.index)["claim_id"].value_counts().to_dict()
    # 3 tasks; 2 synthetic conditions; knockout of real_full, patching into symbolic; Table 2's 4 rows
    assert per_claim == {"C1": 3, "C2": 3, "C3": 6, "C4": 6, "C5": 3, "C6": 3, "C7": 4, "C8": 1, "CB": 3}
    # The claims again under the recipe: its Real (Full) alone (no synthetic condition, nothing
    # knocked out or patched under it), so C1/C2/C5/C6 [all modules] say why they cannot evaluate.
    recipe_ids = list(dict.fromkeys(recipe_rows["claim_id"]))
    assert {f"{c} [all modules]" for c in ("C1", "C2", "C5", "C6")} <= set(recipe_ids)
    assert recipe_rows["claim"].str.endswith("(training recipe: all modules)").all()
    by_id = recipe_rows.set_index("claim_id")
    assert "causal.knockout_conditions" in by_id.loc["C5 [all modules]", "reason"]
    assert "causal.patch_conditions" in by_id.loc["C6 [all modules]", "reason"]
    assert set(claims["verdict"]) <= set(VERDICTS)
    assert (claims.loc[claims["verdict"] == CANNOT, "reason"].str.len() > 0).all()
    cb = claims[claims["claim_id"] == "CB"].set_index("task")
    assert list(cb.index) == ["mdqa", "musique", "summhay"] and cb["measured"].str.startswith("closed book ").all()
    assert cb.loc["summhay", "verdict"] == CANNOT and cb.loc["summhay", "reason"].startswith("not applicable: ")
    for row in claims[(claims["claim_id"] == "C1") & claims["statistic"].notna()].itertuples(index=False):
        scores = table1[table1["task"] == row.task].set_index("condition")["score"]
        best = table1[(table1["task"] == row.task) & table1["is_best_synthetic"]]["score"].iloc[0]
        assert abs(row.statistic - (scores["real_full"] - best)) < 1e-9
    page = (results / "reports" / MODEL / "claims.md").read_text()
    assert all(f"| {c} | {text} |" in page for c, text in CLAIMS.items())
    assert page.count("\n| C") == len(claims) + len(CLAIMS) + len(recipe_ids)
    assert "| C1 [all modules] | " in page
    for figure in ("table1.png", "figure3.png", "figure4.png", "heatmap_mdqa.png"):
        assert (results / "figures" / MODEL / figure).stat().st_size > 5_000, figure
    assert "| Non-FT |" in (results / "tables" / MODEL / "table1.md").read_text()
    assert "| Closed book |" in (results / "tables" / MODEL / "table1.md").read_text()
    assert "| Real Data (Full), all modules |" in (results / "tables" / MODEL / "table1.md").read_text()

    again = subprocess.run([*snakemake, "-n", "all"], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = subprocess.run([*snakemake, "--report", "report.html"], cwd=work, capture_output=True, text=True,
                            timeout=600, env=env)
    assert report.returncode == 0, report.stderr[-4000:]
    assert (work / "report.html").stat().st_size > 50_000

    # The report as a reader sees it: opened in a real headless Chromium, every figure and table
    # listed under its Results category, every image displayed with pixels, every table's
    # embedded text equal to the file the workflow wrote. CI installs Chromium (.ci/run) and
    # sets SYNTHCTX_REQUIRE_BROWSER, so there a missing browser fails instead of skipping.
    from browser import Browser, chromium_binary, report_entries_in_browser

    binary = chromium_binary()
    if binary is None:
        if os.environ.get("SYNTHCTX_REQUIRE_BROWSER"):
            pytest.fail("SYNTHCTX_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium here (apt-get install chromium): the report was built but not opened")
    tasks = OVERLAY["study"]["tasks"]
    study = f"results/{OVERLAY['study']['name']}"
    expected = {f"{study}/figures/{MODEL}/{name}" for name in
                ("table1.png", "training_curves.png", "figure3.png", "figure4.png",
                 *(f"heatmap_{task}.png" for task in tasks))}
    expected |= {f"{study}/tables/{MODEL}/{name}" for name in ("niah_heads.md", "table2.md", "table3.md")}
    expected.add(f"{study}/reports/{MODEL}/claims.md")
    # the scorecard (its probes are the study's jobs at this size) and its comparison with Table 1
    expected |= {f"{study}/scorecard/{MODEL}/{task}/scorecard.md" for task in tasks}
    expected |= {f"{study}/figures/{MODEL}/scorecard{kind}_{task}.png" for task in tasks for kind in ("", "_stability")}
    expected.add(f"{study}/scorecard/{MODEL}/vs_study.md")
    with Browser(binary) as browser:
        entries = report_entries_in_browser(browser, work / "report.html")
        assert browser.exceptions == [], browser.exceptions
    assert set(entries) == expected
    for path, entry in entries.items():
        assert entry["listed"], f"{path} is embedded but not listed under its category {entry['category']!r}"
        if path.endswith(".png"):
            assert entry["image_width"] > 100, f"{path}: the browser displayed no image ({entry})"
        else:
            assert entry["text"] == (work / path).read_text(), f"{path}: the report's copy differs from the file"
