"""Fine-tuning: target-only labels, LoRA placement, loss decrease, and exact kill/resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from synthctx.data.examples import make_example
from synthctx.data.prompts import training_ids
from synthctx.schema import read_table
from synthctx.train.lora import (
    StopTraining,
    TrainSettings,
    attach_lora,
    micro_batch_plan,
    optimizer_steps,
    target_token_loss,
    train_condition,
)

from conftest import tiny_llama


def qa_examples(n: int, task: str = "mdqa", condition: str = "real_full"):
    out = []
    for i in range(n):
        answer = ["Paris", "Rome", "Oslo", "Lima"][i % 4]
        docs = [
            {"doc_id": "d0", "title": "Filler", "text": "The grass is green. The sky is blue."},
            {"doc_id": "d1", "title": f"City {i}", "text": f"The capital of land {i} is {answer}."},
        ]
        start = docs[1]["text"].index(answer)
        out.append(make_example(
            example_id=f"{task}-{i}", task=task, condition=condition, split="train", documents=docs,
            question=f"What is the capital of land {i}?", answers=[answer], target=answer, gold_doc_ids=["d1"],
            needles=[{"doc_id": "d1", "start": start, "end": start + len(answer), "kind": "answer"}],
        ))
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm_tokenizer):
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template, saved as a model directory."""
    path = tmp_path_factory.mktemp("tiny_llama")
    model = tiny_llama(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=len(smollm_tokenizer))
    model.config.max_position_embeddings = 2048
    model.save_pretrained(path)
    smollm_tokenizer.save_pretrained(path)
    return str(path)


