"""Scoring rules of head detection (issue 14, defects 4, 7, 8): token equality across
tokenizers, insight heads tied to the cited document, NIAH scored on the needle's answer part.

Decoding is scripted (:func:`scripted_decoder`): each prompt gets hand-built generated tokens
and per-head argmax positions, so the scores are known exactly and go through ``detect_heads``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from synthctx.heads.capture import DecodeResult
from synthctx.heads.retrieval import PreparedExample, TokenKeys, detect_heads, retrieval_example_score


def scripted_decoder(monkeypatch, scripts: dict[tuple[int, ...], tuple[list[int], list[list[int]]]], heads: int):
    """Replace greedy decoding: prompt -> (generated tokens, argmax rows of one layer)."""
    import synthctx.heads.capture as capture

    def decode(model, prompt, max_new_tokens, stop_ids=(), capture=True, base_implementation=None):
        tokens, rows = scripts[tuple(int(t) for t in prompt)]
        argmax = torch.tensor(rows, dtype=torch.long).reshape(len(tokens), 1, heads)
        return DecodeResult(len(prompt), list(tokens), argmax, "stop_token")

    monkeypatch.setattr(capture, "greedy_decode", decode)
    monkeypatch.setattr(capture, "model_shape", lambda model: (1, heads))
    monkeypatch.setattr(capture, "stop_token_ids", lambda tokenizer, model=None: set())


@pytest.fixture(scope="module")
def sentencepiece_tokenizer():
    """A tiny Mistral-style (SentencePiece: Metaspace "▁" words) tokenizer, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>", "▁The", "▁capital", "▁is", "▁Paris", "Paris", ".", "▁(", ")", "▁",
              "P", "a", "r", "i", "s"]
    model = models.Unigram([(p, 0.0 if p.startswith("<") else -float(10 - len(p))) for p in pieces], unk_id=0)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- defect 4: token equality


def copy_the_answer(tokenizer, monkeypatch, token_match):
    """Context "The capital ... is Paris."; the model answers "Paris" at the start of its turn
    and its one head looks at the context's "Paris" token: (score, creditable share)."""
    prompt = ids(tokenizer, "The capital is Paris.")
    position = next(i for i, t in enumerate(prompt) if tokenizer.decode([t]).strip() == "Paris")
    answer = ids(tokenizer, "Paris")  # as generated: no preceding space
    scripted_decoder(monkeypatch, {tuple(prompt): (answer, [[position]])}, heads=1)
    prepared = [PreparedExample("x", prompt, {"retrieval": [(position, position + 1)]}, {})]
    result = detect_heads(None, tokenizer, prepared, max_new_tokens=4, success_only=False, token_match=token_match)
    return float(result.scores["retrieval"][0, 0]), result.creditable_share["retrieval"]


def test_exact_match_depends_on_the_tokenizer_normalized_does_not(smollm_tokenizer, sentencepiece_tokenizer,
                                                                  monkeypatch):
    # byte-level BPE (SmolLM2, like Llama-3): "Paris" and " Paris" are different ids
    assert ids(smollm_tokenizer, "Paris") != ids(smollm_tokenizer, " Paris")
    # SentencePiece (like Mistral): both are "▁Paris"
    assert ids(sentencepiece_tokenizer, "Paris") == ids(sentencepiece_tokenizer, " Paris")
    assert copy_the_answer(smollm_tokenizer, monkeypatch, "exact") == (0.0, 0.0)
    assert copy_the_answer(sentencepiece_tokenizer, monkeypatch, "exact") == (1.0, 1.0)
    # one rule, the same score for both kinds of tokenizer
    assert copy_the_answer(smollm_tokenizer, monkeypatch, "normalized") == (1.0, 1.0)
    assert copy_the_answer(sentencepiece_tokenizer, monkeypatch, "normalized") == (1.0, 1.0)


def test_normalized_keys(smollm_tokenizer, sentencepiece_tokenizer):
    tok = smollm_tokenizer
    keys = TokenKeys("normalized", tok)
    assert keys.key(ids(tok, " Paris")[0]) == keys.key(ids(tok, "Paris")[0])
    assert keys.key(ids(tok, " paris")[0]) != keys.key(ids(tok, " Paris")[0])  # case kept
    # whitespace-only tokens never match, not even themselves
    newline = ids(tok, " \n")
    assert len(newline) == 1 and keys.key(newline[0]) == TokenKeys.NEVER
    assert retrieval_example_score(newline, [(0, 1)], newline, np.array([[[0]]]), keys)[0, 0] == 0
    assert retrieval_example_score(newline, [(0, 1)], newline, np.array([[[0]]]), TokenKeys("exact"))[0, 0] == 1
    # two byte pieces of one character both decode to U+FFFD: each matches only itself
    pieces = ids(tok, "日本")[:2]
    assert [tok.decode([p]) for p in pieces] == ["\ufffd", "\ufffd"] and pieces[0] != pieces[1]
    assert keys.key(pieces[0]) != keys.key(pieces[1]) and keys.key(pieces[0]) == keys.key(pieces[0])
    # SentencePiece: a word-initial "▁Paris" and an in-word "Paris" piece
    sp = sentencepiece_tokenizer
    inner = ids(sp, "The capital is (Paris).")
    assert sp.convert_ids_to_tokens(inner)[4] == "Paris"
    sp_keys = TokenKeys("normalized", sp)
    assert inner[4] != ids(sp, "Paris")[0] and sp_keys.key(inner[4]) == sp_keys.key(ids(sp, "Paris")[0])


