"""Cost of retrieval-head capture during greedy decoding, on an 8B-shaped random Llama.

Modes, all in one run, per context length:
  (a) plain   - greedy decoding with sdpa (flash when installed), no capture;
  (b) capture - the same loop with synthctx's last-row argmax attention function;
  (c) eager   - naive: eager attention with output_attentions=True in prefill and every step
                (Wu et al.'s original recipe); OOM is caught and reported;
  (d) eager-decode - sdpa prefill, then eager + output_attentions for the decode steps only
                (the "acceptable alternative" of the ecosystem notes), for the argmax agreement.

Reports prefill seconds, per-generated-token milliseconds ((T(N tokens) - T(1 token)) / (N - 1),
median of --repeats; and "all-in" (T_mode(N) - T_plain(1)) / (N - 1), which also charges work done
once per example, such as capture's deferred scoring) and peak GPU memory above the weights, with ratios vs (a), plus the
fraction of (step, layer, head) argmax positions on which (b) and (d) agree (bf16 ties make
this < 1 on random weights; see ecosystem-notes 4.6).

Standalone: needs only torch and transformers (imports synthctx.heads.capture from ../src).
  python benchmarks/bench_heads.py                       # H200: 8K and 32K, bf16
  python benchmarks/bench_heads.py --tiny                # CPU logic check, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from synthctx.heads.capture import cache_keyword, greedy_decode  # noqa: E402

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, head_dim=128, vocab_size=128256, rope_theta=500000.0)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=256, rope_theta=10000.0)


def build_model(shape: dict, max_len: int, dtype, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(max_position_embeddings=max_len + 64, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.set_attn_implementation("sdpa")
    return model.eval()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device, base_bytes):
    if torch.device(device).type != "cuda":
        return float("nan")
    return (torch.cuda.max_memory_allocated() - base_bytes) / 2**30


@torch.no_grad()
def eager_decode(model, ids, new_tokens, eager_prefill: bool, forced=None, reference=None):
    """Greedy decoding with eager attention + output_attentions.

    ``forced``: feed these tokens instead of the argmax (teacher forcing, so that the queries
    are those of another run). ``reference`` (steps, L, H): argmax positions of that run; the
    return value then counts, over decode steps, how often they equal eager's argmax (exact) and
    how often they hit one of eager's tied maxima (bf16 probabilities tie a lot on random weights).
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    kw = cache_keyword(model)
    exact = tied = total = 0
    step = torch.tensor([ids], device=model.device)
    try:
        for i in range(new_tokens):
            first = i == 0
            model.set_attn_implementation("eager" if (eager_prefill or not first) else "sdpa")
            out = model(input_ids=step, use_cache=True, output_attentions=not first or eager_prefill,
                        logits_to_keep=1, **{kw: cache})
            if out.attentions and reference is not None and i < len(reference):
                probs = torch.stack([a[0, :, -1, :] for a in out.attentions])  # (L, H, kv)
                ref = reference[i].to(probs.device)
                exact += int((probs.argmax(-1) == ref).sum())
                tied += int((probs.gather(-1, ref[..., None])[..., 0] == probs.max(-1).values).sum())
                total += ref.numel()
                del probs
            step = out.logits[:, -1:].argmax(-1) if forced is None else torch.tensor([[forced[i]]], device=model.device)
            del out
    finally:
        model.set_attn_implementation("sdpa")
    return (exact, tied, total)


