"""The training loss's LM head: over a window of positions, or over the labelled positions only.

One optimizer step over one micro-batch of 8 right-padded rows whose lengths spread like a task's
synthetic examples (45-100 % of the nominal length, seeded), each with its last 32 tokens as
targets. Two ways to get the loss, same model instance, same run:

- window: ``synthctx.train.lora.window_loss``, ``model(logits_to_keep=k)`` from the earliest row's
  first target to the widest row's end (every model before session 4; now only models that rescale
  their logits): with uneven rows that is thousands of positions per row;
- labelled: ``synthctx.train.lora.target_token_loss``: the decoder's last hidden state at the
  positions that predict a label, then the LM head on those rows only.

    PYTHONPATH=src python benchmarks/bench_target_loss.py --preset smollm2 --lengths 4672 8000   # cuda
    PYTHONPATH=src python benchmarks/bench_target_loss.py --preset tiny --device cpu --lengths 256

LoRA r=16 on q/k/v/o, gradient checkpointing, SDPA without a mask, as gpu-small trains. Prints
s / step, the speed ratio to the window, the peak memory and its ratio, and the loss of both
(they must agree).
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


def micro_batch(lengths, vocab, device):
    import torch

    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, vocab, (n,))
        labels[row, n - TARGET_TOKENS:n] = ids[row, n - TARGET_TOKENS:n]
    return ids.to(device), labels.to(device)


def main(argv=None):
    import torch

    from synthctx.train.lora import target_token_loss, target_window, window_loss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smollm2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4672, 8000])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--labelled-first", action="store_true", help="time the labelled variant first")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else 'cpu'}, {args.preset}, {dtype}")
    print("| length (rows) | LM head on | positions projected | s / step | x window | peak GiB | x window | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        model, optimizer = build_gpu_small_trainer(args.preset, length, args.device, dtype)
        rng = random.Random(0)
        lengths = [rng.randint(int(0.45 * length), length) for _ in range(ROWS)]
        ids, labels = micro_batch(lengths, PRESETS[args.preset]["vocab_size"], args.device)
        projected = {"window": ROWS * (target_window(labels) - 1), "labelled": int((labels != -100).sum())}
        results = {}
        variants = [("window", window_loss), ("labelled", target_token_loss)]
        for name, loss_fn in (variants[::-1] if args.labelled_first else variants):
            def step():
                loss = loss_fn(model, ids, labels)
                (loss / projected["labelled"]).backward()
                optimizer.zero_grad(set_to_none=True)  # no update: both variants see the same weights
                return float(loss.detach())

            step()  # warm-up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.steps
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            results[name] = (seconds, peak, loss)
        for name in ("window", "labelled"):
            seconds, peak, loss = results[name]
            base = results["window"]
            print(f"| {length} ({min(lengths)}-{max(lengths)}) | {name} | {projected[name]} | {seconds:.3f} | "
                  f"{base[0] / seconds:.2f}x | {peak:.2f} | {peak / base[1]:.2f}x | {loss / projected['labelled']:.4f} |",
                  flush=True)
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
