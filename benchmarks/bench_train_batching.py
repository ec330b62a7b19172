"""One optimizer step over 8 right-padded sequences: 8 micro-batches of 1, or one micro-batch of 8
with and without the attention mask (what synthctx.train.lora passes), same run.

Standalone (torch + transformers + peft; shares bench_training's random-weight models):

    python benchmarks/bench_train_batching.py --preset smollm2 --lengths 3500 8000   # cuda, bf16
    python benchmarks/bench_train_batching.py --preset tiny --device cpu --lengths 256   # smoke test

Right padding under causal attention never lets a real position see a pad, so the mask changes
nothing numerically for the positions the loss reads; without it SDPA can run its causal (flash)
kernel instead of a masked one. Rows are 90-100 % of the nominal length (seeded), like a task's
examples; the loss covers each row's last 32 tokens. LoRA r=16 on q/k/v/o, gradient checkpointing
on, as gpu-small trains. Prints sequences/s and the ratio to 8 x batch 1; peak memory.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import PRESETS, TARGET_TOKENS, build_gpu_small_trainer  # noqa: E402

ROWS = 8


def batches(lengths, vocab, device, micro: int):
    import torch

    out = []
    for start in range(0, len(lengths), micro):
        chunk = lengths[start:start + micro]
        width = max(chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(chunk):
            ids[row, :n] = torch.randint(1, vocab, (n,))
            labels[row, n - TARGET_TOKENS:n] = ids[row, n - TARGET_TOKENS:n]
            mask[row, :n] = 1
        out.append((ids.to(device), labels.to(device), mask.to(device)))
    return out


def step(model, optimizer, micro_batches, use_mask: bool):
    from synthctx.train.lora import window_loss

    targets = sum(int((labels[:, 1:] != -100).sum()) for _, labels, _ in micro_batches)
    for ids, labels, mask in micro_batches:
        loss = window_loss(model, ids, labels, attention_mask=mask if use_mask else None) / targets
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smollm2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[3500, 8000])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else 'cpu'}, {args.preset}, {dtype}")
    print("| length | micro-batches | mask | s / step | sequences / s | x 8 x batch 1 | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for length in args.lengths:
        model, optimizer = build_gpu_small_trainer(args.preset, length, args.device, dtype)
        rng = random.Random(0)
        lengths = [rng.randint(int(0.9 * length), length) for _ in range(ROWS)]
        variants = [("8 x 1", 1, True), ("1 x 8", ROWS, True), ("1 x 8", ROWS, False)]
        base = None
        for name, micro, use_mask in variants:
            data = batches(lengths, PRESETS[args.preset]["vocab_size"], args.device, micro)
            step(model, optimizer, data, use_mask)  # warm-up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, optimizer, data, use_mask)
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.steps
            base = base or seconds
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            print(f"| {length} | {name} | {'yes' if use_mask else 'no'} | {seconds:.3f} | {ROWS / seconds:.1f} | "
                  f"{base / seconds:.2f}x | {peak:.1f} |", flush=True)
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