def time_mode(fn, device, repeats):
    times = []
    result = None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_context(model, length, args, device, base_bytes):
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(0, model.config.vocab_size, (length,), generator=gen).tolist()
    n = args.new_tokens
    modes = {
        "plain": lambda k: greedy_decode(model, ids, k, capture=False),
        "capture": lambda k: greedy_decode(model, ids, k, capture=True),
        "eager": lambda k: eager_decode(model, ids, k, eager_prefill=True),
        "eager-decode": lambda k: eager_decode(model, ids, k, eager_prefill=False),
    }
    rows, argmax = [], {}
    for name, fn in modes.items():
        if name not in args.modes:
            continue
        row = {"context": length, "mode": name}
        try:
            fn(2)  # warm-up
            reset_peak(device)
            t1, _ = time_mode(lambda: fn(1), device, args.repeats)
            tn, result = time_mode(lambda: fn(n), device, args.repeats)
            row.update(prefill_s=t1, total_s=tn, new_tokens=n, ms_per_token=1000 * (tn - t1) / (n - 1),
                       peak_gib=peak_gib(device, base_bytes))
            if name == "capture":
                argmax[name] = result
        except torch.OutOfMemoryError as err:
            row.update(error=f"OOM ({str(err).splitlines()[0][:80]})", peak_gib=peak_gib(device, base_bytes))
        finally:
            reset_peak(device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if "capture" in argmax:
        # Same queries: eager decode steps teacher-forced with the capture run's tokens.
        cap = argmax["capture"]
        try:
            exact, tied, total = eager_decode(model, ids, len(cap.tokens), eager_prefill=False, forced=cap.tokens,
                                              reference=cap.argmax)
            for label, count in (("exact", exact), ("tied", tied)):
                rows.append({"context": length, "mode": f"argmax agreement capture vs eager ({label})",
                             "fraction": count / total if total else float("nan")})
                print(json.dumps(rows[-1]), flush=True)
        except torch.OutOfMemoryError:
            rows.append({"context": length, "mode": "argmax agreement", "fraction": float("nan")})
    return rows


def table(rows):
    """Markdown table. "ms / token" is the marginal cost of one more decoding step; "all-in ms /
    token" charges a mode everything it costs beyond plain prefill, (T_mode(N) - T_plain(1)) / (N - 1),
    so work done once per example after decoding (capture's deferred scoring) is counted too."""
    base = {r["context"]: r for r in rows if r["mode"] == "plain" and "error" not in r}
    lines = ["| context | mode | prefill s | ms / token | all-in ms / token | x plain (all-in) | peak GiB above weights | x plain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "fraction" in r:
            lines.append(f"| {r['context']} | {r['mode']} | | | | | {r['fraction']:.3f} | |")
            continue
        if "error" in r:
            lines.append(f"| {r['context']} | {r['mode']} | {r['error']} | | | | {r['peak_gib']:.1f} at failure | |")
            continue
        b = base.get(r["context"])
        all_in = 1000 * (r["total_s"] - b["prefill_s"]) / (r["new_tokens"] - 1) if b else float("nan")
        b_all_in = 1000 * (b["total_s"] - b["prefill_s"]) / (b["new_tokens"] - 1) if b else float("nan")
        speed = f"{all_in / b_all_in:.2f}" if b and b_all_in > 0 else ""
        mem = f"{r['peak_gib'] / b['peak_gib']:.2f}" if b and b["peak_gib"] > 0 else ""
        lines.append(f"| {r['context']} | {r['mode']} | {r['prefill_s']:.3f} | {r['ms_per_token']:.2f} | {all_in:.2f} | "
                     f"{speed} | {r['peak_gib']:.2f} | {mem} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny fp32 model on CPU (logic check)")
    parser.add_argument("--contexts", type=int, nargs="+", default=None)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["plain", "capture", "eager", "eager-decode"])
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.tiny:
        shape, dtype, device = TINY, torch.float32, "cpu"
        contexts = args.contexts or [64, 128]
    else:
        shape, dtype = LLAMA3_8B, torch.bfloat16
        device = "cuda" if torch.cuda.is_available() else "cpu"
        contexts = args.contexts or [8192, 32768]
    model = build_model(shape, max(contexts) + args.new_tokens, dtype, device)
    sync(device)
    base_bytes = torch.cuda.memory_allocated() if device == "cuda" else 0
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
          + f", weights {base_bytes / 2**30:.2f} GiB, new tokens {args.new_tokens}, repeats {args.repeats}", flush=True)
    rows = []
    for length in contexts:
        rows += run_context(model, length, args, device, base_bytes)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