def test_token_match_names():
    assert TokenKeys("stripped", object()).token_match == "normalized"  # the earlier name stays valid
    with pytest.raises(ValueError, match="heads.token_match"):
        TokenKeys("fuzzy")
    with pytest.raises(ValueError, match="needs the tokenizer"):
        TokenKeys("normalized")


def test_creditable_share_logged_and_stored(smollm_tokenizer, monkeypatch, caplog):
    tok = smollm_tokenizer
    prompt = ids(tok, "Answer: the river Thames flows.")
    span = (2, 5)  # " the river Thames"
    # generated: "river" (bare, matches " river"), " Thames" (copied), " flows" (outside the span)
    generated = ids(tok, "river") + ids(tok, " Thames") + ids(tok, " flows")
    assert len(generated) == 3 and tok.decode(prompt[2:5]) == " the river Thames"
    from synthctx.heads.retrieval import creditable_steps

    assert creditable_steps(prompt, [span], generated, TokenKeys("normalized", tok)) == 2
    assert creditable_steps(prompt, [span], generated, TokenKeys("exact")) == 1
    other = ids(tok, "Nothing here.")
    scripted_decoder(monkeypatch, {tuple(prompt): (generated, [[0]] * 3), tuple(other): (ids(tok, " river"), [[0]])},
                     heads=1)
    prepared = [PreparedExample("a", prompt, {"retrieval": [span]}, {}),
                PreparedExample("b", other, {"retrieval": []}, {})]  # no needle: not in the share
    with caplog.at_level(logging.INFO, logger="synthctx.heads"):
        result = detect_heads(None, tok, prepared, max_new_tokens=4, success_only=False, token_match="normalized")
    assert result.creditable_share == {"retrieval": pytest.approx(2 / 3)}
    assert result.token_match == "normalized"
    assert [r["retrieval_creditable"] for r in result.per_example] == [2, 0]
    assert any("2 of 3 generated tokens (66.7%)" in m and "token_match=normalized" in m for m in caplog.messages)


def test_shipped_configs_use_the_normalized_rule():
    from snakemake.utils import update_config, validate

    for extra in (None, "config/gpu-small.yaml", "config/paper.yaml", "tests/configs/tiny.yaml"):
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        if extra:
            update_config(config, yaml.safe_load((REPO / extra).read_text()))
        assert config["heads"]["token_match"] == "normalized", extra
    config["heads"]["token_match"] = "stripped"  # the earlier name still validates
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))


# ---------------------------------------------------------------- defect 7: insight heads


def test_cited_per_step(smollm_tokenizer):
    from synthctx.heads.retrieval import cited_per_step, generated_text_offsets

    tok = smollm_tokenizer

    def cited(text):
        return [sorted(c) for c in cited_per_step(*generated_text_offsets(tok, ids(tok, text)))]

    assert [tok.decode([t]) for t in ids(tok, "[12][31]")] == ["[", "1", "2", "][", "3", "1", "]"]
    assert cited("[12][31]") == [[], [12], [12], [], [31], [31], []]  # both digit tokens: the whole number
    assert cited("[3] [7]") == [[], [3], [], [], [7], []]
    assert cited("See 4 and [5") == [[]] * (len(ids(tok, "See 4 and [5")) - 1) + [[5]]  # unclosed: still cites 5
    assert cited("no citation") == [[], []]


def summhay_example():
    from synthctx.data.examples import make_example, validate_example
    from synthctx.data.prompts import citation_target

    insight = "Prices rose sharply in spring."
    docs = [
        {"doc_id": "1", "title": "", "text": "Weather was calm. " + insight},
        {"doc_id": "2", "title": "", "text": "Nothing happened here."},
        {"doc_id": "3", "title": "", "text": insight + " Then it rained."},
    ]
    start1 = docs[0]["text"].index(insight)
    needles = [
        {"doc_id": "1", "start": start1, "end": start1 + len(insight), "kind": "insight"},
        {"doc_id": "3", "start": 0, "end": len(insight), "kind": "insight"},
    ]
    ex = make_example(example_id="s1", task="summhay", condition="real", split="eval", documents=docs,
                      question=insight, answers=[citation_target(["1", "3"])], target=citation_target(["1", "3"]),
                      gold_doc_ids=["1", "3"], needles=needles, meta={"query": "prices"})
    validate_example(ex)
    return ex


