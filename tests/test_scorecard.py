"""The synthetic-data scorecard (synthctx.analysis.scorecard, rules/scorecard.smk): statistics on
constructed per-example head scores, the probe/reuse plan, the workflow's DAG, and one real run."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synthctx.analysis import scorecard as sc
from synthctx.analysis import similarity as sim

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
LAYERS, HEADS = 4, 5


def _frame(condition: str, matrix: np.ndarray, counted=None, kind: str = "retrieval", task: str = "mdqa"):
    """head_example_scores rows of (examples x heads) scores."""
    counted = [True] * len(matrix) if counted is None else counted
    return pd.DataFrame({
        "model": MODEL, "task": task, "condition": condition, "head_kind": kind,
        "example_id": [f"ex{i}" for i in range(len(matrix))], "counted": counted,
        "layers": LAYERS, "heads": HEADS, "scores": [list(map(float, row)) for row in matrix],
    })


def _noisy(truth: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(truth[None, :] + noise * rng.standard_normal((n, truth.size)), 0, None)


@pytest.fixture
def constructed():
    """A reference and three candidates: identical to it, a little and very noisy copies."""
    rng = np.random.default_rng(0)
    truth = np.zeros(LAYERS * HEADS)
    truth[rng.choice(truth.size, 6, replace=False)] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    ref = _noisy(truth, 30, 0.1, 1)
    return {
        "real_full": _frame("real_full", ref),
        "same": _frame("same", ref.copy()),
        "close": _frame("close", ref + _noisy(np.zeros_like(truth), 30, 0.05, 2)),
        "far": _frame("far", _noisy(np.roll(truth, 7), 30, 0.3, 3)),
    }


def test_score_candidates_identical_candidate_has_cosine_one_and_intervals_contain_estimates(constructed):
    ref = constructed["real_full"]
    scored = sc.score_candidates(ref, {c: f for c, f in constructed.items() if c != "real_full"}, "retrieval",
                                 top_k=5, resamples=2000, alpha=0.05, seed=11)
    assert scored["same"]["cosine"] == pytest.approx(1.0)
    assert scored["same"]["cosine_ci_low"] == pytest.approx(1.0) and scored["same"]["recall_topk"] == 1.0
    # point estimates are the study's similarity functions on the mean vectors
    for name in ("close", "far"):
        vec = sc._counted_matrix(constructed[name], "retrieval", sc.example_ids(ref, "retrieval")).mean(0)
        real = sc._counted_matrix(ref, "retrieval", sc.example_ids(ref, "retrieval")).mean(0)
        assert scored[name]["cosine"] == pytest.approx(sim.cosine(vec, real))
        assert scored[name]["recall_topk"] == pytest.approx(sim.recall(sim.top_k_heads(vec, 5), sim.top_k_heads(real, 5)))
    for values in scored.values():
        for measure, low, high in (("cosine", "cosine_ci_low", "cosine_ci_high"),
                                   ("recall_topk", "recall_ci_low", "recall_ci_high")):
            assert values[low] - 1e-12 <= values[measure] <= values[high] + 1e-12, (measure, values)
        assert values["real_examples"] == 30 and values["counted_examples"] == 30
    assert 1.0 > scored["close"]["cosine"] > scored["far"]["cosine"]
    assert scored["far"]["cosine_ci_high"] < scored["close"]["cosine_ci_low"]  # clearly separated
    ranks = sc.rank_candidates({c: scored[c] for c in ("far", "close", "same")}, "cosine", ["far", "close", "same"])
    assert ranks == {"same": 1, "close": 2, "far": 3}


def test_bootstrap_resamples_candidate_and_reference_jointly():
    """A candidate equal to the reference on every example keeps cosine 1 in every resample only
    when both are drawn with the same examples (independent draws would spread it below 1)."""
    rng = np.random.default_rng(5)
    ref = rng.random((12, LAYERS * HEADS)) ** 4
    scored = sc.score_candidates(_frame("real_full", ref), {"copy": _frame("copy", ref)}, "retrieval", top_k=3,
                                 resamples=500, alpha=0.05, seed=3)
    assert scored["copy"]["cosine_ci_low"] == pytest.approx(1.0) and scored["copy"]["recall_ci_low"] == 1.0


def test_uncounted_examples_do_not_count_and_missing_examples_are_an_error(constructed):
    ref = constructed["real_full"]
    scores = np.stack(ref["scores"].map(np.asarray))
    half = _frame("half", scores, counted=[i % 2 == 0 for i in range(30)])
    scored = sc.score_candidates(ref, {"half": half}, "retrieval", top_k=5, resamples=200, alpha=0.05, seed=1)
    assert scored["half"]["counted_examples"] == 15
    assert scored["half"]["cosine"] == pytest.approx(sim.cosine(scores[::2].sum(0), scores.sum(0)))
    with pytest.raises(ValueError, match="did not decode the reference's real examples"):
        sc.score_candidates(ref, {"short": _frame("short", scores[:20])}, "retrieval", top_k=5, resamples=10,
                            alpha=0.05, seed=1)


def test_rank_ties_and_nan_go_last():
    scores = {"a": {"cosine": 0.5, "recall_topk": 0.2}, "b": {"cosine": 0.5, "recall_topk": 0.4},
              "c": {"cosine": math.nan, "recall_topk": math.nan}, "d": {"cosine": 0.9, "recall_topk": 0.0}}
    assert sc.rank_candidates(scores, "cosine", list(scores)) == {"d": 1, "b": 2, "a": 3, "c": 4}
    assert sc.rank_candidates(scores, "recall_topk", list(scores))["b"] == 1
    with pytest.raises(ValueError, match="rank_by"):
        sc.rank_candidates(scores, "f1", list(scores))


def test_stability_curve_rises_with_n_on_a_known_truth():
    """A fixed true head vector plus per-example noise: agreement between two disjoint sets of n
    examples grows with n, in expectation (200 draws), towards 1."""
    rng = np.random.default_rng(0)
    truth = np.zeros(270)
    truth[:10] = np.linspace(1.0, 0.3, 10)
    matrix = np.clip(truth[None, :] + 0.6 * rng.standard_normal((80, 270)), 0, None)
    rows = sc.stability_curve(matrix, [5, 10, 20, 40, 60, 200], top_k=10, draws=200, alpha=0.05, seed=4)
    assert [r["n"] for r in rows] == [5, 10, 20, 40, 60]  # 200 > 80 available: dropped
    assert [r["method"] for r in rows] == ["disjoint"] * 4 + ["bootstrap"]  # 2 x 60 > 80
    disjoint = rows[:4]
    cos = [r["cosine_mean"] for r in disjoint]
    overlap = [r["overlap_mean"] for r in disjoint]
    assert all(a < b for a, b in zip(cos, cos[1:])), cos
    assert all(a < b for a, b in zip(overlap, overlap[1:])), overlap
    assert cos[-1] > 0.9 and cos[0] < cos[-1] - 0.1
    for r in rows:
        assert r["cosine_low"] <= r["cosine_mean"] <= r["cosine_high"] and r["draws"] == 200 and r["available"] == 80
    # seeded: the same call gives the same rows
    assert rows == sc.stability_curve(matrix, [5, 10, 20, 40, 60, 200], top_k=10, draws=200, alpha=0.05, seed=4)


def test_topk_masks_match_similarity_top_k_heads():
    rng = np.random.default_rng(2)
    vectors = np.round(rng.random((50, 30)), 1) * (rng.random((50, 30)) > 0.7)  # ties and zeros
    masks = sc.topk_masks(vectors, 4)
    for row, mask in zip(vectors, masks):
        assert set(np.flatnonzero(mask)) == sim.top_k_heads(row, 4)


def test_capped_examples_is_a_seeded_ordered_subset():
    examples = [{"example_id": f"e{i}"} for i in range(10)]
    a = sc.capped_examples(examples, 4, seed=9)
    assert len(a) == 4 and a == sc.capped_examples(examples, 4, seed=9)
    assert [int(e["example_id"][1:]) for e in a] == sorted(int(e["example_id"][1:]) for e in a)
    assert sc.capped_examples(examples, 4, seed=10) != a
    assert sc.capped_examples(examples, 10, seed=9) == examples and sc.capped_examples(examples, None, 9) == examples


def _config(extra: str | None = None) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if extra:
        for section, values in yaml.safe_load((REPO / extra).read_text()).items():
            if isinstance(values, dict) and isinstance(config.get(section), dict):
                config[section] = {**config[section], **values}
            else:
                config[section] = values
    return config


def test_candidates_are_the_trained_non_real_conditions(monkeypatch):
    config = _config()
    assert sc.scorecard_candidates(config, "mdqa") == ["high_high", "high_low", "low_high", "low_low", "symbolic"]
    assert sc.probed_conditions(config, "mdqa")[0] == "real_full"
    # the registry's per-task trained conditions (user datasets) plug in through the one function
    from synthctx import study

    monkeypatch.setattr(study, "trained_conditions", lambda cfg, task: ["real_full", "real_limited", "symbolic"]
                        + (["my_set"] if task == "mdqa" else []), raising=False)
    assert sc.scorecard_candidates(config, "mdqa") == ["symbolic", "my_set"]
    assert sc.scorecard_candidates(config, "musique") == ["symbolic"]


def test_probe_reuse_decisions():
    config = _config()
    # CPU default: 5 < the 10-example sets -> every probe trains; heads cannot be the study's either
    assert config["scorecard"]["train_examples"] == 5
    assert sc.probe_reuse(config, "mdqa", "symbolic") == (False, False)
    assert sc.real_examples(config, "mdqa") == 8  # 40 capped by the ranking part
    config["scorecard"]["train_examples"] = 10  # = examples_per_variant, < max_train_examples (20)
    assert sc.probe_reuse(config, "mdqa", "symbolic") == (True, True)
    assert sc.probe_reuse(config, "mdqa", "real_full") == (False, False)
    config["scorecard"]["train_examples"] = config["data"]["max_train_examples"]["mdqa"]
    assert sc.probe_reuse(config, "mdqa", "real_full") == (True, True)
    config["scorecard"]["real_examples"] = 5  # fewer real examples than the study's heads job
    assert sc.probe_reuse(config, "mdqa", "low_low") == (True, False) and sc.real_examples(config, "mdqa") == 5
    config["study"]["synthetic_conditions"] = ["symbolic"]  # low_low not in the study: nothing to reuse
    assert sc.probe_reuse(config, "mdqa", "low_low") == (False, False)
    gpu = _config("config/gpu-small.yaml")
    # Real (Full) uncapped (data.max_train_examples null): its size is unknown, so it is probed
    assert sc.probe_reuse(gpu, "musique", "real_full") == (False, False)
    assert sc.real_examples(gpu, "musique") == 20 and sc.real_examples(gpu, "mdqa") == 40
    gpu["scorecard"]["train_examples"] = None  # no cap: the probe is the study
    # MDQA: 40 real examples of its 60-example ranking part -> its own detection; MuSiQue's 20: the study's
    assert sc.probe_reuse(gpu, "mdqa", "real_full") == (True, False)
    assert sc.probe_reuse(gpu, "musique", "real_full") == (True, True)


def _write_probe(tmp: Path, condition: str, frame: pd.DataFrame, n_train: int, seconds: tuple[float, float]):
    from synthctx.schema import write_table
    import pyarrow as pa
    import pyarrow.parquet as pq

    per_example = tmp / f"{condition}_per_example.parquet"
    write_table(frame, per_example, "head_example_scores", {})
    train = tmp / f"{condition}_train.parquet"
    pq.write_table(pa.table({"example_id": [f"t{i}" for i in range(n_train)]}), train)
    costs = {}
    for kind, s in zip(("train", "heads"), seconds):
        path = tmp / f"{condition}_{kind}.benchmark.tsv"
        path.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:{int(s):02d}\t100\n")
        costs[kind] = str(path)
    return str(per_example), str(train), costs


def test_run_scorecard_writes_a_consistent_table_and_the_comparison(tmp_path, constructed):
    from synthctx.schema import read_metadata, read_table

    files, trains, costs = {}, {}, {}
    for i, (condition, frame) in enumerate(constructed.items()):
        files[condition], trains[condition], costs[condition] = _write_probe(tmp_path, condition, frame, 3 + i,
                                                                             (10.0 + i, 5.0))
    settings = {"train_examples": 5, "top_k": 5, "resamples": 500, "alpha": 0.05, "rank_by": "cosine",
                "stability_sizes": [2, 5, 10, 20], "stability_draws": 50, "seed": 3}
    out = {k: str(tmp_path / f"{k}.{ext}") for k, ext in (("table", "parquet"), ("md", "md"), ("fig", "png"),
                                                           ("stab", "parquet"), ("stabfig", "png"))}
    reuse = {c: [False, False] for c in files}
    reuse["same"] = [True, True]
    sc.run_scorecard(model=MODEL, task="mdqa", example_files=files, train_files=trains, costs=costs, reuse=reuse,
                     labels={c: c.title() for c in files}, settings=settings, table_path=out["table"],
                     markdown_path=out["md"], figure_path=out["fig"], stability_path=out["stab"],
                     stability_figure=out["stabfig"])
    table = read_table(out["table"], "scorecard").set_index("condition")
    assert table.loc["real_full", "role"] == "reference" and pd.isna(table.loc["real_full", "rank"])
    assert table.loc["real_full", "cosine"] == pytest.approx(1.0)
    cands = table[table["role"] == "candidate"].sort_values("rank")
    assert list(cands.index) == ["same", "close", "far"] and list(cands["rank"]) == [1, 2, 3]
    assert cands["cosine"].is_monotonic_decreasing
    assert ((cands["cosine_ci_low"] <= cands["cosine"] + 1e-12) & (cands["cosine"] <= cands["cosine_ci_high"] + 1e-12)).all()
    assert list(table.loc[["real_full", "same", "close", "far"], "train_examples"]) == [3, 4, 5, 6]
    assert table.loc["close", "cost_s"] == pytest.approx(17.0) and table.loc["same", "train_reused"]
    assert "Same" in Path(out["md"]).read_text() and Path(out["fig"]).stat().st_size > 5000
    stab = read_table(out["stab"], "scorecard_stability")
    assert list(stab["n"]) == [2, 5, 10, 20] and list(stab["method"]) == ["disjoint"] * 3 + ["bootstrap"]
    assert read_metadata(out["table"])["settings"]["rank_by"] == "cosine"

    # Against the full study: Table 1 scores that follow the scorecard's order exactly.
    table1 = pd.DataFrame({"task": "mdqa", "condition": ["same", "close", "far", "real_full"],
                           "score": [0.6, 0.4, 0.1, 0.7]})
    study = tmp_path / "study.benchmark.tsv"
    study.write_text("s\n300\n")
    rows = sc.vs_study_rows(model=MODEL, scorecards={"mdqa": read_table(out["table"], "scorecard")}, table1=table1,
                            study_costs={"mdqa": [str(study)]}, seed=1)
    cosine_row = next(r for r in rows if r["measure"] == "cosine")
    # n = 3 candidates, perfectly monotone: rho 1, exact two-sided p = 2 / 3! = 1/3
    assert cosine_row["spearman_rho"] == pytest.approx(1.0) and cosine_row["n_conditions"] == 3
    assert cosine_row["p_value"] == pytest.approx(1 / 3) and cosine_row["p_method"] == "exact"
    # cost: every probe once (reference included): (10 + 11 + 12 + 13) + 4 x 5 = 66 s of 300
    assert cosine_row["scorecard_seconds"] == pytest.approx(66.0)
    assert cosine_row["cost_fraction"] == pytest.approx(66 / 300)
    markdown = sc.vs_study_markdown(pd.DataFrame(rows), 0.1)
    assert "22.0% (over the goal)" in markdown


def test_benchmark_seconds_missing_is_nan(tmp_path):
    assert math.isnan(sc.benchmark_seconds(str(tmp_path / "none.tsv")))
    path = tmp_path / "b.tsv"
    path.write_text("s\th:m:s\n12.5\t0:00:12\n")
    assert sc.benchmark_seconds(str(path)) == 12.5


# ---------------------------------------------------------------- workflow


def _tiny_scorecard_config(train_examples: int) -> dict:
    """The e2e test's tiny config on MDQA alone: 5 of the fixture's 7 questions for evaluation, 4 of
    them rank the heads (16 new tokens: the answer is reached, so some heads copy it), 2 train."""
    from test_workflow_e2e import _tiny_config

    config = _tiny_config()
    config["study"]["tasks"] = ["mdqa"]
    config["data"]["eval_examples"] = 5
    config["heads"].update(examples=4, max_new_tokens=16, task_examples={})
    config["causal"].update(examples=1, task_examples={})
    config["scorecard"].update(train_examples=train_examples, stability_sizes=[1, 2, 3, 4], stability_draws=20)
    # one LoRA step at the CPU study's rate leaves the heads as they are: a larger step separates the probes
    config["train"]["learning_rate"] = 3e-3
    return config


def _scratch_study(tmp_path: Path, config: dict, smollm_dir=None) -> Path:
    from slurm.workflow import link_model

    work = tmp_path / "study"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "report", "envs", "schemas", "profiles"):
        os.symlink(REPO / name, work / name)
    if smollm_dir is not None:
        link_model(Path(smollm_dir), work / "resources" / "models" / MODEL)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def _job_counts(output: str) -> dict[str, int]:
    counts, table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


@pytest.mark.parametrize("train_examples, probes", [(1, True), (2, False)])
def test_dry_run_lists_the_probe_jobs_or_reuses_the_study(tmp_path, train_examples, probes):
    work = _scratch_study(tmp_path, _tiny_scorecard_config(train_examples))
    env = {**os.environ, "SYNTHCTX_VLLM_PYTHON": "/nonexistent", "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "scorecard"], cwd=work,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    counts = _job_counts(run.stdout + run.stderr)
    # mdqa: the Real (Full) reference and the two candidates (low_low, symbolic)
    if probes:
        assert counts["scorecard_train_set"] == 3 and counts["scorecard_train"] == 3
        assert counts["scorecard_heads"] == 3 and "train_adapter" not in counts and "heads" not in counts
    else:
        # cap 2 >= the tiny study's 2-example sets, 2 real examples = its ranking part: the study's jobs
        assert counts["train_adapter"] == 3 and counts["heads"] == 3
        assert not {"scorecard_train", "scorecard_heads", "scorecard_train_set"} & set(counts)
    assert counts["scorecard_task"] == 1 and "evaluate_task" not in counts  # no Table 1 needed


@pytest.mark.slow
def test_scorecard_runs_on_the_tiny_config_for_one_task(tmp_path, smollm_dir):
    from synthctx.schema import read_table

    config = _tiny_scorecard_config(1)
    work = _scratch_study(tmp_path, config, smollm_dir)
    env = {**os.environ, "SYNTHCTX_VLLM_PYTHON": "/nonexistent", "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "scorecard"], cwd=work,
                         capture_output=True, text=True, timeout=1800, env=env)
    assert run.returncode == 0, run.stderr[-6000:]
    base = work / "results" / config["study"]["name"] / "scorecard" / MODEL / "mdqa"
    table = read_table(base / "scorecard.parquet", "scorecard")
    print(table.drop(columns=["model", "task"]).to_string())
    print((base / "scorecard.md").read_text())
    retrieval = table[table["head_kind"] == "retrieval"].set_index("condition")
    assert set(retrieval.index) == {"real_full", "low_low", "symbolic"}
    assert retrieval.loc["real_full", "role"] == "reference"
    ref_cos = retrieval.loc["real_full", "cosine"]
    assert math.isnan(ref_cos) or ref_cos == pytest.approx(1.0)
    cands = retrieval[retrieval["role"] == "candidate"].sort_values("rank")
    assert list(cands["rank"]) == [1, 2]
    finite = cands["cosine"].dropna()
    assert finite.is_monotonic_decreasing and finite.between(-1e-9, 1 + 1e-9).all()
    for r in cands.itertuples():
        if math.isfinite(r.cosine):
            assert r.cosine_ci_low - 1e-12 <= r.cosine <= r.cosine_ci_high + 1e-12
    assert (retrieval["train_examples"] == 1).all() and (retrieval["real_examples"] == 4).all()
    # the reference's heads copy: its own cosine is 1, and the candidates' similarities are defined
    assert retrieval.loc["real_full", "positive_heads"] > 0 and ref_cos == pytest.approx(1.0)
    assert cands["cosine"].notna().all() and cands["recall_topk"].notna().all()
    # the rank follows the cosine (ties broken by recall)
    assert list(cands.sort_values(["cosine", "recall_topk"], ascending=False).index) == list(cands.index)
    assert not retrieval["train_reused"].any() and not retrieval["heads_reused"].any()
    # the cost is the probe jobs' benchmark seconds: training and detection both ran
    assert (retrieval["cost_train_s"] > 0).all() and (retrieval["cost_heads_s"] > 0).all()
    assert np.allclose(retrieval["cost_s"], retrieval["cost_train_s"] + retrieval["cost_heads_s"])
    stab = read_table(base / "stability.parquet", "scorecard_stability")
    stab = stab[stab["head_kind"] == "retrieval"]
    assert list(stab["n"]) == [1, 2, 3, 4] and list(stab["method"]) == ["disjoint"] * 2 + ["bootstrap"] * 2
    assert stab["cosine_mean"].dropna().between(0, 1 + 1e-9).all()
    # the probe trained on the capped set (1 example), through the study's training script
    curve_dir = base / "symbolic" / "adapter"
    assert (curve_dir / "adapter_model.safetensors").stat().st_size > 0
    # rule heads' settings, with the probe's real examples
    from synthctx.schema import read_metadata

    heads_meta = read_metadata(base / "symbolic" / "heads.parquet")["heads"]
    assert heads_meta["examples"] == 4 and heads_meta["max_new_tokens"] == 16 and heads_meta["batch_size"] == 2
    assert heads_meta["token_match"] == "normalized"
    print("job-seconds:", float(retrieval["cost_s"].sum()))


def test_one_real_example_gives_an_empty_stability_table(tmp_path, constructed):
    """The e2e config ranks MuSiQue on a single example: no subset size fits, the scorecard still builds."""
    from synthctx.schema import read_table

    files, trains, costs = {}, {}, {}
    for condition in ("real_full", "far"):
        one = constructed[condition].iloc[:1]
        files[condition], trains[condition], costs[condition] = _write_probe(tmp_path, condition, one, 2, (1.0, 1.0))
    settings = {"train_examples": 5, "top_k": 5, "resamples": 200, "alpha": 0.05, "rank_by": "recall_topk",
                "stability_sizes": [2, 5], "stability_draws": 10, "seed": 3}
    paths = {k: str(tmp_path / k) for k in ("t.parquet", "t.md", "f.png", "s.parquet", "s.png")}
    sc.run_scorecard(model=MODEL, task="musique", example_files=files, train_files=trains, costs=costs,
                     reuse={c: [True, True] for c in files}, labels={}, settings=settings,
                     table_path=paths["t.parquet"], markdown_path=paths["t.md"], figure_path=paths["f.png"],
                     stability_path=paths["s.parquet"], stability_figure=paths["s.png"])
    assert read_table(paths["s.parquet"], "scorecard_stability").empty
    assert "No size of `scorecard.stability_sizes` fits" in Path(paths["t.md"]).read_text()
    table = read_table(paths["t.parquet"], "scorecard").set_index("condition")
    assert table.loc["far", "rank"] == 1 and table.loc["far", "real_examples"] == 1
    # one example: every resample is that example, the interval is the point
    assert table.loc["far", "cosine_ci_low"] == pytest.approx(table.loc["far", "cosine"])
