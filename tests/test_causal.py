"""Knockout and patching interventions on tiny random models (fp32, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_llama
from synthctx.models.decoding import greedy_decode, greedy_decode_batch
from synthctx.causal.interventions import (
    attention_modules,
    capture_head_outputs,
    head_geometry,
    head_output_means,
    mask_heads,
)
from synthctx.causal.patching import HeadPatcher, patched_greedy_decode, patched_greedy_decode_batch, patched_logits

IDS = [3, 17, 5, 99, 42, 8, 64, 23, 11, 7]


def _lora(model, seed: int, targets=("q_proj", "k_proj", "v_proj")):
    """A PEFT LoRA model with non-zero B (so the adapter really changes the projections)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False, lora_dropout=0.0)
    return get_peft_model(model, cfg).eval()


@torch.no_grad()
def _logits(model, ids=IDS):
    return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]


@pytest.mark.parametrize("operator", ["uniform", "zero", "mean"])
def test_masking_no_heads_is_bit_identical(operator):
    model = tiny_llama()
    clean = _logits(model)
    means = torch.zeros(2, 4, 16)
    with mask_heads(model, [], operator, means):
        assert torch.equal(_logits(model), clean)
    with mask_heads(model, [(1, 2)], operator, means):
        assert not torch.equal(_logits(model), clean)
    # hooks are gone after the context
    assert torch.equal(_logits(model), clean)


def _cumulative_mean_reference(v: torch.Tensor, kv_head: int, head_dim: int, window: int | None = None):
    """Uniform attention over the visible prefix (or sliding window) = running mean of V."""
    values = v[0, :, kv_head * head_dim:(kv_head + 1) * head_dim].double()  # (T, D)
    rows = []
    for t in range(values.shape[0]):
        start = 0 if window is None else max(0, t - window + 1)
        rows.append(values[start:t + 1].mean(0))
    return torch.stack(rows)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("lora", [False, True])
