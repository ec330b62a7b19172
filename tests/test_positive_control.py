"""Did fine-tuning teach the task? Trivial baselines, Table 1's positive control, training health."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from synthctx.data.examples import make_example, write_examples
from synthctx.evaluate.baselines import (
    cite_all_prediction,
    distinct_predictions,
    most_frequent_answer,
    trivial_predictions,
)
from synthctx.evaluate.metrics import score_prediction
from synthctx.evaluate.table1 import TaskExtras, build_table1, positive_control, table1_markdown, task_extras
from synthctx.provenance import provenance
from synthctx.schema import write_table
from synthctx.train.health import loss_health, plot_training_curves, warn_if_loss_did_not_fall

SYNTHETIC = ["high_high", "high_low", "low_high", "low_low", "symbolic"]
REAL = ["real_full", "real_limited"]


def summhay_example(i: int, n_docs: int, gold: list[str]) -> dict:
    docs = [{"doc_id": str(k), "title": f"doc {k}", "text": f"Text of document {k}."} for k in range(1, n_docs + 1)]
    return make_example(example_id=f"s{i}", task="summhay", condition="real", split="eval", documents=docs,
                        question="Which documents state the insight?", answers=[], target="".join(f"[{g}]" for g in gold),
                        gold_doc_ids=gold, needles=[], meta={"query": "q"})


def qa_example(i: int, answer: str, split: str = "train") -> dict:
    text = f"The answer is {answer}."
    start = text.index(answer)
    return make_example(example_id=f"q{i}", task="mdqa", condition="real_full" if split == "train" else "real",
                        split=split, documents=[{"doc_id": "1", "title": "t", "text": text}], question="q?",
                        answers=[answer], target=answer, gold_doc_ids=["1"],
                        needles=[{"doc_id": "1", "start": start, "end": start + len(answer), "kind": "answer"}])


def test_cite_all_baseline_scores_its_hand_computed_f1():
    example = summhay_example(0, n_docs=4, gold=["2", "3"])
    prediction = cite_all_prediction(example)
    assert prediction == "[1][2][3][4]"
    # P = 2/4, R = 2/2 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3 (2k / (n + k) with k = 2 gold of n = 4).
    assert score_prediction("summhay", prediction, example)[0] == pytest.approx(2 / 3)
    ten = summhay_example(1, n_docs=10, gold=["7"])
    assert score_prediction("summhay", cite_all_prediction(ten), ten)[0] == pytest.approx(2 / 11)


def test_most_frequent_answer_is_seed_free_and_normalised():
    train = [qa_example(0, "Paris"), qa_example(1, "the Paris"), qa_example(2, "Rome"), qa_example(3, "Oslo"),
             qa_example(4, "Rome")]
    # "Paris" and "the Paris" normalise alike (2), as do the two "Rome" (2): the tie goes to the
    # normalised text that sorts first ("paris"), spelled as its first training example does.
    assert most_frequent_answer(train) == "Paris"
    assert most_frequent_answer(list(reversed(train))) == "the Paris"
    evals = [qa_example(10, "Paris", "eval"), qa_example(11, "Lima", "eval")]
    assert trivial_predictions("mdqa", evals, train[2:]) == ["Rome", "Rome"]
    with pytest.raises(ValueError, match="no training examples"):
        most_frequent_answer([])


def test_distinct_predictions_counts_answers_and_citation_lists():
    assert distinct_predictions(["Paris", "paris.", "The Paris", "Rome"]) == 2
    # Citation lists compare literally (brackets kept): [1][2] and [12] are different answers.
    assert distinct_predictions(["[1][2]", "[12]", "[1] [2]"]) == 2


def _predictions(task, means, n=60, seed=0, constant=()):
    rng = np.random.default_rng(seed)
    rows = []
    for condition, mean in means.items():
        scores = (rng.uniform(size=n) < mean).astype(float)
        for i, s in enumerate(scores):
            text = "same" if condition in constant else f"answer {i} {s}"
            rows.append({"example_id": f"e{i}", "task": task, "condition": condition, "prediction": text,
                         "score": s, "metrics": "{}", "prompt_tokens": 10, "generated_tokens": 1})
    return pd.DataFrame(rows)


def test_positive_control_passes_and_fails_on_constructed_tables():
    means = {"high_high": 0.3, "high_low": 0.3, "low_high": 0.35, "low_low": 0.3, "symbolic": 0.2,
             "real_full": 0.9, "real_limited": 0.6, "nonft": 0.1}
    flat = dict(means, real_full=0.12)
    preds = {"mdqa": _predictions("mdqa", means), "musique": _predictions("musique", flat, seed=3, constant={"symbolic"})}
    trivial = {"mdqa": {f"e{i}": 0.2 for i in range(60)}, "musique": {f"e{i}": 0.0 for i in range(60)}}
    extras = {task: TaskExtras(trivial_scores=trivial[task], train_examples={"real_full": 40, "real_limited": 10},
                               loss_fell={"real_full": True, "symbolic": task != "musique"}) for task in preds}
    table = build_table1(preds, "m", SYNTHETIC, REAL, resamples=2000, alpha=0.05, seed=5, extras=extras)
    assert len(table) == 2 * 9  # 8 conditions + the trivial row per task
    rows = table.set_index(["task", "condition"])
    assert rows.loc[("mdqa", "trivial"), "score"] == pytest.approx(0.2)
    assert rows.loc[("mdqa", "real_full"), "p_vs_nonft"] == 0.0
    assert rows.loc[("mdqa", "real_full"), "p_vs_trivial"] == 0.0
    assert np.isnan(rows.loc[("mdqa", "nonft"), "p_vs_nonft"]) and np.isnan(rows.loc[("mdqa", "trivial"), "p_vs_trivial"])
    assert rows.loc[("mdqa", "real_full"), "train_examples"] == 40
    assert pd.isna(rows.loc[("mdqa", "nonft"), "train_examples"])
    assert rows.loc[("musique", "symbolic"), "distinct_predictions"] == 1
    assert rows.loc[("mdqa", "symbolic"), "distinct_predictions"] > 1
    control = positive_control(table, 0.05).set_index("task")
    assert bool(control.loc["mdqa", "passes"]) and not bool(control.loc["musique", "passes"])
    assert control.loc["musique", "p_vs_nonft"] > 0.05
    md = table1_markdown(table, 0.05, 2000)
    assert "## Positive control" in md and "| MDQA | 0.9" in md and "FAILS" in md
    assert "MuSiQue / Symbolic / Symbolic: the training loss did not fall" in md
    assert "MuSiQue / Symbolic / Symbolic: the same prediction for all 60 examples" in md
    assert "MDQA / Symbolic / Symbolic: the training loss did not fall" not in md


def test_loss_health_flags_a_flat_run_and_passes_a_falling_one(caplog):
    falling = list(np.linspace(3.0, 0.8, 40))
    flat = [2.0 + 0.05 * np.sin(k) for k in range(40)]
    rising = list(np.linspace(1.0, 2.0, 40))
    assert loss_health(falling, 0.1).fell
    assert not loss_health(flat, 0.1).fell and not loss_health(rising, 0.1).fell
    assert not loss_health([1.0], 0.1).fell  # one step shows nothing
    assert loss_health(falling, 0.1).relative_drop == pytest.approx((3.0 - np.mean(falling[-4:])) / np.mean(falling[:4]),
                                                                     rel=0.05)
    with caplog.at_level(logging.INFO, logger="synthctx.train"):
        warn_if_loss_did_not_fall(falling, 0.1, "m/mdqa/real_full")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="synthctx.train"):
        warn_if_loss_did_not_fall(flat, 0.1, "m/mdqa/symbolic")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "m/mdqa/symbolic" in warnings[0] and "did not fall" in warnings[0]


def _curve(losses):
    return pd.DataFrame({"step": np.arange(1, len(losses) + 1, dtype=np.int32), "epoch": np.linspace(0.1, 1, len(losses)),
                         "loss": losses, "learning_rate": 1e-3, "target_tokens": np.int64(10),
                         "seconds": np.arange(len(losses), dtype=float)})


def test_training_curves_figure_and_table_extras(tmp_path, caplog):
    falling, flat = _curve(np.linspace(3.0, 0.8, 20)), _curve(np.full(20, 2.0))
    with caplog.at_level(logging.INFO, logger="synthctx.train"):
        checks = plot_training_curves({"mdqa": {"real_full": falling, "symbolic": flat}}, tmp_path / "curves.png",
                                      "m", 0.1)
    assert [c.fell for c in checks] == [True, False]
    assert (tmp_path / "curves.png").stat().st_size > 5000
    assert any("m/mdqa/symbolic" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)

    # task_extras reads sizes from the curves' metadata and scores the trivial baseline.
    evals = [qa_example(10, "Paris", "eval"), qa_example(11, "Rome", "eval")]
    train = [qa_example(0, "Rome"), qa_example(1, "Rome"), qa_example(2, "Paris")]
    write_examples(evals, str(tmp_path / "eval.parquet"))
    write_examples(train, str(tmp_path / "real_full.parquet"))
    paths = {}
    for condition, frame, n in (("real_full", falling, 3), ("symbolic", flat, 7)):
        paths[condition] = str(tmp_path / f"curve_{condition}.parquet")
        write_table(frame, paths[condition], "train_curve", provenance(summary={"examples": n}))
    extras = task_extras("mdqa", str(tmp_path / "eval.parquet"), str(tmp_path / "real_full.parquet"), paths, 0.1)
    assert extras.trivial_scores == {"q10": 0.0, "q11": 1.0}
    assert extras.train_examples == {"real_full": 3, "symbolic": 7}
    assert extras.loss_fell == {"real_full": True, "symbolic": False}


def test_answer_budget_must_hold_the_longest_gold_target(smollm_tokenizer):
    from synthctx.evaluate.run import check_answer_budget
    from synthctx.schema import ArtifactError

    gold = [str(k) for k in range(1, 12)]
    long_list = summhay_example(0, n_docs=12, gold=gold)  # [1][2]...[11]: the list a 48-token cut ended
    short = summhay_example(1, n_docs=12, gold=["3"])
    needed = check_answer_budget([short, long_list], smollm_tokenizer, 64, "eval.parquet")
    assert needed == len(smollm_tokenizer(long_list["target"], add_special_tokens=False)["input_ids"]) + 1
    with pytest.raises(ArtifactError, match=r"eval.parquet: example 's0'.*needs \d+ tokens.*"
                                            r"evaluate.max_new_tokens.summhay = 8"):
        check_answer_budget([short, long_list], smollm_tokenizer, 8, "eval.parquet")
    assert check_answer_budget([short], smollm_tokenizer, 8, "eval.parquet") <= 8
