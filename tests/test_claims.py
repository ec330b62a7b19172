"""The claims page: the verdict rules on constructed inputs, and the whole table built from
constructed artifacts in the real schemas (Table 1, predictions, per-example head scores,
correlations, knockout/patching predictions, NIAH heads)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from synthctx.analysis import claims as cl
from synthctx.evaluate.table1 import TaskExtras, build_table1, table1_markdown
from synthctx.schema import read_metadata, read_table, write_table

SYNTHETIC = ["high_high", "high_low", "low_high", "low_low", "symbolic"]
REAL = ["real_full", "real_limited"]
TASKS = ["mdqa", "musique", "summhay"]
N = 40
LAYERS, HEADS = 2, 4


# ---------------------------------------------------------------- the verdict rules


def test_decide_gives_each_verdict_by_its_rule():
    assert cl.decide(0.01, 0.99, 0.05, "t").verdict == cl.HOLDS
    assert cl.decide(0.99, 0.01, 0.05, "t").verdict == cl.CONTRADICTED
    assert cl.decide(0.2, 0.8, 0.05, "t").verdict == cl.INCONCLUSIVE
    # a missing direction (NaN) is never significant
    assert cl.decide(math.nan, 0.3, 0.05, "t").verdict == cl.INCONCLUSIVE
    assert cl.decide(0.049, 0.9, 0.05, "t").rule == "t: p = 0.0490 < alpha = 0.05"
    assert cl.decide(0.06, 0.9, 0.05, "t").verdict == cl.INCONCLUSIVE  # alpha is the bound
    cannot = cl.decide(0.01, 0.99, 0.05, "t", cannot="input not built: x.parquet")
    assert cannot == (cl.CANNOT, "input not built: x.parquet", "the claim needs this input or quantity")
    # order: cannot evaluate > positive control > degenerate > the test
    both = cl.decide(0.01, 0.99, 0.05, "t", control="Real (Full) 0.1 vs Non-FT 0.1", degenerate="constant")
    assert both.verdict == cl.CONTROL_FAILS and both.reason == "Real (Full) 0.1 vs Non-FT 0.1"
    degenerate = cl.decide(0.99, 0.01, 0.05, "t", degenerate="the same prediction for all 12 examples")
    assert degenerate.verdict == cl.DEGENERATE and "12 examples" in degenerate.reason
    assert set(cl.VERDICTS) == {cl.HOLDS, cl.CONTRADICTED, cl.INCONCLUSIVE, cl.CANNOT, cl.DEGENERATE,
                                cl.CONTROL_FAILS}


def _row(condition="high_high", n=12, distinct=12, p_trivial=0.001, score=0.5):
    return {"condition": condition, "n": n, "distinct_predictions": distinct, "p_vs_trivial": p_trivial,
            "score": score}


def test_degenerate_reason_constant_nearly_constant_and_trivial():
    assert cl.degenerate_reason(_row(), 0.05, 0.1) is None
    assert cl.degenerate_reason(_row(distinct=1), 0.05, None) == "the same prediction for all 12 examples"
    # 6 of 64 distinct is below 0.1 n; 7 of 64 is not
    assert "nearly constant: 6 distinct predictions of 64" in cl.degenerate_reason(_row(n=64, distinct=6), 0.05, 0.1)
    assert cl.degenerate_reason(_row(n=64, distinct=7), 0.05, 0.1) is None
    reason = cl.degenerate_reason(_row(p_trivial=0.3, score=0.667), 0.05, 0.1, trivial_score=0.667)
    assert reason == "does not beat the trivial baseline (0.667 vs 0.667, p = 0.300)"
    assert cl.degenerate_reason(_row(condition="trivial", distinct=pd.NA, p_trivial=math.nan), 0.05, 0.1) is None


def test_paired_difference_directions_and_ties():
    a, b = np.ones(20), np.zeros(20)
    up = cl.paired_difference(a, b, 500, 1, 0.05)
    assert up.statistic == 1.0 and up.p_holds == 0.0 and up.p_contradicts == 1.0 and up.n == 20
    tie = cl.paired_difference(a, a, 500, 1, 0.05)
    assert tie.p_holds == 1.0 and tie.p_contradicts == 1.0  # a tie supports neither direction
    assert cl.paired_difference(a, b, 500, 1, 0.05) == up  # seeded


def test_positive_head_difference_and_split_halves():
    rng = np.random.default_rng(0)
    real = np.zeros((8, 6))
    real[:, :4] = rng.uniform(0.1, 1, size=(8, 4))
    few = np.zeros((8, 6))
    few[:, 0] = 0.5
    stat = cl.positive_head_difference(real, few, 400, 3, 0.05)
    assert stat.statistic == 3 and stat.p_holds == 0.0 and stat.ci_low == 3
    first, second = cl.split_halves(9, 5)
    assert len(first) == 4 and len(second) == 5 and not set(first) & set(second)
    other = np.zeros((8, 6))
    other[:, 4:] = 1.0
    margin, within, cross, closest = cl.split_half_margin(real, {"b": other}, 400, 2, 0.05)
    assert within > 0.9 and cross == 0.0 and closest == "b" and margin.p_holds == 0.0


# ---------------------------------------------------------------- constructed artifacts


def _predictions(task, hits, constant=(), constant_score=None):
    """Scores 1 on the first hits[c] examples (or constant_score everywhere), distinct texts."""
    rows = []
    for condition, k in hits.items():
        for i in range(N):
            score = constant_score if condition in constant else float(i < k)
            text = "[1][2][3][4]" if condition in constant else f"answer {condition} {i}"
            rows.append({"example_id": f"e{i}", "task": task, "condition": condition, "prediction": text,
                         "score": score, "metrics": "{}", "prompt_tokens": 10, "generated_tokens": 2})
    return pd.DataFrame(rows)


def _head_rows(task, condition, positive, kind="retrieval", examples=8, seed=0):
    """Per-example head scores: heads ``positive`` score in every example, the others 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(examples):
        scores = np.zeros(LAYERS * HEADS)
        scores[list(positive)] = rng.uniform(0.2, 1.0, size=len(positive))
        rows.append({"model": "m", "task": task, "condition": condition, "head_kind": kind, "example_id": f"e{i}",
                     "counted": True, "layers": LAYERS, "heads": HEADS, "scores": scores.tolist()})
    return rows


