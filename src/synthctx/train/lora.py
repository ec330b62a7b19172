"""Supervised fine-tuning of one condition: LoRA on q/k/v/o (or full fine-tuning), resumable.

STUDY.md section 4: every condition of a model uses the same hyper-parameters (only the data
differs), the loss covers the target tokens (and end-of-turn) only, RoPE theta / context length
come from the model spec, bf16 + SDPA/flash + gradient checkpointing on GPU, fp32 on CPU.

A hand-written loop rather than HF Trainer, because resuming must reproduce an uninterrupted
run exactly: the optimizer step ``s`` alone fixes which micro-batches are consumed next (the
epoch orders are seeded permutations), and a checkpoint holds the trainable weights, the
optimizer, the scheduler, every RNG (LoRA dropout draws) and the curve so far. A killed job
therefore ends with the same adapter as a job that was never interrupted.

Checkpoints live in ``results/{study}/checkpoints/...``, outside the declared outputs (Snakemake
deletes declared outputs of a failed job, and would delete a ``directory()`` before running).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from synthctx.provenance import derived_seed, provenance
from synthctx.settings import section_fields
from synthctx.schema import ArtifactError, umask_mode, write_table

log = logging.getLogger("synthctx.train")

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class TrainSettings:
    """The config ``train:`` section (identical for every condition of a model).

    No field has a default: the values live in config.yaml and the schema only, and
    :meth:`from_config` is the one way from the config section to the settings."""

    method: str  # lora | full
    lora: Mapping[str, Any]  # r, alpha, dropout, target_modules
    learning_rate: float
    epochs: int
    batch_size: int
    gradient_accumulation: int
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    checkpoint_every: int
    gradient_checkpointing: Any  # auto (GPU only) | True | False
    # CPU only: run the forward and backward passes under torch.autocast in this dtype (bfloat16)
    # while the weights, LoRA parameters and optimizer stay fp32; None keeps every op fp32.
    cpu_autocast: str | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "TrainSettings":
        if "max_examples" in cfg:
            # Each condition trains on its whole train set; its size is set where it is built.
            raise ValueError(
                "config train: key 'max_examples' was removed: every condition trains on all of its train set; "
                "size Real (Full) with data.max_train_examples (Real (Limited) is data.limited_fraction of it) "
                "and the synthetic sets with generation.examples_per_variant"
            )
        return cls(**section_fields(cls, cfg, "train"))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- seeding / data


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import torch

    # Plain lists, ints and tensors only, so that the checkpoint loads with weights_only=True
    # (numpy's state holds an ndarray, which only a full unpickler would rebuild).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_order(examples: Sequence[Mapping[str, Any]], seed: int) -> list[Mapping[str, Any]]:
    """Every example of the train set, in a seeded order (independent of the file's row order)."""
    return sorted(examples, key=lambda ex: derived_seed(seed, "select", ex["example_id"]))


def micro_batch_plan(n_examples: int, settings: TrainSettings, seed: int) -> list[list[int]]:
    """Example indices of every micro-batch, all epochs in order (each epoch a seeded permutation)."""
    plan: list[list[int]] = []
    for epoch in range(settings.epochs):
        perm = np.random.default_rng(derived_seed(seed, "epoch", epoch)).permutation(n_examples).tolist()
        plan += [perm[i : i + settings.batch_size] for i in range(0, n_examples, settings.batch_size)]
    return plan


def optimizer_steps(plan: Sequence[Sequence[int]], accumulation: int) -> list[list[list[int]]]:
    """Group micro-batches into optimizer steps (the last step may be short)."""
    return [list(plan[i : i + accumulation]) for i in range(0, len(plan), accumulation)]


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-pad a micro-batch; padding carries label -100.

    No attention mask: attention is causal, so with right padding no real position ever attends
    to a pad, and the pads' own outputs carry no label. Without a mask SDPA runs its causal
    flash kernel; with one it falls back to a masked kernel (a micro-batch of 8 rows at 8K
    tokens: 0.65 vs 1.22 s per step on an H200, BENCHMARKS.md).
    """
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (x, y) in enumerate(encoded):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
    return ids, labels


# --------------------------------------------------------------------------- model


def resolve_attention(requested: str, device: str) -> str:
    """Flash attention on GPU when installed, else the configured implementation (SDPA by default)."""
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        return "sdpa"
    return requested


def attach_lora(model, settings: TrainSettings, seed: int):
    """Wrap ``model`` with a LoRA adapter on the configured attention projections (seeded init)."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=list(lora["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(derived_seed(seed, "lora_init"))
    return get_peft_model(model, config)


def prepare_model_for_training(model_dir: str, model_settings: Mapping[str, Any], settings: TrainSettings, seed: int,
                               device: str | None = None):
    """Load the base model with the spec's RoPE/context settings and make it trainable."""
    import torch

    from synthctx.models.loading import load_model, pick_device

    device = pick_device(device)
    spec = dict(model_settings)
    if not device.startswith("cuda"):
        spec["dtype"] = "float32"  # CPU: fp32 (bf16 matmuls on CPU are slow and lossy)
    spec["attn_implementation"] = resolve_attention(spec.get("attn_implementation", "sdpa"), device)
    model = load_model(model_dir, device=device, **spec)
    model.config.use_cache = False
    use_gc = settings.gradient_checkpointing
    if use_gc == "auto":
        use_gc = device.startswith("cuda")
    if use_gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.method == "lora":
        model = attach_lora(model, settings, seed)
    elif settings.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        raise ValueError(f"config train.method: {settings.method!r}, expected lora or full")
    model.train()
    return model, device, bool(use_gc)


def cpu_autocast_context(settings: TrainSettings, device: str):
    """The autocast context of the training passes: ``settings.cpu_autocast`` on a CPU, else none.

    On a CPU with bf16 dot-product instructions (AVX512-BF16, AMX) a bf16 autocast step of the
    embedded model took 0.44-0.64x the fp32 one (benchmarks/bench_default_study.py); the weights and
    the optimizer stay fp32, as in mixed-precision GPU training. GPUs already train in the
    model's own dtype (bf16), so the setting does nothing there.
    """
    import contextlib

    import torch

    if not settings.cpu_autocast or device.startswith("cuda"):
        return contextlib.nullcontext()
    dtype = getattr(torch, str(settings.cpu_autocast), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"config train.cpu_autocast: {settings.cpu_autocast!r}, expected null or bfloat16")
    return torch.autocast("cpu", dtype=dtype)


def trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: Mapping[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ArtifactError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def target_window(labels) -> int:
    """Positions (counted from the end) whose logits the loss needs: from one before the first label on."""
    labelled = (labels != -100).any(dim=0).nonzero()
    first = int(labelled[0]) if len(labelled) else labels.size(1) - 1
    return labels.size(1) - max(first - 1, 0)


def _plain_lm_head(causal_lm) -> bool:
    """Whether the logits are just the output embedding of the final hidden state (Llama, Mistral,
    Qwen...): no logit scaling or soft-capping that only the model's own forward applies."""
    config = causal_lm.config
    return not (getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
                or hasattr(causal_lm, "logit_scale"))


def window_loss(model, ids, labels, attention_mask=None):
    """Summed cross-entropy from the model's own logits over the window :func:`target_window`
    names: every position from the batch's earliest target to its end."""
    import torch

    keep = target_window(labels)
    logits = model(input_ids=ids, attention_mask=attention_mask, logits_to_keep=keep).logits[:, :-1].float()
    shifted = labels[:, labels.size(1) - keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=-100, reduction="sum")


def target_token_loss(model, ids, labels):
    """Summed cross-entropy over the labelled tokens of a right-padded micro-batch.

    The LM head (a 50-150K vocabulary) runs only on the positions that predict a label: a
    micro-batch of rows of different lengths would otherwise project every position from the
    earliest row's first target to the widest row's end (8 mixed MDQA rows: 16-21 GB of logits
    and their gradients at 3-5K tokens, which ran shared GPUs out of memory). Models whose
    forward rescales logits keep the windowed full forward.
    """
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not _plain_lm_head(causal_lm):
        return window_loss(model, ids, labels)
    shifted = labels[:, 1:]  # the label at position t is predicted from position t-1
    hidden = causal_lm.get_decoder()(input_ids=ids).last_hidden_state[:, :-1]
    labelled = shifted != -100
    logits = causal_lm.get_output_embeddings()(hidden[labelled]).float()  # (targets, vocab)
    return torch.nn.functional.cross_entropy(logits, shifted[labelled], reduction="sum")


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = int(math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, umask_mode())
        torch.save(dict(payload), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint of this exact run (same data, settings, seed), or None."""
    import torch

    if not path.exists():
        return None
    try:
        # weights_only: a checkpoint is tensors and plain values, never code to unpickle.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - e.g. an older checkpoint that pickled numpy arrays
        log.warning("ignoring checkpoint %s: it does not load with weights_only=True (%s)", path, err)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to other data or settings", path)
        return None
    return state


# --------------------------------------------------------------------------- training


class StopTraining(Exception):
    """Raised by the ``stop_after_steps`` hook (tests simulate a killed job with it)."""


def train_condition(
    *,
    examples: Sequence[Mapping[str, Any]],
    model_dir: str,
    model_settings: Mapping[str, Any],
    settings: TrainSettings,
    seed: int,
    out_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    run_info: Mapping[str, Any] | None = None,
    device: str | None = None,
    stop_after_steps: int | None = None,
    progress_file=None,
) -> dict[str, Any]:
    """Fine-tune on ``examples`` and write the adapter + training curve into ``out_dir``.

    Resumes from ``checkpoint_dir`` when it holds a checkpoint of the same run. Returns a
    summary (steps, tokens, seconds, peak memory). ``stop_after_steps`` raises
    :class:`StopTraining` right after that optimizer step is checkpointed.
    """
    import pandas as pd
    import torch
    from tqdm import tqdm

    from synthctx.data.prompts import training_ids
    from synthctx.models.loading import load_tokenizer

    if not examples:
        raise ArtifactError("no training examples")
    run_info = dict(run_info or {})
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    tokenizer = load_tokenizer(model_dir)
    chosen = training_order(examples, seed)
    budget = model_settings.get("context_tokens")
    encoded = []
    for ex in chosen:
        ids, labels = training_ids(ex, tokenizer)
        if budget and len(ids) > budget:
            raise ArtifactError(f"example {ex['example_id']!r}: {len(ids)} tokens exceed context_tokens={budget}")
        if not any(lab != -100 for lab in labels):
            raise ArtifactError(f"example {ex['example_id']!r}: field 'target' gives no target tokens")
        encoded.append((ids, labels))

    steps = optimizer_steps(micro_batch_plan(len(encoded), settings, seed), settings.gradient_accumulation)
    total_steps = len(steps)
    micro_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    fingerprint = hashlib.sha256(
        json.dumps(
            {"settings": settings.fingerprint(), "seed": seed, "model": str(model_settings),
             "data": [ex["example_id"] for ex in chosen], "tokens": [sum(map(len, e)) for e in encoded]},
            sort_keys=True,
        ).encode()
    ).hexdigest()

    seed_everything(derived_seed(seed, "train"))
    model, device, grad_ckpt = prepare_model_for_training(model_dir, model_settings, settings, seed, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, settings.warmup_ratio))

    ckpt_path = checkpoint_dir / CHECKPOINT_FILE
    start_step, curve, elapsed_before = 0, [], 0.0
    state = load_checkpoint(ckpt_path, fingerprint)
    if state is not None:
        load_trainable_state(model, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_step, curve, elapsed_before = state["step"], list(state["curve"]), state["seconds"]
        log.info("resuming from %s at optimizer step %d/%d", ckpt_path, start_step, total_steps)
    else:
        seed_everything(derived_seed(seed, "train_loop"))

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    autocast = cpu_autocast_context(settings, device)
    started = time.perf_counter()
    bar = tqdm(total=total_steps, initial=start_step, desc=f"train {run_info.get('condition', '')}",
               file=progress_file, mininterval=5)
    for step in range(start_step, total_steps):
        group = steps[step]
        batches = [collate([encoded[i] for i in micro], tokenizer.pad_token_id) for micro in group]
        # Shift by one: label at position t is predicted from position t-1.
        group_tokens = sum(int((labels[:, 1:] != -100).sum()) for _, labels in batches)
        loss_sum = 0.0
        for ids, labels in batches:
            ids, labels = ids.to(device), labels.to(device)
            with autocast:
                token_loss = target_token_loss(model, ids, labels)
            # Token-level mean over the whole optimizer step, whatever the split into micro-batches.
            (token_loss / group_tokens).backward()
            loss_sum += float(token_loss.detach())
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        last_micro = step * settings.gradient_accumulation + len(group)
        curve.append(
            {
                "step": step + 1,
                "epoch": last_micro / micro_per_epoch,
                "loss": loss_sum / group_tokens,
                "learning_rate": float(lr),
                "target_tokens": group_tokens,
                "seconds": elapsed_before + time.perf_counter() - started,
            }
        )
        bar.update(1)
        bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}")
        done = step + 1
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < total_steps:
            save_checkpoint(
                ckpt_path,
                {
                    "fingerprint": fingerprint,
                    "step": done,
                    "trainable": trainable_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "curve": curve,
                    "seconds": curve[-1]["seconds"],
                },
            )
        if stop_after_steps is not None and done >= stop_after_steps and done < total_steps:
            bar.close()
            raise StopTraining(f"stopped after optimizer step {done}")
    bar.close()

    seconds = elapsed_before + time.perf_counter() - started
    summary = {
        "optimizer_steps": total_steps,
        "examples": len(encoded),
        "train_tokens": int(sum(len(ids) for ids, _ in encoded)) * settings.epochs,
        "seconds": seconds,
        "device": device,
        "gradient_checkpointing": grad_ckpt,
        "attn_implementation": model_settings.get("attn_implementation"),
        "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
    }
    meta = provenance(seed=seed, settings=asdict(settings), summary=summary, **run_info)
    save_outputs(model, settings, out_dir, pd.DataFrame(curve), meta)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("trained %d steps on %d examples in %.1f s; final loss %.4f", total_steps, len(encoded), seconds,
             curve[-1]["loss"])
    return summary


def save_outputs(model, settings: TrainSettings, out_dir: Path, curve, meta: Mapping[str, Any]) -> None:
    """Adapter files first, the training curve last (so a complete curve means a complete adapter)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".adapter.", dir=out_dir))
    try:
        if settings.method == "lora":
            # adapter_config.json stays PEFT's own: vLLM and PEFT parse it.
            model.save_pretrained(staging, safe_serialization=True)
        else:
            from safetensors.torch import save_file

            # Full fine-tuning: the whole state dict under the adapter file name, so the rule
            # outputs stay the same; load with synthctx.models.loading.load_finetuned.
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, staging / "adapter_model.safetensors")
            (staging / "adapter_config.json").write_text(json.dumps({"synthctx": {"method": "full"}}, indent=2))
        for name in ADAPTER_FILES:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_table(curve, out_dir / "train_curve.parquet", "train_curve", meta)


def train_from_files(train_path: str, model_dir: str, model_spec: Mapping[str, Any], train_cfg: Mapping[str, Any], seed: int,
                     out_dir: str, checkpoint_dir: str, run_info: Mapping[str, Any], log_path: str | None = None) -> dict:
    """Entry point of the ``train_adapter`` rule."""
    from synthctx.data.examples import read_examples
    from synthctx.logging_utils import progress_stream
    from synthctx.models.loading import model_settings

    examples = read_examples(train_path)
    stream = progress_stream(log_path)
    try:
        return train_condition(
            examples=examples, model_dir=model_dir, model_settings=model_settings(model_spec),
            settings=TrainSettings.from_config(train_cfg), seed=seed, out_dir=out_dir, checkpoint_dir=checkpoint_dir,
            run_info={**run_info, "train_path": train_path}, progress_file=stream,
        )
    finally:
        if log_path:
            stream.close()