def test_uniform_knockout_equals_mean_of_values(attn, lora):
    """A zeroed query gives uniform attention over visible positions, in prefill and cached decoding."""
    from synthctx.models.decoding import CachedRunner

    model = tiny_llama(num_layers=2, num_heads=4, num_kv_heads=2)
    model.config._attn_implementation = attn
    if lora:  # the hook must sit on the LoRA wrapper so the adapted query is zeroed too
        model = _lora(model, seed=5, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    geometry = head_geometry(model)
    attn1 = attention_modules(model)[1]
    v_out, o_in = [], []
    h1 = attn1.v_proj.register_forward_hook(lambda m, a, out: v_out.append(out.detach()))
    h2 = attn1.o_proj.register_forward_pre_hook(lambda m, a: o_in.append(a[0].detach()))
    try:
        with mask_heads(model, [(1, 2), (0, 1)], "uniform"):
            runner = CachedRunner(model)
            runner.step(IDS[:6])
            runner.step(IDS[6:7])
            runner.step(IDS[7:8])
    finally:
        h1.remove()
        h2.remove()
    values = torch.cat(v_out, dim=1)  # (1, 8, kv*D)
    outputs = torch.cat(o_in, dim=1)  # (1, 8, H*D)
    group = geometry.num_heads // geometry.num_kv_heads
    reference = _cumulative_mean_reference(values, 2 // group, geometry.head_dim)
    got = outputs[0, :, 2 * geometry.head_dim:3 * geometry.head_dim].double()
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=1e-5)
    # an unmasked head of the same layer is not uniform
    other = outputs[0, :, 0:geometry.head_dim].double()
    assert not torch.allclose(other, _cumulative_mean_reference(values, 0, geometry.head_dim), atol=1e-4)


def test_uniform_knockout_respects_sliding_window():
    model = tiny_llama(num_layers=1, num_heads=4, num_kv_heads=2, sliding_window=4)
    model.config._attn_implementation = "eager"
    geometry = head_geometry(model)
    attn0 = attention_modules(model)[0]
    v_out, o_in = [], []
    h1 = attn0.v_proj.register_forward_hook(lambda m, a, out: v_out.append(out.detach()))
    h2 = attn0.o_proj.register_forward_pre_hook(lambda m, a: o_in.append(a[0].detach()))
    try:
        with mask_heads(model, [(0, 3)], "uniform"):
            _logits(model)
    finally:
        h1.remove()
        h2.remove()
    reference = _cumulative_mean_reference(v_out[0], 1, geometry.head_dim, window=4)
    got = o_in[0][0, :, 3 * geometry.head_dim:].double()
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("operator", ["zero", "mean"])
def test_zero_and_mean_change_only_the_targeted_slice(operator):
    model = tiny_llama(num_layers=3)
    geometry = head_geometry(model)
    means = head_output_means(model, [IDS, IDS[:5]])
    with capture_head_outputs(model) as clean:
        _logits(model)
    # the reference means are the pooled per-position means of the clean head outputs
    with capture_head_outputs(model) as ref:
        _logits(model, IDS[:5])
    pooled = torch.cat([clean[0][0][0], ref[0][0][0]]).view(-1, geometry.num_heads, geometry.head_dim).mean(0)
    torch.testing.assert_close(means[0], pooled, atol=1e-6, rtol=1e-5)

    targeted = [0, 3]
    with mask_heads(model, [(1, h) for h in targeted], operator, means):
        with capture_head_outputs(model) as masked:
            _logits(model)
    d = geometry.head_dim
    assert torch.equal(masked[0][0], clean[0][0])  # upstream layer untouched
    before = clean[1][0][0].view(len(IDS), geometry.num_heads, d)
    after = masked[1][0][0].view(len(IDS), geometry.num_heads, d)
    for head in range(geometry.num_heads):
        if head in targeted:
            expected = torch.zeros(d) if operator == "zero" else means[1, head]
            assert torch.equal(after[:, head], expected.expand(len(IDS), d))
        else:
            assert torch.equal(after[:, head], before[:, head])


def test_mean_operator_requires_means():
    model = tiny_llama()
    with pytest.raises(ValueError, match="means"):
        with mask_heads(model, [(0, 0)], "mean"):
            pass
    with pytest.raises(ValueError, match="outside"):
        with mask_heads(model, [(5, 0)], "zero"):
            pass


def test_patching_layer_from_identical_copy_is_a_no_op():
    recipient = tiny_llama()
    donor = copy.deepcopy(recipient)
    clean = _logits(recipient)
    layer_heads = [(1, h) for h in range(4)]
    assert torch.equal(patched_logits(donor, recipient, IDS, layer_heads), clean)
    stops = {0}
    assert patched_greedy_decode(donor, recipient, IDS, layer_heads, 8, stops) == greedy_decode(recipient, IDS, 8, stops)


@pytest.mark.parametrize("lora_recipient", [False, True])
def test_patching_all_heads_reproduces_the_donor(lora_recipient):
    """Donor and recipient differ only in q/k/v: with every head patched the recipient IS the donor."""
    base = tiny_llama(num_layers=3, seed=1)
    donor = _lora(copy.deepcopy(base), seed=11)
    recipient = _lora(copy.deepcopy(base), seed=12) if lora_recipient else base
    all_heads = head_geometry(base).all_heads()
    donor_logits = _logits(donor)
    assert not torch.allclose(_logits(recipient), donor_logits, atol=1e-4)
    torch.testing.assert_close(patched_logits(donor, recipient, IDS, all_heads), donor_logits, atol=1e-5, rtol=1e-5)
    # lockstep decoding with KV caches: the patched recipient generates the donor's tokens
    assert patched_greedy_decode(donor, recipient, IDS, all_heads, 10, set()) == greedy_decode(donor, IDS, 10, set())


def test_lockstep_decoding_matches_full_recomputation():
    """Patching with caches equals patching the whole sequence at once (no stale positions)."""
    base = tiny_llama(num_layers=2, seed=2)
    donor = _lora(copy.deepcopy(base), seed=21)
    recipient = _lora(copy.deepcopy(base), seed=22)
    heads = [(0, 1), (1, 3), (1, 0)]
    generated = patched_greedy_decode(donor, recipient, IDS, heads, 6, set())
    full = patched_logits(donor, recipient, IDS + generated, heads)
    recomputed = full[len(IDS) - 1:-1].argmax(-1).tolist()
    assert recomputed == generated


def test_patcher_refuses_recipient_without_donor_run():
    recipient = tiny_llama()
    donor = copy.deepcopy(recipient)
    with HeadPatcher(donor, recipient, [(0, 0)]):
        with pytest.raises(RuntimeError, match="donor"):
            _logits(recipient)


def test_greedy_decode_matches_generate():
    model = tiny_llama()
    ours = greedy_decode(model, IDS, 8, set())
    ref = model.generate(torch.tensor([IDS]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                         pad_token_id=0, min_new_tokens=8)[0, len(IDS):].tolist()
    assert ours == ref
    # stop token ends generation before it is emitted
    assert greedy_decode(model, IDS, 8, {ours[2]}) == ours[:ours.index(ours[2])]


# Prompts of different lengths, so the batch is left-padded (pad id 0 also occurs as a token).
BATCH_PROMPTS = [IDS, [9, 4, 0, 31], [50, 2, 77, 13, 6, 90, 21, 3, 44, 18, 27, 1, 65, 8], [12]]


@pytest.mark.parametrize("sliding_window", [None, 5])
@pytest.mark.parametrize("operator", [None, "uniform", "zero", "mean"])
def test_batched_greedy_decoding_equals_one_prompt_at_a_time(operator, sliding_window):
    """Left padding, the mask and position ids give each row what it gets alone, under every
    knockout operator (the hooks act on padded positions too) and with a sliding window."""
    model = tiny_llama(num_layers=3, seed=4, sliding_window=sliding_window)
    means = head_output_means(model, BATCH_PROMPTS) if operator == "mean" else None
    heads = [(0, 1), (2, 3)] if operator else []
    with mask_heads(model, heads, operator or "zero", means):
        alone = [greedy_decode(model, p, 7, set()) for p in BATCH_PROMPTS]
        together = greedy_decode_batch(model, BATCH_PROMPTS, 7, set(), pad_id=0)
        # A stop id ends its own row only; the others run on to max_new_tokens.
        stop = {alone[1][2]}
        alone_stopped = [greedy_decode(model, p, 7, stop) for p in BATCH_PROMPTS]
        together_stopped = greedy_decode_batch(model, BATCH_PROMPTS, 7, stop, pad_id=0)
    assert together == alone
    assert together_stopped == alone_stopped
    assert len(alone_stopped[1]) < 7 and any(len(a) == 7 for a in alone_stopped)


def test_batched_patching_equals_one_prompt_at_a_time():
    base = tiny_llama(num_layers=3, seed=5)
    donor = _lora(copy.deepcopy(base), seed=31)
    recipient = _lora(copy.deepcopy(base), seed=32)
    for heads in ([], [(0, 1), (1, 3), (2, 0)], head_geometry(base).all_heads()):
        alone = [patched_greedy_decode(donor, recipient, p, heads, 6, set()) for p in BATCH_PROMPTS]
        assert patched_greedy_decode_batch(donor, recipient, BATCH_PROMPTS, heads, 6, set(), pad_id=0) == alone
    # Every head patched: the recipient decodes as the donor does.
    assert alone == [greedy_decode(donor, p, 6, set()) for p in BATCH_PROMPTS]