def _interventions(task, condition, per_intervention, n=10):
    rows = []
    for intervention, (score, heads) in per_intervention.items():
        for i in range(n):
            rows.append({"model": "m", "task": task, "condition": condition, "intervention": intervention,
                         "draw": 0, "heads": json.dumps(heads), "example_id": f"c{i}", "prediction": "x",
                         "score": float(score)})
    return pd.DataFrame(rows)


def _niah(name, top):
    rows = [{"model": "m", "task": "niah", "condition": name, "head_kind": "niah", "layer": i // 10, "head": i % 10,
             "score": (1.0 - 0.01 * top.index(i)) if i in top else 0.0, "n_examples": 6, "n_seen": 6}
            for i in range(30)]
    return pd.DataFrame(rows)


def _settings(**over):
    return {"model": "m", "tasks": TASKS, "synthetic": SYNTHETIC, "alpha": 0.05, "resamples": 500, "seed": 11,
            "top_k": 10, "min_distinct_fraction": 0.1, **over}


def _write_study(root):
    """A study's artifacts under ``root`` where each claim gets a known verdict."""
    paths = cl.study_paths(str(root), "m", TASKS, SYNTHETIC, ["real_full"], ["symbolic"])
    base = {c: 10 for c in SYNTHETIC}
    hits = {
        # MDQA: Real (Full) far above the best synthetic (Low / High), which beats Non-FT
        "mdqa": {**base, "low_high": 20, "real_full": 36, "real_limited": 30, "nonft": 2},
        # MuSiQue: Real (Full) = Non-FT, the positive control fails
        "musique": {**base, "high_high": 12, "real_full": 4, "real_limited": 4, "nonft": 4},
        # SummHay: the best synthetic condition cites every document (= the trivial baseline)
        "summhay": {**base, "high_low": 0, "real_full": 36, "real_limited": 30, "nonft": 0},
    }
    preds = {t: _predictions(t, h, constant={"high_low"} if t == "summhay" else (), constant_score=2 / 3)
             for t, h in hits.items()}
    trivial = {"mdqa": 0.0, "musique": 0.0, "summhay": 2 / 3}
    extras = {t: TaskExtras(trivial_scores={f"e{i}": trivial[t] for i in range(N)}) for t in TASKS}
    table1 = build_table1(preds, "m", SYNTHETIC, REAL, resamples=500, alpha=0.05, seed=3, extras=extras)
    write_table(table1, paths.table1, "table1")
    for task, frame in preds.items():
        write_table(frame, paths.predictions[task], "predictions")
    heads = {  # real_full heads 0-5 (MDQA), 6-7 (MuSiQue); Symbolic on MDQA uses every head
        ("mdqa", "real_full"): range(6), ("musique", "real_full"): (6, 7), ("summhay", "real_full"): (0, 7)}
    for task in TASKS:
        for condition in ["real_full", *SYNTHETIC]:
            positive = heads.get((task, condition), range(8) if (task, condition) == ("mdqa", "symbolic") else (0,))
            rows = _head_rows(task, condition, positive, seed=len(condition))
            if task == "summhay" and condition == "real_full":
                rows += _head_rows(task, condition, (3, 4), kind="insight")
            write_table(pd.DataFrame(rows), paths.head_examples[(task, condition)], "head_example_scores")
    correlations = pd.DataFrame([
        {"model": "m", "task": "mdqa", "measure": "cosine", "spearman_rho": 1.0, "p_value": 2 / 120,
         "n_conditions": 5, "p_method": "exact"},
        {"model": "m", "task": "mdqa", "measure": "recall_topk", "spearman_rho": -1.0, "p_value": 2 / 120,
         "n_conditions": 5, "p_method": "exact"},
        {"model": "m", "task": "summhay", "measure": "cosine", "spearman_rho": 0.3, "p_value": 0.68,
         "n_conditions": 5, "p_method": "exact"},
        {"model": "m", "task": "summhay", "measure": "recall_topk", "spearman_rho": math.nan, "p_value": math.nan,
         "n_conditions": 2, "p_method": "undefined"},
    ])
    write_table(correlations, paths.correlations, "correlations")
    top = [[0, 1], [0, 2]]
    write_table(_interventions("mdqa", "real_full", {"none": (1, []), "knockout_topk": (0, top),
                                                     "knockout_random": (1, top)}),
                paths.knockout[("mdqa", "real_full")], "intervention_predictions")
    write_table(_interventions("summhay", "real_full", {"none": (1, []), "knockout_topk": (1, top),
                                                        "knockout_random": (0, top)}),
                paths.knockout[("summhay", "real_full")], "intervention_predictions")
    write_table(_interventions("musique", "real_full", {"none": (1, []), "knockout_topk": (0, top),
                                                        "knockout_random": (1, top)}),
                paths.knockout[("musique", "real_full")], "intervention_predictions")
    write_table(_interventions("mdqa", "symbolic", {"none": (0, []), "patch_intersection": (1, top),
                                                    "patch_complement": (0, top), "patch_random": (0, top)}),
                paths.patching[("mdqa", "symbolic")], "intervention_predictions")
    write_table(_interventions("musique", "symbolic", {"none": (0, []), "patch_intersection": (0, []),
                                                       "patch_complement": (0, []), "patch_random": (0, [])}),
                paths.patching[("musique", "symbolic")], "intervention_predictions")
    # SummHay's patching table is not built
    order = [3, 7, 1, 12, 25, 0, 9, 14, 28, 5]
    write_table(_niah("set1", order), paths.niah[0], "head_scores")
    write_table(_niah("set2", list(reversed(order))), paths.niah[1], "head_scores")
    return paths


