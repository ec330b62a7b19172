"""Training throughput and peak memory: the optimized path vs a plain baseline, same run.

Standalone (torch + transformers + peft only, no synthctx import) so it runs on any GPU node:

    python benchmarks/bench_training.py                      # 8B-shaped Llama, 2K/8K/32K, on cuda
    python benchmarks/bench_training.py --preset tiny --device cpu --lengths 256 512   # smoke test

Model: a random-weight Llama with Llama-3-8B's shape (32 layers, 4096 hidden, 32 query / 8 KV
heads, 14336 MLP, 128,256 vocabulary), bf16 on GPU, LoRA r=16 on q/k/v/o as in the study.
Paths per sequence length (batch 1, loss on the last 32 tokens as for a task target):
- optimized: SDPA (flash_attention_2 when installed) + gradient checkpointing + logits only
  for the target window (what synthctx.train.lora does)
- no_ckpt:   as optimized but without gradient checkpointing (isolates its cost)
- baseline:  eager attention, no gradient checkpointing, full-sequence logits
Reports tokens/s (forward + backward + optimizer step) and peak allocated memory; an
out-of-memory configuration is reported as OOM instead of aborting the run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time

PRESETS = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, vocab_size=128256),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=8192),
}
TARGET_TOKENS = 32


def build_model(preset: str, max_len: int, device: str, dtype):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**PRESETS[preset], max_position_embeddings=max_len, rope_theta=8_000_000.0, use_cache=False)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.config.use_cache = False
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def build_gpu_small_trainer(preset: str, max_len: int, device: str, dtype):
    """``build_model`` set up as gpu-small trains (SDPA, gradient checkpointing, train mode),
    with its AdamW optimizer over the LoRA weights."""
    import torch

    model = build_model(preset, max_len, device, dtype)
    model.get_base_model().set_attn_implementation("sdpa")
    model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)


PATHS = {  # name: (fast attention + target-window logits, gradient checkpointing)
    "optimized": (True, True),
    "no_ckpt": (True, False),
    "baseline": (False, False),
}


def configure(model, optimized: bool, fast_attention: str, checkpointing: bool):
    base = model.get_base_model()
    base.set_attn_implementation(fast_attention if optimized else "eager")
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()
    model.train()


def step_once(model, optimizer, length: int, vocab: int, device: str, optimized: bool):
    import torch

    ids = torch.randint(0, vocab, (1, length), device=device)
    labels = torch.full_like(ids, -100)
    labels[:, -TARGET_TOKENS:] = ids[:, -TARGET_TOKENS:]
    if optimized:
        keep = TARGET_TOKENS + 1
        logits = model(input_ids=ids, logits_to_keep=keep).logits[:, :-1].float()
        target = labels[:, -TARGET_TOKENS:]
    else:
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def measure(model, optimizer, length, vocab, device, optimized, steps, warmup):
    import torch

    cuda = device.startswith("cuda")
    try:
        for _ in range(warmup):
            step_once(model, optimizer, length, vocab, device, optimized)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            step_once(model, optimizer, length, vocab, device, optimized)
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        return {"status": "ok", "tokens_per_s": length / seconds, "seconds_per_step": seconds, "peak_gib": peak}
    except torch.OutOfMemoryError:
        return {"status": "OOM", "tokens_per_s": float("nan"), "seconds_per_step": float("nan"), "peak_gib": float("nan")}
    except RuntimeError as err:  # e.g. CPU allocation failure
        if "out of memory" in str(err).lower():
            return {"status": "OOM", "tokens_per_s": float("nan"), "seconds_per_step": float("nan"), "peak_gib": float("nan")}
        raise
    finally:
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    fast = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    print(f"# torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if cuda else "") + f", dtype {dtype}, fast attention {fast}",
          flush=True)
    model = build_model(args.preset, max(args.lengths), args.device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    vocab = PRESETS[args.preset]["vocab_size"]
    rows = []
    for length in args.lengths:
        for name, (optimized, checkpointing) in PATHS.items():
            configure(model, optimized, fast, checkpointing)
            result = measure(model, optimizer, length, vocab, args.device, optimized, args.steps, args.warmup)
            rows.append({"preset": args.preset, "length": length, "path": name, **result})
            print(json.dumps(rows[-1]), flush=True)

    print()
    print(f"| tokens | path | tokens/s | s/step | peak GiB | speed-up vs baseline | memory vs baseline |")
    print("|---|---|---|---|---|---|---|")
    for length in args.lengths:
        base = next(r for r in rows if r["length"] == length and r["path"] == "baseline")
        for r in (x for x in rows if x["length"] == length):
            if r["status"] != "ok":
                print(f"| {length} | {r['path']} | {r['status']} | - | - | - | - |")
                continue
            ok = base["status"] == "ok"
            speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if ok else "baseline OOM"
            mem = f"{r['peak_gib'] / base['peak_gib']:.2f}x" if ok and cuda else "-"
            print(f"| {length} | {r['path']} | {r['tokens_per_s']:.0f} | {r['seconds_per_step']:.2f} | "
                  f"{r['peak_gib']:.1f} | {speed} | {mem} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