SPEC = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 1024}
SETTINGS = TrainSettings(
    method="lora", lora={"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    learning_rate=5e-3, epochs=2, batch_size=1, gradient_accumulation=2, warmup_ratio=0.25, weight_decay=0.0,
    max_grad_norm=1.0, checkpoint_every=1, gradient_checkpointing=False, cpu_autocast=None,
)


def test_only_target_tokens_carry_labels(smollm_tokenizer):
    ex = qa_examples(1)[0]
    ids, labels = training_ids(ex, smollm_tokenizer)
    labelled = [t for t, lab in zip(ids, labels) if lab != -100]
    assert labelled == [lab for lab in labels if lab != -100]
    text = smollm_tokenizer.decode(labelled)
    assert text.startswith("Paris") and "<|im_end|>" in text
    # Everything before the target (documents, question, chat markup) is masked.
    first = next(i for i, lab in enumerate(labels) if lab != -100)
    assert all(lab == -100 for lab in labels[:first]) and first > 20


def test_lora_touches_only_attention_projections():
    model = attach_lora(tiny_llama(), SETTINGS, seed=1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    modules = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert modules == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert all(".self_attn." in n for n in trainable)


def test_micro_batch_plan_is_seeded_and_covers_each_epoch():
    s = replace(SETTINGS, epochs=2, batch_size=2, gradient_accumulation=3)
    plan = micro_batch_plan(5, s, seed=3)
    assert plan == micro_batch_plan(5, s, seed=3)
    assert sorted(i for mb in plan[:3] for i in mb) == list(range(5))
    assert [len(g) for g in optimizer_steps(plan, 3)] == [3, 3]


def test_loss_decreases_on_repeated_example(tiny_model_dir, tmp_path):
    ex = qa_examples(1)[0]
    repeated = [dict(ex, example_id=f"rep-{i}") for i in range(4)]
    settings = replace(SETTINGS, epochs=1, gradient_accumulation=1, learning_rate=2e-2, warmup_ratio=0.0,
                       lora={**SETTINGS.lora, "dropout": 0.0})
    train_condition(examples=repeated, model_dir=tiny_model_dir, model_settings=SPEC, settings=settings, seed=0,
                    out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", device="cpu")
    curve = read_table(tmp_path / "out" / "train_curve.parquet", "train_curve")
    assert len(curve) == 4
    assert curve["loss"].iloc[-1] < curve["loss"].iloc[0]
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"] and cfg["r"] == 4
    assert not (tmp_path / "ckpt").exists()  # checkpoints are removed once the adapter is written


def test_one_padded_micro_batch_equals_accumulated_single_examples(tiny_model_dir, tmp_path):
    """batch_size=2 x 1 equals batch_size=1 x 2 accumulation (gpu-small trains in micro-batches
    of 8): right padding carries no labels, and both average the loss over the step's targets."""
    examples = qa_examples(4)
    for i, ex in enumerate(examples):  # different lengths, so a micro-batch of two needs padding
        ex["documents"][0]["text"] += " It rains." * (3 * i)
    no_dropout = replace(SETTINGS, lora={**SETTINGS.lora, "dropout": 0.0})
    for name, settings in {"padded": replace(no_dropout, batch_size=2, gradient_accumulation=1),
                           "accumulated": replace(no_dropout, batch_size=1, gradient_accumulation=2)}.items():
        train_condition(examples=examples, model_dir=tiny_model_dir, model_settings=SPEC, settings=settings, seed=3,
                        out_dir=tmp_path / name, checkpoint_dir=tmp_path / f"ck_{name}", device="cpu")
    a, b = _adapter_tensors(tmp_path / "padded"), _adapter_tensors(tmp_path / "accumulated")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    ca = read_table(tmp_path / "padded" / "train_curve.parquet", "train_curve")
    cb = read_table(tmp_path / "accumulated" / "train_curve.parquet", "train_curve")
    assert len(ca) == len(cb) == 4
    assert ca["loss"].tolist() == pytest.approx(cb["loss"].tolist(), rel=1e-4)
    assert ca["target_tokens"].tolist() == cb["target_tokens"].tolist()


@pytest.mark.parametrize("forward", ["labelled_rows", "windowed_full_forward"])
def test_target_token_loss_equals_full_logits_loss(smollm_tokenizer, forward):
    """The LM head on labelled positions only gives the loss and gradients of full logits over
    every position, on right-padded rows whose targets start at different positions."""
    model = attach_lora(tiny_llama(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=64),
                        replace(SETTINGS, lora={**SETTINGS.lora, "dropout": 0.0}), seed=0)
    if forward == "windowed_full_forward":  # what a soft-capping model takes (Llama ignores the key)
        model.get_base_model().config.final_logit_softcapping = 30.0
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (3, 20), generator=gen)
    labels = torch.full_like(ids, -100)
    for row, (first, end) in enumerate([(5, 9), (12, 20), (16, 18)]):  # rows end at 9, 20, 18 (padded)
        labels[row, first:end] = ids[row, first:end]
    lora = [p for p in model.parameters() if p.requires_grad]

    loss = target_token_loss(model, ids, labels)
    grads = torch.autograd.grad(loss, lora)
    logits = model(input_ids=ids).logits[:, :-1].float()
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), labels[:, 1:].reshape(-1),
                                                  ignore_index=-100, reduction="sum")
    reference_grads = torch.autograd.grad(reference, lora)
    assert int((labels != -100).sum()) == 4 + 8 + 2
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, reference_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def _adapter_tensors(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_resume_after_interruption_gives_identical_adapter(tiny_model_dir, tmp_path):
    examples = qa_examples(4)
    kwargs = dict(examples=examples, model_dir=tiny_model_dir, model_settings=SPEC, settings=SETTINGS, seed=7,
                  device="cpu")
    train_condition(out_dir=tmp_path / "straight", checkpoint_dir=tmp_path / "ck_straight", **kwargs)
    with pytest.raises(StopTraining):
        train_condition(out_dir=tmp_path / "resumed", checkpoint_dir=tmp_path / "ck_resumed", stop_after_steps=2,
                        **kwargs)
    assert (tmp_path / "ck_resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "adapter_model.safetensors").exists()
    train_condition(out_dir=tmp_path / "resumed", checkpoint_dir=tmp_path / "ck_resumed", **kwargs)
    a, b = _adapter_tensors(tmp_path / "straight"), _adapter_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    ca = read_table(tmp_path / "straight" / "train_curve.parquet", "train_curve")
    cb = read_table(tmp_path / "resumed" / "train_curve.parquet", "train_curve")
    assert ca["loss"].tolist() == pytest.approx(cb["loss"].tolist(), abs=1e-6)
    assert ca["step"].tolist() == cb["step"].tolist() == [1, 2, 3, 4]


@pytest.mark.slow
def test_killed_subprocess_resumes_to_same_adapter(tiny_model_dir, tmp_path):
    """A real SIGKILL mid-run (not a hook): the rerun resumes from the last checkpoint."""
    from synthctx.data.examples import write_examples

    data = tmp_path / "train.parquet"
    write_examples(qa_examples(4), str(data))
    settings = {**SETTINGS.__dict__, "lora": dict(SETTINGS.lora), "epochs": 4}
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(1)
        import synthctx.train.lora as L
        from synthctx.data.examples import read_examples
        kill_at = int(os.environ.get("KILL_AT", "0"))
        orig = L.save_checkpoint
        def save(path, payload):
            orig(path, payload)
            if kill_at and payload["step"] >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        L.save_checkpoint = save
        L.train_condition(examples=read_examples({str(data)!r}), model_dir={tiny_model_dir!r}, model_settings={SPEC!r},
                          settings=L.TrainSettings(**{settings!r}), seed=11, out_dir=os.environ["OUT"],
                          checkpoint_dir=os.environ["CKPT"], device="cpu")
    """)
    def run(out, ckpt, kill_at=0):
        env = {"OUT": str(tmp_path / out), "CKPT": str(tmp_path / ckpt), "KILL_AT": str(kill_at),
               "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    killed = run("resumed", "ck", kill_at=3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert run("resumed", "ck").returncode == 0
    assert run("straight", "ck2").returncode == 0
    a, b = _adapter_tensors(tmp_path / "straight"), _adapter_tensors(tmp_path / "resumed")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_full_finetuning_option_saves_loadable_weights(tiny_model_dir, tmp_path):
    from synthctx.models.loading import adapter_method, load_finetuned

    settings = replace(SETTINGS, method="full", epochs=1, gradient_accumulation=2, checkpoint_every=0)
    train_condition(examples=qa_examples(2), model_dir=tiny_model_dir, model_settings=SPEC, settings=settings, seed=0,
                    out_dir=tmp_path / "full", checkpoint_dir=tmp_path / "ck", device="cpu")
    assert adapter_method(tmp_path / "full") == "full"
    tuned = load_finetuned(tiny_model_dir, str(tmp_path / "full"), SPEC, device="cpu")
    base = load_finetuned(tiny_model_dir, None, SPEC, device="cpu")
    q_tuned = tuned.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_tuned, q_base)


def test_every_example_of_the_train_set_is_trained_on(tiny_model_dir, tmp_path):
    """Issue 14: no training-side cap (the default config's train section used to keep 10 of 12)."""
    import yaml

    from conftest import REPO

    train_cfg = yaml.safe_load((REPO / "config.yaml").read_text())["train"]
    settings = replace(TrainSettings.from_config(train_cfg), checkpoint_every=0)
    summary = train_condition(examples=qa_examples(12), model_dir=tiny_model_dir, model_settings=SPEC,
                              settings=settings, seed=3, out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ck",
                              device="cpu")
    assert summary["examples"] == 12
    steps_per_epoch = -(-12 // (settings.batch_size * settings.gradient_accumulation))
    assert len(read_table(tmp_path / "out" / "train_curve.parquet", "train_curve")) == steps_per_epoch * settings.epochs
    with pytest.raises(ValueError, match="max_examples' was removed.*data.max_train_examples"):
        TrainSettings.from_config({**train_cfg, "max_examples": 10})