def _verdicts(frame):
    return {(r.claim_id, r.task, r.subject): r.verdict for r in frame.itertuples(index=False)}


def test_claims_table_on_constructed_artifacts(tmp_path):
    paths = _write_study(tmp_path / "results")
    out = tmp_path / "reports"
    frame = cl.make_claims(paths, str(out / "claims.parquet"), str(out / "claims.md"), _settings())
    verdicts = _verdicts(frame)
    low_high, real = "Low / High", "Real Data (Full)"
    assert verdicts[("C1", "mdqa", f"{real} vs {low_high}")] == cl.HOLDS
    assert verdicts[("C2", "mdqa", f"{low_high} vs Non-FT")] == cl.HOLDS
    assert verdicts[("C1", "musique", f"{real} vs High / High")] == cl.CONTROL_FAILS
    assert verdicts[("C2", "musique", "High / High vs Non-FT")] == cl.HOLDS  # C2 does not rest on Real (Full)
    assert verdicts[("C1", "summhay", f"{real} vs High / Low")] == cl.DEGENERATE
    assert verdicts[("C2", "summhay", "High / Low vs Non-FT")] == cl.DEGENERATE
    assert verdicts[("C3", "mdqa", "High / High")] == cl.HOLDS
    assert verdicts[("C3", "mdqa", "Symbolic / Symbolic")] == cl.CONTRADICTED
    assert verdicts[("C3", "musique", "High / High")] == cl.CONTROL_FAILS
    assert verdicts[("C4", "mdqa", "cosine")] == cl.HOLDS
    assert verdicts[("C4", "mdqa", "recall_topk")] == cl.CONTRADICTED
    assert verdicts[("C4", "summhay", "cosine")] == cl.INCONCLUSIVE
    assert verdicts[("C4", "summhay", "recall_topk")] == cl.CANNOT
    assert verdicts[("C5", "mdqa", real)] == cl.HOLDS
    assert verdicts[("C5", "summhay", real)] == cl.CONTRADICTED
    assert verdicts[("C5", "musique", real)] == cl.CONTROL_FAILS
    assert verdicts[("C6", "mdqa", "Symbolic / Symbolic")] == cl.HOLDS
    assert verdicts[("C6", "musique", "Symbolic / Symbolic")] == cl.CANNOT
    assert verdicts[("C6", "summhay", "Symbolic / Symbolic")] == cl.CANNOT
    assert verdicts[("C7", "mdqa", "")] == cl.HOLDS
    assert verdicts[("C7", "musique", "")] == cl.CONTROL_FAILS
    assert verdicts[("C8", "niah", "")] == cl.HOLDS
    assert verdicts[("CB", "all", "")] == cl.CANNOT
    rows = frame.set_index(["claim_id", "task", "subject"])
    assert rows.loc[("CB", "all", ""), "reason"] == "not run in this study (no closed_book condition)"
    assert rows.loc[("C6", "summhay", "Symbolic / Symbolic"), "reason"].startswith("input not built: ")
    assert "empty Intersection" in rows.loc[("C6", "musique", "Symbolic / Symbolic"), "reason"]
    assert "needs 3" in rows.loc[("C4", "summhay", "recall_topk"), "reason"]
    assert "does not beat the trivial baseline (0.667 vs 0.667" in rows.loc[("C2", "summhay", "High / Low vs Non-FT"),
                                                                            "reason"]
    c1 = rows.loc[("C1", "mdqa", f"{real} vs {low_high}")]
    assert c1["statistic"] == pytest.approx(16 / 40) and c1["ci_low"] > 0 and c1["n"] == N
    assert c1["paper"] == "0.83 vs 0.49 / 0.64 vs 0.31"
    c3 = rows.loc[("C3", "mdqa", "High / High")]
    assert c3["statistic"] == 5 and c3["measured"] == "positive heads: Real (Full) 6, High / High 1 (of 8)"
    assert rows.loc[("C3", "musique", "High / High"), "paper"].startswith("129 vs 112 and 74")
    assert rows.loc[("C8", "niah", ""), "statistic"] == 10
    assert set(frame["verdict"]) <= set(cl.VERDICTS)
    assert list(dict.fromkeys(frame["claim_id"])) == list(cl.CLAIMS)
    # the files: the Parquet in its schema with provenance, the page with every row
    again = read_table(out / "claims.parquet", "claims")
    assert len(again) == len(frame) and read_metadata(out / "claims.parquet")["alpha"] == 0.05
    text = (out / "claims.md").read_text()
    assert text.count("\n| C") == len(frame) + len(cl.CLAIMS)  # the summary and every row
    assert "| C1 | mdqa | Real Data (Full) vs Low / High |" in text
    assert "musique: positive control fails: Real (Full) 0.100 vs Non-FT 0.100" in text
    assert "summhay / High / Low: degenerate: the same prediction for all 40 examples" in text
    # same seed, same table
    pd.testing.assert_frame_equal(cl.build_claims(paths, _settings())[0], frame)