def test_insight_heads_credit_only_the_cited_document(smollm_tokenizer, monkeypatch):
    from synthctx.heads.retrieval import prepare_example

    tok = smollm_tokenizer
    prepared = prepare_example(summhay_example(), tok, {"insight": ("insight",)})
    (a1, _), (a3, _) = sorted(prepared.spans["insight"])  # doc 1's and doc 3's insight spans
    generated = ids(tok, "[1][3]")
    assert [tok.decode([t]) for t in generated] == ["[", "1", "][", "3", "]"]
    rows = [  # heads: tied to the cited document | the other gold document's insight | at brackets
        [0, 0, a1],   # "["
        [a1, a3, 0],  # "1": cites document 1
        [0, 0, a3],   # "]["
        [a3, a1, 0],  # "3": cites document 3
        [0, 0, 0],    # "]"
    ]
    scripted_decoder(monkeypatch, {tuple(prepared.prompt_ids): (generated, rows)}, heads=3)
    result = detect_heads(None, tok, [prepared], max_new_tokens=8, success_only=False)
    # old rule (any gold insight span, over all 5 steps): 0.4 for every head
    np.testing.assert_allclose(result.scores["insight"], [[1.0, 0.0, 0.0]])
    assert result.n_examples["insight"] == 1 and result.creditable_share["insight"] == pytest.approx(2 / 5)


def test_insight_heads_citing_a_non_gold_document(smollm_tokenizer, monkeypatch):
    from synthctx.heads.retrieval import prepare_example

    tok = smollm_tokenizer
    prepared = prepare_example(summhay_example(), tok, {"insight": ("insight",)})
    (a1, _), _ = sorted(prepared.spans["insight"])
    generated = ids(tok, "[1][2]")  # document 2 is not gold: no insight span, no head credited
    rows = [[0], [a1], [0], [a1], [0]]
    no_citation = ids(tok, "none")
    other = PreparedExample("s2", prepared.prompt_ids + [0], prepared.spans, prepared.example,
                            prepared.insight_by_citation)
    scripted_decoder(monkeypatch, {tuple(prepared.prompt_ids): (generated, rows),
                                   tuple(other.prompt_ids): (no_citation, [[a1]] * len(no_citation))}, heads=1)
    result = detect_heads(None, tok, [prepared, other], max_new_tokens=8, success_only=False)
    np.testing.assert_allclose(result.scores["insight"], [[0.5]])
    assert result.n_examples["insight"] == 1  # the example citing nothing does not count


# ---------------------------------------------------------------- defect 8: NIAH span


def test_niah_answers_occur_in_their_needles():
    from synthctx.heads.niah import NEEDLES

    for needle, question, answer in NEEDLES:
        assert answer in needle, needle


def test_niah_head_copying_the_whole_answer_scores_one(smollm_tokenizer, monkeypatch):
    from synthctx.heads.niah import NEEDLES, build_niah_example, detect_niah_heads

    tok = smollm_tokenizer
    example = build_niah_example(tok, 0, 128, 0.5, seed=3)
    needle, _, answer = NEEDLES[0]
    # the answer's tokens in the prompt, found independently of the module under test
    text = tok.decode(example.prompt_ids)
    start = text.index(needle) + needle.index(answer)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    answer_positions = [i for i, (a, b) in enumerate(offsets) if a < start + len(answer) and b > start and b > a]
    sentence_start = text.index(needle)
    sentence = [i for i, (a, b) in enumerate(offsets) if a < sentence_start + len(needle) and b > sentence_start]
    assert len(sentence) > len(answer_positions) >= 2
    generated = [example.prompt_ids[i] for i in answer_positions]
    # head 0 copies every answer token; head 1 looks at the sentence's first (non-answer) token
    rows = [[p, sentence[0]] for p in answer_positions]
    scripted_decoder(monkeypatch, {tuple(example.prompt_ids): (generated, rows)}, heads=2)
    result = detect_niah_heads(None, tok, [example], max_new_tokens=16, success_only=True, success_threshold=0.5)
    # old span (the whole sentence): len(answer) / len(sentence) ~ 0.2 for head 0
    np.testing.assert_allclose(result.scores["niah"], [[1.0, 0.0]])
    assert example.answer_span == (answer_positions[0], answer_positions[-1] + 1)
