"""Knockout, patching and head-capture decodes: one example at a time vs groups
(``causal.batch_size``, ``heads.batch_size``).

Random weights of SmolLM2-135M's shape (``--preset``), bf16 on CUDA (fp32 on CPU), prompts of
random ids of 45-100 % of ``--length`` tokens (seeded), exactly ``--new-tokens`` greedy tokens
each (no stop id, so every variant does the same work). Same model instances, same run:

- knockout: ``uniform`` knockout of 10 heads, ``greedy_decode`` per example vs
  ``greedy_decode_batch`` over groups of ``--batch``;
- patching: two models in lockstep with 10 heads patched, per example vs batched;
- heads: greedy decoding with retrieval-head capture (``synthctx.heads.capture``), per example
  vs batched (same tokens and argmax positions counted).

Prints seconds per example, the speed-up, and how many examples decode to the same tokens in
both modes (bf16 sums in a different order can flip a near-tie).

    PYTHONPATH=src python benchmarks/bench_causal_batch.py --length 4096 --examples 16 --batch 16   # cuda
    PYTHONPATH=src python benchmarks/bench_causal_batch.py --preset tiny --device cpu --length 128 --examples 4
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import PRESETS, build_model  # noqa: E402

HEADS = [(layer, layer % 3) for layer in range(2, 22, 2)]  # 10 heads, spread over the layers


def main(argv=None):
    import torch

    from synthctx.models.decoding import greedy_decode, greedy_decode_batch
    from synthctx.causal.interventions import mask_heads
    from synthctx.causal.patching import patched_greedy_decode, patched_greedy_decode_batch
    from synthctx.heads import capture

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smollm2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--experiments", nargs="+", default=["knockout", "patching", "heads"],
                        choices=["knockout", "patching", "heads"])
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else 'cpu'}, {args.preset}, {dtype}, "
          f"{args.examples} prompts of {args.length // 2}-{args.length} tokens, {args.new_tokens} new tokens")

    def model(seed):
        torch.manual_seed(seed)
        m = build_model(args.preset, args.length + args.new_tokens, args.device, dtype).get_base_model()
        m.config.use_cache = True
        return m.eval()

    recipient, donor = model(0), model(1)
    with torch.no_grad():  # make the donor differ (random LoRA init leaves B = 0)
        for p in donor.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    rng = random.Random(0)
    vocab = PRESETS[args.preset]["vocab_size"]
    prompts = [[rng.randrange(1, vocab) for _ in range(rng.randint(int(0.45 * args.length), args.length))]
               for _ in range(args.examples)]
    heads = [h for h in HEADS if h[0] < recipient.config.num_hidden_layers]

    def batched(fn):
        out = []
        for start in range(0, len(prompts), args.batch):
            out += fn(prompts[start:start + args.batch])
        return out

    variants = {
        "knockout": (lambda: [greedy_decode(recipient, p, args.new_tokens, []) for p in prompts],
                     lambda: batched(lambda ps: greedy_decode_batch(recipient, ps, args.new_tokens, [], 0))),
        "patching": (lambda: [patched_greedy_decode(donor, recipient, p, heads, args.new_tokens, []) for p in prompts],
                     lambda: batched(lambda ps: patched_greedy_decode_batch(donor, recipient, ps, heads,
                                                                            args.new_tokens, [], 0))),
        # DecodeResult -> (tokens, argmax rows); tokens and argmax positions are compared apart.
        "heads": (lambda: [_key(capture.greedy_decode(recipient, p, args.new_tokens, [])) for p in prompts],
                  lambda: batched(lambda ps: [_key(r) for r in capture.greedy_decode_batch(recipient, ps,
                                                                                          args.new_tokens, [], 0)])),
    }
    variants = {name: variants[name] for name in args.experiments}
    print("| experiment | mode | s / example | x one at a time | same tokens | same argmax positions |")
    print("|---|---|---|---|---|---|")
    for name, (alone, together) in variants.items():
        timed = {}
        for mode, fn in (("one at a time", alone), (f"batch {args.batch}", together)):
            ctx = mask_heads(recipient, heads, "uniform") if name == "knockout" else _null()
            with ctx:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                tokens = fn()
                if cuda:
                    torch.cuda.synchronize()
            timed[mode] = (time.perf_counter() - start, tokens)
        base = timed["one at a time"]
        for mode, (seconds, outputs) in timed.items():
            tokens, argmax = (zip(*outputs) if name == "heads" else (outputs, None))
            same = sum(a == b for a, b in zip(tokens, [o[0] for o in base[1]] if name == "heads" else base[1]))
            # Heads: share of (step, layer, head) argmax positions that agree, over the examples
            # whose tokens agree (random weights give near-uniform attention, so bf16 order flips ties).
            agree = "-"
            if argmax is not None:
                pairs = [(a, b[1]) for a, b, t in zip(argmax, base[1], tokens) if t == b[0]]
                total = sum(a.size for a, _ in pairs)
                agree = f"{sum(int((a == b).sum()) for a, b in pairs) / total:.3f}" if total else "n/a"
            print(f"| {name} | {mode} | {seconds / len(prompts):.3f} | {base[0] / seconds:.1f}x | "
                  f"{same}/{len(prompts)} | {agree} |", flush=True)


def _key(result):
    return result.tokens, result.argmax.cpu().numpy()


def _null():
    import contextlib

    return contextlib.nullcontext()


if __name__ == "__main__":
    main()