def test_claims_without_inputs_say_what_is_not_built(tmp_path):
    paths = cl.study_paths(str(tmp_path / "empty"), "m", TASKS, SYNTHETIC, ["real_full"], SYNTHETIC)
    frame, missing = cl.build_claims(paths, _settings())
    assert set(frame["verdict"]) == {cl.CANNOT}
    assert all(r.startswith("input not built: ") for r in frame["reason"])
    assert paths.table1 in missing and set(frame["claim_id"]) == set(cl.CLAIMS)


def test_table1_flags_degenerate_conditions_with_the_claims_rule(tmp_path):
    paths = _write_study(tmp_path / "results")
    table = read_table(paths.table1, "table1")
    flags = cl.degenerate_flags(table, 0.05, 0.1)
    assert ("summhay", "high_low") in flags and ("mdqa", "real_full") not in flags
    # Non-FT is flagged too (2 hits in 40 do not beat a trivial 0 at p < 0.05); no claim rests on it
    assert flags[("mdqa", "nonft")].startswith("does not beat the trivial baseline (0.050 vs 0.000")
    md = table1_markdown(table, 0.05, 500, flags)
    assert "| loss fell | degenerate |" in md
    line = next(x for x in md.splitlines() if x.startswith("| summhay | High / Low |"))
    assert line.endswith("| **yes** |")
    assert ("- SummHay / High / Low: degenerate outputs, the same prediction for all 40 examples; does not beat the "
            "trivial baseline") in md
    # without flags: Table 1 as before
    assert "degenerate" not in table1_markdown(table, 0.05, 500)


