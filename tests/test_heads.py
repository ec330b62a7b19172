"""Retrieval-head capture and scoring: exactness against eager attention, and the score arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_llama
from synthctx.heads.capture import greedy_decode, greedy_decode_batch, query_rows_argmax
from synthctx.heads.retrieval import (
    HeadScoreAccumulator,
    PreparedExample,
    TokenKeys,
    detect_heads,
    insight_example_score,
    retrieval_example_score,
    span_length_map,
)


def eager_reference(model, prompt_ids, max_new_tokens, stop_ids=()):
    """Greedy decoding with eager attention and output_attentions: argmax of the returned rows."""
    from transformers import DynamicCache

    from synthctx.heads.capture import cache_keyword

    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    cache = DynamicCache()
    step = torch.tensor([list(prompt_ids)])
    tokens, rows, logits = [], [], []
    try:
        with torch.no_grad():
            for _ in range(max_new_tokens):
                out = model(input_ids=step, use_cache=True, output_attentions=True, **{cache_keyword(model): cache})
                token = int(out.logits[0, -1].argmax())
                if token in stop_ids:
                    break
                tokens.append(token)
                logits.append(out.logits[0, -1])
                rows.append(torch.stack([a[0, :, -1, :].argmax(-1) for a in out.attentions]))
                step = torch.tensor([[token]])
    finally:
        model.set_attn_implementation(before)
    return tokens, torch.stack(rows), logits


@pytest.mark.parametrize(
    "shape",
    [
        dict(num_layers=2, num_heads=4, num_kv_heads=2),  # Llama, GQA
        dict(num_layers=2, num_heads=4, num_kv_heads=1, sliding_window=12),  # Mistral, window < sequence
        dict(num_layers=3, num_heads=6, num_kv_heads=3, seed=3),
    ],
)
def test_capture_matches_eager(shape):
    torch.manual_seed(1)
    model = tiny_llama(**shape)
    model.set_attn_implementation("sdpa")
    prompt = torch.randint(0, 128, (48,)).tolist()
    captured = greedy_decode(model, prompt, max_new_tokens=12)
    tokens, rows, _ = eager_reference(model, prompt, 12)
    assert captured.tokens == tokens
    assert torch.equal(captured.argmax, rows)
    assert model.config._attn_implementation == "sdpa"  # restored
    if shape.get("sliding_window"):  # the window really excludes early keys
        assert int(captured.argmax.min()) > len(prompt) - 1 - shape["sliding_window"]


def test_capture_does_not_change_logits():
    model = tiny_llama(num_layers=2, num_heads=4, num_kv_heads=2, seed=5)
    model.set_attn_implementation("sdpa")
    prompt = torch.randint(0, 128, (30,)).tolist()
    plain = greedy_decode(model, prompt, 8, capture=False)
    with_capture = greedy_decode(model, prompt, 8, capture=True)
    assert plain.tokens == with_capture.tokens
    assert plain.argmax.shape[0] == 0
    # logits of one forward with and without the capture function
    from synthctx.heads.capture import attention_implementation, capture_implementation

    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with attention_implementation(model, capture_implementation("sdpa")):
            got = model(input_ids=ids).logits
    assert torch.equal(ref, got)


def test_stop_tokens_end_decoding():
    model = tiny_llama(seed=2)
    prompt = torch.randint(0, 128, (20,)).tolist()
    full = greedy_decode(model, prompt, 6)
    stopped = greedy_decode(model, prompt, 6, stop_ids={full.tokens[2]})
    first = full.tokens.index(full.tokens[2])
    assert stopped.tokens == full.tokens[:first]
    assert stopped.stopped_by == "stop_token" and stopped.argmax.shape[0] == first


def test_capture_with_lora_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(seed=4)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"], init_lora_weights=False))
    peft_model.eval()
    prompt = torch.randint(0, 128, (32,)).tolist()
    captured = greedy_decode(peft_model, prompt, 6)
    tokens, rows, _ = eager_reference(peft_model.get_base_model(), prompt, 6)
    assert captured.tokens == tokens and torch.equal(captured.argmax, rows)


def test_query_rows_argmax_causality_window_ties_and_gqa():
    # 2 query heads sharing 1 KV head; 5 cached keys, all scores tie -> lowest visible position
    queries = torch.zeros(3, 2, 4)
    key = torch.zeros(1, 1, 5, 4)
    positions = torch.tensor([2, 3, 4])
    assert query_rows_argmax(queries, key, positions).tolist() == [[0, 0]] * 3
    # sliding window 2: a row at position p sees p-1 and p only
    assert query_rows_argmax(queries, key, positions, sliding_window=2).tolist() == [[1, 1], [2, 2], [3, 3]]
    # a cache whose index 0 is absolute position 4 (key_offset): positions are absolute
    assert query_rows_argmax(queries[:1], key, torch.tensor([8]), key_offset=4).tolist() == [[4, 4]]
    # causality: the largest score at a future key is never chosen
    key = torch.zeros(1, 1, 5, 4)
    key[0, 0, 4, 0] = 10.0
    key[0, 0, 1, 0] = 1.0
    queries = torch.zeros(2, 2, 4)
    queries[:, 0, 0] = 1.0  # head 0 prefers larger key[.., 0]; head 1 (zero query) ties -> 0
    assert query_rows_argmax(queries, key, torch.tensor([3, 4])).tolist() == [[1, 0], [4, 0]]
    # more KV groups, rows chunked: equals a per-row reference
    torch.manual_seed(0)
    queries, key = torch.randn(7, 6, 8), torch.randn(1, 3, 20, 8)
    positions = torch.arange(13, 20)
    import synthctx.heads.capture as capture

    old, capture.SCORE_BLOCK_BYTES = capture.SCORE_BLOCK_BYTES, 1  # one row per chunk
    try:
        chunked = query_rows_argmax(queries, key, positions, sliding_window=9)
    finally:
        capture.SCORE_BLOCK_BYTES = old
    expected = []
    for q, p in zip(queries, positions.tolist()):
        k = key[0].repeat_interleave(2, dim=0)  # (6, 20, 8)
        s = torch.einsum("hd,hkd->hk", q, k)
        visible = (torch.arange(20) <= p) & (torch.arange(20) > p - 9)
        expected.append(s.masked_fill(~visible, float("-inf")).argmax(-1))
    assert torch.equal(chunked, torch.stack(expected))


@pytest.mark.slow
def test_capture_on_embedded_model(smollm_dir, smollm_tokenizer):
    from synthctx.models.loading import load_model

    model = load_model(str(smollm_dir))
    text = smollm_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Document [1] The capital of Norway is Oslo.\nQuestion: What is the capital of Norway?"}],
        tokenize=False, add_generation_prompt=True,
    )
    prompt = smollm_tokenizer(text, add_special_tokens=False)["input_ids"]
    captured = greedy_decode(model, prompt, 5)
    tokens, rows, _ = eager_reference(model, prompt, 5)
    assert captured.tokens == tokens
    assert torch.equal(captured.argmax, rows)


# ---------------------------------------------------------------- score arithmetic


def test_span_length_map():
    assert span_length_map([(2, 5), (4, 7)], 8).tolist() == [0, 0, 3, 3, 3, 3, 3, 0]


def test_retrieval_score_hand_built():
    # prompt: needle span [3, 7) holds tokens 10 11 12 13; token 11 also occurs outside at 1.
    prompt = [5, 11, 6, 10, 11, 12, 13, 7]
    tokens = [10, 11, 99, 13]
    # one layer, three heads; rows = steps
    argmax = np.array(
        [
            [[3, 0, 3]],  # head0 copies 10 (+1/4); head1 outside; head2 copies 10
            [[4, 1, 4]],  # head0 copies 11; head1 looks at the 11 outside the needle (no credit)
            [[5, 5, 5]],  # token 99 does not equal prompt[5] = 12: no credit
            [[6, 6, 9]],  # head0, head1 copy 13; head2 looks past the prompt (generated)
        ]
    )
    score = retrieval_example_score(prompt, [(3, 7)], tokens, argmax)
    assert score.shape == (1, 3)
    np.testing.assert_allclose(score, [[0.75, 0.25, 0.5]])


def test_normalized_token_match(smollm_tokenizer):
    tok = smollm_tokenizer
    spaced = tok(" Paris", add_special_tokens=False)["input_ids"]
    bare = tok("Paris", add_special_tokens=False)["input_ids"]
    assert spaced != bare and len(spaced) == 1 and len(bare) == 1
    prompt = [tok.eos_token_id] + spaced
    argmax = np.array([[[1]]])
    assert retrieval_example_score(prompt, [(1, 2)], bare, argmax, TokenKeys("exact"))[0, 0] == 0
    assert retrieval_example_score(prompt, [(1, 2)], bare, argmax, TokenKeys("normalized", tok))[0, 0] == 1.0


def test_insight_score_is_fraction_of_citation_steps():
    # document 1's insight at [2, 4), document 3's at [6, 8); steps 0 and 3 cite nothing
    spans = {1: [(2, 4)], 3: [(6, 8)]}
    cited = [frozenset(), frozenset({1}), frozenset({3}), frozenset(), frozenset({1, 3})]
    argmax = np.array([[[2, 0]], [[3, 6]], [[6, 2]], [[0, 0]], [[7, 9]]])
    np.testing.assert_allclose(insight_example_score(spans, cited, argmax, 10), [[1.0, 0.0]])
    assert insight_example_score(spans, [frozenset()] * 5, argmax, 10).tolist() == [[0.0, 0.0]]


def test_success_only_rule():
    acc = HeadScoreAccumulator((1, 2))
    acc.add(np.array([[1.0, 0.0]]), counts=True)
    acc.add(np.array([[0.0, 1.0]]), counts=False)
    acc.add(np.array([[0.5, 0.0]]), counts=True)
    np.testing.assert_allclose(acc.scores(), [[0.75, 0.0]])
    assert (acc.n_examples, acc.n_seen) == (2, 3)
    assert HeadScoreAccumulator((1, 1)).scores().tolist() == [[0.0]]


@pytest.mark.parametrize(
    "shape",
    [
        dict(num_layers=2, num_heads=4, num_kv_heads=2),  # Llama, GQA
        dict(num_layers=2, num_heads=4, num_kv_heads=1, sliding_window=12),  # Mistral, window < sequence
    ],
)
def test_batched_capture_equals_one_prompt_at_a_time(shape):
    """Left-padded rows get their own tokens and argmax positions (pads never chosen, positions
    counted without them), also when one row stops early."""
    torch.manual_seed(2)
    model = tiny_llama(**shape)
    model.set_attn_implementation("sdpa")
    prompts = [torch.randint(1, 128, (n,)).tolist() for n in (48, 30, 55, 20)]
    alone = [greedy_decode(model, p, 10) for p in prompts]
    stop = {alone[1].tokens[3]}
    alone_stopped = [greedy_decode(model, p, 10, stop) for p in prompts]
    for expected, stop_ids in ((alone, ()), (alone_stopped, stop)):
        together = greedy_decode_batch(model, prompts, 10, stop_ids, pad_id=0)
        for a, b in zip(together, expected):
            assert (a.prompt_length, a.tokens, a.stopped_by) == (b.prompt_length, b.tokens, b.stopped_by)
            assert torch.equal(a.argmax, b.argmax)
    assert alone_stopped[1].stopped_by == "stop_token" and len(alone_stopped[1].tokens) < 10
    assert model.config._attn_implementation == "sdpa"  # restored


def test_detect_heads_success_only_and_all():
    model = tiny_llama(seed=7)
    prompts = [torch.randint(0, 128, (24,)).tolist() for _ in range(3)]
    # Needle = the whole prompt, so every head whose argmax token equals the generated token scores.
    prepared = [PreparedExample(str(i), p, {"retrieval": [(0, len(p))]}, {"ok": i != 1}) for i, p in enumerate(prompts)]
    scorer = lambda prediction, ex: 1.0 if ex["ok"] else 0.0  # noqa: E731

    class Tok:
        eos_token_id = None

        def get_vocab(self):
            return {}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    only = detect_heads(model, Tok(), prepared, max_new_tokens=5, success_only=True, scorer=scorer)
    every = detect_heads(model, Tok(), prepared, max_new_tokens=5, success_only=False, scorer=scorer)
    assert only.n_examples["retrieval"] == 2 and every.n_examples["retrieval"] == 3
    singles = [detect_heads(model, Tok(), [p], max_new_tokens=5, success_only=False).scores["retrieval"] for p in prepared]
    np.testing.assert_allclose(only.scores["retrieval"], (singles[0] + singles[2]) / 2)
    np.testing.assert_allclose(every.scores["retrieval"], sum(singles) / 3)
    batched = detect_heads(model, Tok(), prepared, max_new_tokens=5, success_only=True, scorer=scorer, batch_size=2)
    np.testing.assert_array_equal(batched.scores["retrieval"], only.scores["retrieval"])
    assert batched.per_example == only.per_example


def test_prepare_summhay_example_spans(smollm_tokenizer):
    from synthctx.data.examples import make_example, validate_example
    from synthctx.data.prompts import citation_span_in_header, citation_target
    from synthctx.heads.retrieval import head_kinds_of, prepare_example

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
        {"doc_id": "1", "start": citation_span_in_header(1)[0], "end": citation_span_in_header(1)[1], "kind": "citation"},
        {"doc_id": "3", "start": citation_span_in_header(3)[0], "end": citation_span_in_header(3)[1], "kind": "citation"},
    ]
    ex = make_example(example_id="s1", task="summhay", condition="real", split="eval", documents=docs,
                      question=insight, answers=[citation_target(["1", "3"])], target=citation_target(["1", "3"]),
                      gold_doc_ids=["1"], needles=needles, meta={"query": "prices"})
    validate_example(ex)
    prepared = prepare_example(ex, smollm_tokenizer, head_kinds_of("summhay"))
    decode = lambda span: smollm_tokenizer.decode(prepared.prompt_ids[span[0]:span[1]])  # noqa: E731
    assert [decode(s).strip() for s in prepared.spans["retrieval"]] == ["1", "3"]
    # insight spans only in gold documents (here only doc 1 is marked gold)
    assert len(prepared.spans["insight"]) == 1 and decode(prepared.spans["insight"][0]).strip() == insight


def test_success_metric_choice():
    from synthctx.heads.retrieval import default_scorer, success_metric_of

    example = {"example_id": "x", "answers": ["Paris"], "target": "Paris"}
    prediction = "The capital of France is Paris, a large city."
    assert default_scorer("mdqa")(prediction, example) < 0.5  # token F1
    assert default_scorer("mdqa", "best_subspan_em")(prediction, example) == 1.0
    with pytest.raises(ValueError):
        default_scorer("mdqa", "nope")(prediction, example)
    assert success_metric_of({"success_metric": {"mdqa": "best_subspan_em"}}, "musique") == "score"
    assert success_metric_of({"success_metric": "em"}, "musique") == "em"
