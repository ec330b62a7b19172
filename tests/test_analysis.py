"""Head similarity, recall, Spearman and the analysis entry points on constructed head scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from synthctx.analysis import similarity as sim
from synthctx.schema import read_table, write_table

SYNTHETIC = ["high_high", "high_low", "low_high", "low_low", "symbolic"]


def test_cosine_known_values():
    assert sim.cosine([1, 0, 0], [1, 0, 0]) == pytest.approx(1.0)
    assert sim.cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert sim.cosine([1, 1, 0], [1, 0, 0]) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(sim.cosine([0, 0], [1, 0]))
    with pytest.raises(ValueError):
        sim.cosine([1, 2], [1, 2, 3])


def test_head_sets_and_recall():
    real = np.array([0.9, 0.0, 0.5, 0.3, 0.05, 0.0])
    syn = np.array([0.0, 0.2, 0.6, 0.4, 0.0, 0.0])
    assert sim.top_k_heads(real, 3) == {0, 2, 3}
    assert sim.top_k_heads(real, 10) == {0, 2, 3, 4}  # zero-score heads never count
    assert sim.top_k_heads(np.array([0.5, 0.5, 0.1]), 1) == {0}  # ties: lower index
    assert sim.threshold_heads(real, 0.1) == {0, 2, 3}
    assert sim.recall(sim.top_k_heads(syn, 3), sim.top_k_heads(real, 3)) == pytest.approx(2 / 3)
    assert math.isnan(sim.recall({1}, set()))
    assert sim.positive_heads(real) == 4


def test_spearman_known_values():
    rho, p, n, _ = sim.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert rho == pytest.approx(1.0) and n == 5 and p < 0.05
    rho, _, _, _ = sim.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert rho == pytest.approx(-1.0)
    # one swap among five: rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert sim.spearman([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])[0] == pytest.approx(0.9)
    assert math.isnan(sim.spearman([1, 2], [1, 2])[0])
    assert math.isnan(sim.spearman([1, 1, 1], [1, 2, 3])[0])
    assert sim.spearman([1, float("nan"), 3, 4], [1, 2, 3, 4])[2] == 3


def test_spearman_p_value_is_exact_over_five_conditions():
    """Five points: p counts the orderings of 5! = 120 with |rho| >= the observed |rho| (the
    asymptotic t-approximation gives ~1e-24 and 0.037 for the first two)."""
    monotone = sim.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert monotone.p_value == pytest.approx(2 / 120) and monotone.n == 5 and monotone.p_method == "exact"
    # rho >= 0.9 <=> sum of squared rank differences <= 2: the identity and 4 adjacent swaps, each side
    one_swap = sim.spearman([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert one_swap.rho == pytest.approx(0.9) and one_swap.p_value == pytest.approx(10 / 120)
    assert sim.spearman([5, 4, 3, 2, 1], [0.1, 0.2, 0.3, 0.4, 0.5]).p_value == pytest.approx(2 / 120)
    undefined = sim.spearman([1, 1, 1], [1, 2, 3])
    assert math.isnan(undefined.p_value) and undefined.p_method == "undefined" and undefined.n == 3


def test_spearman_ties_permute_average_ranks():
    """y = [1, 1, 2, 2]: average ranks [1.5, 1.5, 3.5, 3.5]; the 24 orderings place the two high
    ranks on a pair of x positions, and only the pairs {3, 4} and {1, 2} reach |rho| = 2 / sqrt(5):
    2 pairs x 2! x 2! = 8 of 24."""
    result = sim.spearman([1, 2, 3, 4], [1, 1, 2, 2])
    assert result.rho == pytest.approx(2 / math.sqrt(5)) and result.p_value == pytest.approx(8 / 24)
    assert result.p_method == "exact" and result.n == 4


def test_spearman_permutation_test_beyond_the_exact_limit():
    x = [0.3, 0.1, 0.8, 0.5, 0.9, 0.2, 0.7, 0.4, 0.6]
    y = [0.2, 0.3, 0.7, 0.4, 0.6, 0.1, 0.9, 0.8, 0.5]
    exact = sim.spearman(x, y, exact_max_n=9)  # all 9! = 362,880 orderings
    sampled = sim.spearman(x, y, seed=7, permutations=20_000)
    assert exact.p_method == "exact" and sampled.p_method == "permutation" and sampled.n == 9
    assert sampled.rho == exact.rho and abs(sampled.p_value - exact.p_value) < 0.01
    assert sim.spearman(x, y, seed=7, permutations=20_000) == sampled  # same seed, same p
    with pytest.raises(ValueError, match="need a seed"):
        sim.spearman(x, y)


def test_correlation_label_shows_n_beside_rho():
    from synthctx.analysis.figures import correlation_label

    row = {"spearman_rho": 0.9, "n_conditions": 5, "p_value": 10 / 120, "p_method": "exact"}
    assert correlation_label(row) == "rho=0.90 (n=5), exact p=0.083"
    assert correlation_label({**row, "spearman_rho": float("nan"), "n_conditions": 2}) == "rho=n/a (n=2)"


def head_frame(task, condition, matrices, model="m"):
    rows = []
    for kind, matrix in matrices.items():
        for layer in range(matrix.shape[0]):
            for head in range(matrix.shape[1]):
                rows.append(dict(model=model, task=task, condition=condition, head_kind=kind, layer=layer, head=head,
                                 score=float(matrix[layer, head]), n_examples=3, n_seen=4))
    return pd.DataFrame(rows)


def test_similarity_rows_and_correlations():
    real = np.array([[1.0, 0.0], [0.5, 0.0]])
    heads = {"real_full": head_frame("mdqa", "real_full", {"retrieval": real})}
    scores = {"real_full": 0.9}
    # synthetic conditions increasingly far from real, with decreasing scores
    for i, cond in enumerate(SYNTHETIC):
        m = real.copy()
        m[0, 1] = i * 0.5
        heads[cond] = head_frame("mdqa", cond, {"retrieval": m})
        scores[cond] = 0.8 - 0.1 * i
    rows = pd.DataFrame(sim.similarity_rows("m", "mdqa", heads, scores, top_k=2, threshold=0.1))
    row = rows.set_index("condition").loc["real_full"]
    assert row["cosine"] == pytest.approx(1.0) and row["recall_topk"] == 1.0 and row["score"] == 0.9
    far = rows.set_index("condition").loc["symbolic"]
    assert far["cosine"] == pytest.approx(sim.cosine(real.ravel(), [1, 2, 0.5, 0]))
    assert far["recall_topk"] == 0.5  # top-2 of symbolic = (0,1), (0,0); real's = (0,0), (1,0)
    corr = pd.DataFrame(sim.correlation_rows(rows, SYNTHETIC, seed=0)).set_index("measure")
    assert corr.loc["cosine", "spearman_rho"] == pytest.approx(1.0)
    assert corr.loc["cosine", "n_conditions"] == 5
    assert corr.loc["cosine", "p_value"] == pytest.approx(2 / 120) and corr.loc["cosine", "p_method"] == "exact"


def test_cross_task_vectors_order():
    a = np.array([[1.0, 0.0]])
    heads = {
        "summhay": head_frame("summhay", "real_full", {"retrieval": a, "insight": 1 - a}),
        "mdqa": head_frame("mdqa", "real_full", {"retrieval": a}),
    }
    vectors = sim.cross_task_vectors(heads)
    assert list(vectors) == ["mdqa", "summhay_insight", "summhay_retrieval"]
    table = pd.DataFrame(sim.cross_task_rows("m", vectors))
    lookup = {(r, c): v for r, c, v in zip(table["row"], table["column"], table["cosine"])}
    assert lookup[("mdqa", "summhay_retrieval")] == pytest.approx(1.0)
    assert lookup[("mdqa", "summhay_insight")] == pytest.approx(0.0)
    assert "| mdqa |" in sim.markdown_matrix(table)


def test_analysis_entry_points(tmp_path):
    from synthctx.analysis.run import run_correlations, run_heatmap, run_niah_report, run_similarity, run_table2

    rng = np.random.default_rng(0)
    head_files, preds = [], []
    for task in ("mdqa", "summhay"):
        kinds = ("retrieval", "insight") if task == "summhay" else ("retrieval",)
        for cond in ["real_full", "real_limited", *SYNTHETIC, "nonft"]:
            path = tmp_path / f"{task}_{cond}.parquet"
            write_table(head_frame(task, cond, {k: rng.random((3, 4)) for k in kinds}), path, "head_scores")
            head_files.append(str(path))
            preds.append(dict(example_id="e", task=task, condition=cond, prediction="x", score=float(rng.random()),
                              metrics="{}", prompt_tokens=10, generated_tokens=2))
    pred_path = tmp_path / "pred.parquet"
    write_table(pd.DataFrame(preds), pred_path, "predictions")
    out = tmp_path / "sim.parquet"
    frame = run_similarity(model="m", head_files=head_files, prediction_files=[str(pred_path)], top_k=3, threshold=0.5,
                           output=str(out))
    assert len(frame) == 8 + 8 * 2 and read_table(out, "head_similarity").shape[0] == 24
    corr = run_correlations(similarity_path=str(out), synthetic=SYNTHETIC, output=str(tmp_path / "c.parquet"),
                            figure=str(tmp_path / "f3.png"), seed=0)
    assert set(corr["measure"]) >= {"cosine", "recall_topk", "insight_cosine"}
    written = read_table(tmp_path / "c.parquet", "correlations")
    assert (written["n_conditions"] == 5).all() and set(written["p_method"]) <= {"exact", "undefined"}
    # exact p over 120 orderings: a multiple of 1/120
    finite = written["p_value"].dropna()
    assert len(finite) and np.allclose(finite * 120, np.round(finite * 120))
    assert (tmp_path / "f3.png").stat().st_size > 0
    real = [f for f in head_files if f.endswith("real_full.parquet")]
    t2 = run_table2(model="m", head_files=real, output=str(tmp_path / "t2.parquet"), markdown=str(tmp_path / "t2.md"))
    assert len(t2) == 9 and "summhay_insight" in (tmp_path / "t2.md").read_text()
    run_heatmap(model="m", task="summhay", head_files=head_files, output=str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 0
    s1 = head_frame("niah", "set1", {"niah": np.array([[0.9, 0.0], [0.5, 0.2]])})
    s2 = head_frame("niah", "set2", {"niah": np.array([[0.8, 0.3], [0.0, 0.2]])})
    write_table(s1, tmp_path / "s1.parquet", "head_scores")
    write_table(s2, tmp_path / "s2.parquet", "head_scores")
    summary = run_niah_report(model="m", set1=str(tmp_path / "s1.parquet"), set2=str(tmp_path / "s2.parquet"), top_k=2,
                              output=str(tmp_path / "niah.md"))
    assert summary["overlap"] == 1 and summary["common"] == [(0, 0)]
    assert "Top-2 overlap: **1/2**" in (tmp_path / "niah.md").read_text()


def test_reference_without_retrieval_heads_is_reported(tmp_path, caplog):
    """A Real (Full) model that copied nothing (gpu-small's MuSiQue at 8K) has an all-zero head
    vector: similarities to it are NaN, Table 2 says why its cells are n/a, and both jobs warn."""
    from synthctx.analysis.run import run_similarity, run_table2

    head_files = []
    for task, real in (("mdqa", np.arange(12.0).reshape(3, 4)), ("musique", np.zeros((3, 4)))):
        for cond, scores in (("real_full", real), ("high_high", np.ones((3, 4)))):
            path = tmp_path / f"{task}_{cond}.parquet"
            write_table(head_frame(task, cond, {"retrieval": scores}), path, "head_scores")
            head_files.append(str(path))
    preds = [dict(example_id="e", task=t, condition=c, prediction="x", score=0.5, metrics="{}", prompt_tokens=10,
                  generated_tokens=2) for t in ("mdqa", "musique") for c in ("real_full", "high_high")]
    write_table(pd.DataFrame(preds), tmp_path / "pred.parquet", "predictions")
    with caplog.at_level("INFO", logger="synthctx.analysis"):
        frame = run_similarity(model="m", head_files=head_files, prediction_files=[str(tmp_path / "pred.parquet")],
                               top_k=3, threshold=0.5, output=str(tmp_path / "sim.parquet"))
        run_table2(model="m", head_files=[f for f in head_files if f.endswith("real_full.parquet")],
                   output=str(tmp_path / "t2.parquet"), markdown=str(tmp_path / "t2.md"))
    musique = frame[frame["task"] == "musique"]
    assert musique["cosine"].isna().all() and musique["recall_topk"].isna().all()
    assert frame[frame["task"] == "mdqa"]["cosine"].notna().all()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("musique retrieval: the Real (Full) model has no head") for m in warnings)
    assert any(m.startswith("musique: the Real (Full) model has no head") for m in warnings)
    assert not any(m.startswith("mdqa") for m in warnings)
    markdown = (tmp_path / "t2.md").read_text()
    assert "| musique | n/a | n/a |" in markdown and "no head of musique scored above 0" in markdown