def test_detection_writes_every_examples_head_scores(tmp_path, monkeypatch):
    """The per-example scores (head_example_scores) average, over the counted examples, to the
    head_scores file's score of every head."""
    import torch

    from synthctx.heads import retrieval

    # a random model rarely copies: give each example known, distinct head scores instead
    calls = iter(np.random.default_rng(4).uniform(size=(3, 2, 4)))
    monkeypatch.setattr(retrieval, "retrieval_example_score", lambda *args, **kwargs: next(calls))

    from conftest import tiny_llama
    from synthctx.heads.retrieval import PreparedExample, detect_heads, head_example_scores_frame, head_scores_frame

    model = tiny_llama(seed=7)
    torch.manual_seed(0)
    prompts = [torch.randint(0, 128, (24,)).tolist() for _ in range(3)]
    prepared = [PreparedExample(str(i), p, {"retrieval": [(0, len(p))]}, {"ok": i != 1}) for i, p in enumerate(prompts)]

    class Tok:
        eos_token_id = None

        def get_vocab(self):
            return {}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    result = detect_heads(model, Tok(), prepared, max_new_tokens=5, success_only=True,
                          scorer=lambda prediction, ex: 1.0 if ex["ok"] else 0.0)
    per_example = head_example_scores_frame("m", "mdqa", "real_full", result)
    write_table(per_example, tmp_path / "e.parquet", "head_example_scores")
    per_example = read_table(tmp_path / "e.parquet", "head_example_scores")
    assert list(per_example["example_id"]) == ["0", "1", "2"] and list(per_example["counted"]) == [True, False, True]
    assert set(per_example["layers"]) == {2} and set(per_example["heads"]) == {4}
    counted = np.stack([np.asarray(s) for s in per_example.loc[per_example["counted"], "scores"]])
    heads = head_scores_frame("m", "mdqa", "real_full", result).sort_values(["layer", "head"])
    np.testing.assert_allclose(counted.mean(0), heads["score"].to_numpy())
    assert counted.sum() > 0


def test_undefined_rho_reason_names_too_few_pairs_or_a_constant_measure():
    # gpu-small's MuSiQue under the all-module recipe: 5 finite pairs, every score 0.000, so rho
    # is undefined for a constant, not for too few pairs
    assert "it needs 3" in cl.undefined_rho_reason(2, "cosine")
    constant = cl.undefined_rho_reason(5, "recall_topk")
    assert "needs 3" not in constant
    assert "the recall_topk or the score is the same for all 5" in constant
