"""Validation of SummHay insight paraphrases: near copies of the templated statement are rejects."""

from __future__ import annotations

import json
import re

import pytest

from synthctx.synth.backends import GenerationParams
from fakes import FakeBackend
from synthctx.synth.pool import generate_pool, template_overlap, validate_output
from synthctx.synth.topics import Insight

INSIGHT = Insight("topic0-duration-0", "the Dranholt harbour strike", "duration",
                  "How long did the Dranholt harbour strike last?", "Brae Tol", "42")
STATEMENT = "Brae Tol reported that the Dranholt harbour strike lasted 42 days."  # INSIGHT.statement()
ITEM = {"pool_id": "summhay-topic0-duration-0", "kind": "insight_prose",
        "fields": {"insight": INSIGHT.to_dict(), "topic_id": "topic0"}}
MAX_OVERLAP = 0.8  # config.yaml generation.max_template_overlap


def sentence(text: str) -> str:
    return json.dumps({"sentence": text})


def test_template_overlap_values():
    assert INSIGHT.statement() == STATEMENT
    assert template_overlap(STATEMENT, INSIGHT) == 1.0
    # Case, punctuation and a clause around the statement do not hide the copy.
    assert template_overlap("brae tol reported, that the Dranholt harbour strike lasted 42 days, longer than expected",
                            INSIGHT) == 1.0
    # Slots: key, topic and number are one word each, so the statement has 7 words.
    assert template_overlap("Brae Tol stated that the Dranholt harbour strike lasted 42 days.", INSIGHT) == \
        pytest.approx(6 / 7)
    assert template_overlap("According to Brae Tol, the Dranholt harbour strike lasted 42 days.", INSIGHT) == \
        pytest.approx(5 / 7)
    assert template_overlap("For 42 days the Dranholt harbour strike went on, Brae Tol told reporters.", INSIGHT) == \
        pytest.approx(2 / 7)


def test_insight_copies_rejected_with_their_own_reason():
    verbatim = validate_output(ITEM, sentence(STATEMENT), MAX_OVERLAP)
    assert verbatim == (STATEMENT, {"template_overlap": 1.0}, "template_overlap")
    # The generator's habit: the statement, then an invented clause.
    extended = validate_output(ITEM, sentence(STATEMENT[:-1] + ", longer than anyone expected."), MAX_OVERLAP)
    assert extended[2] == "template_overlap"
    one_word = validate_output(ITEM, sentence(STATEMENT.replace("reported", "stated")), MAX_OVERLAP)
    assert one_word[2] == "template_overlap" and one_word[1]["template_overlap"] == pytest.approx(0.8571)
    inserted = validate_output(ITEM, sentence(STATEMENT.replace("reported", "has reported")), MAX_OVERLAP)
    assert inserted[2] == "template_overlap"
    paraphrase = "For 42 days the Dranholt harbour strike went on, Brae Tol told reporters."
    assert validate_output(ITEM, sentence(paraphrase), MAX_OVERLAP) == \
        (paraphrase, {"template_overlap": 0.2857}, None)
    # The bound is the config's: 1.0 keeps even a verbatim copy, a lower one rejects more.
    assert validate_output(ITEM, sentence(STATEMENT), 1.0)[2] is None
    assert validate_output(ITEM, sentence(paraphrase), 0.25)[2] == "template_overlap"
    # The earlier checks keep their reasons.
    assert validate_output(ITEM, sentence(STATEMENT.replace("42", "43")), MAX_OVERLAP)[2] == "missing_number"


class CopyingBackend(FakeBackend):
    """Answers every insight request with the prompt's templated statement (what SmolLM2 often does)."""

    def generate(self, prompts, params, request_ids=None):
        out = super().generate(prompts, params, request_ids)
        for i, prompt in enumerate(prompts):
            if m := re.search(r"^Statement: (.+)$", prompt, re.MULTILINE):
                out[i] = sentence(m.group(1))
        return out


def test_pool_counts_copies_and_resumes_only_under_the_same_bound(tmp_path):
    def run(bound):
        return generate_pool("summhay", CopyingBackend(), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=4), 40, tmp_path, "fake",
                             haystack_documents=10, max_template_overlap=bound)

    accepted, stats = run(1.0)
    insights = accepted["kind"] == "insight_prose"
    assert insights.sum() == 8 and (accepted.loc[insights, "status"] == "ok").all()
    assert not any(k.startswith("reject:template") for k in stats)
    # The finished shard was written under bound 1.0: under 0.8 none of its rows may be reused.
    rejected, stats = run(0.8)
    assert stats["resumed"] == 0
    assert (rejected.loc[insights, "status"] == "reject:template_overlap").all()
    assert stats["reject:template_overlap"] == 8 and stats["ok"] == len(rejected) - 8
    again, stats = run(0.8)
    assert stats["resumed"] == len(again) and again.equals(rejected)


def test_pool_script_passes_the_bound(monkeypatch, repo_root):
    """The rule's --max-template-overlap reaches build_pool_file (and from there validation)."""
    import runpy
    import sys

    import synthctx.synth.pool as pool

    seen = {}
    monkeypatch.setattr(pool, "build_pool_file", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(sys, "argv", ["synth_pool.py", "--task", "summhay", "--output", "o", "--model-dir", "m",
                                      "--generator-model", "g", "--backend", "hf", "--seed", "1", "--pool-size", "2",
                                      "--temperature", "0.8", "--top-p", "0.9", "--max-new-tokens", "8",
                                      "--max-template-overlap", "0.65"])
    runpy.run_path(str(repo_root / "workflow" / "scripts" / "synth_pool.py"), run_name="__main__")
    assert seen["max_template_overlap"] == 0.65 and seen["task"] == "summhay"
