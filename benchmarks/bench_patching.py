"""Cost of knockout and cross-model patching relative to unpatched greedy evaluation.

Runs on the embedded model (resources/models/smollm2-135m) with two random LoRA adapters of
the study's shape (r=16 on q/k/v/o) as donor and recipient, on MDQA-shaped prompts of about
``--prompt-tokens`` tokens, decoding exactly ``--new-tokens`` tokens (no early stop, so every
variant does the same work). Reports seconds per example (median over examples) and the ratio
to the unpatched recipient.

    .venv/bin/python benchmarks/bench_patching.py --examples 3 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build_prompts(tokenizer, n: int, prompt_tokens: int) -> list[list[int]]:
    import random

    from synthctx.data.examples import make_example
    from synthctx.data.prompts import encode_prompt, render_prompt

    rng = random.Random(0)
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and 3 < len(w) < 9][:5000]
    prompts = []
    for i in range(n):
        docs, length = [], 0
        while length < prompt_tokens - 80:
            text = " ".join(rng.choice(words) for _ in range(60)) + "."
            docs.append({"doc_id": str(len(docs)), "title": f"Doc {len(docs)}", "text": text})
            ex = make_example(example_id=f"b{i}", task="mdqa", condition="real", split="eval", documents=docs,
                              question="Which word comes first?", answers=["x"], target="x", gold_doc_ids=["0"],
                              needles=[])
            ids = encode_prompt(render_prompt(ex, tokenizer), tokenizer)[0]
            length = len(ids)
        prompts.append(ids)
    return prompts


def lora(model, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, cfg).eval()
    return peft_model.to(next(model.parameters()).dtype)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, prompts) -> list[float]:
    times = []
    for ids in prompts:
        _sync()
        start = time.perf_counter()
        fn(ids)
        _sync()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(REPO / "resources/models/smollm2-135m"))
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="timed passes over the examples per variant")
    parser.add_argument("--heads", type=int, default=10, help="heads patched / masked (random, seeded)")
    parser.add_argument("--merged", action="store_true", help="merge the LoRA adapters into copies first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--random-init", action="store_true",
                        help="random weights from the directory's config.json (timing only; no weights needed)")
    parser.add_argument("--shape", default=None, choices=[None, "llama3-8b"],
                        help="override the model shape (random init): Llama-3-8B (32 x 32 heads, 8 KV heads, d=128)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from synthctx.models.decoding import greedy_decode
    from synthctx.causal.head_sets import random_heads
    from synthctx.causal.interventions import head_geometry, mask_heads
    from synthctx.causal.patching import patched_greedy_decode
    from synthctx.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model_dir)
    if args.random_init or args.shape:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(args.model_dir)
        if args.shape == "llama3-8b":
            config.update(dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               max_position_embeddings=max(8192, args.prompt_tokens + 64)))
        torch.manual_seed(0)
        with torch.device(args.device):  # initialise in place (an 8B model on the GPU, not the CPU)
            base = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype),
                                                    attn_implementation="sdpa").eval()
    else:
        base = load_model(args.model_dir, dtype=args.dtype, attn_implementation="sdpa", device=args.device)
    donor = lora(copy.deepcopy(base), seed=1)
    recipient = lora(base, seed=2)
    if args.merged:
        donor, recipient = donor.merge_and_unload(), recipient.merge_and_unload()
    geometry = head_geometry(recipient)
    heads = random_heads(geometry.all_heads(), args.heads, [], seed=0)
    prompts = build_prompts(tokenizer, args.examples, args.prompt_tokens)
    n_new = args.new_tokens
    no_stop: set[int] = set()

    def knockout(ids):
        with mask_heads(recipient, heads, "uniform"):
            return greedy_decode(recipient, ids, n_new, no_stop)

    def hf_generate(ids):
        return recipient.generate(input_ids=torch.tensor([ids], device=args.device), max_new_tokens=n_new, min_new_tokens=n_new,
                                  do_sample=False, pad_token_id=tokenizer.pad_token_id)

    variants = {
        "unpatched (own greedy loop)": lambda ids: greedy_decode(recipient, ids, n_new, no_stop),
        "unpatched (HF generate)": hf_generate,
        f"knockout uniform, {args.heads} heads": knockout,
        f"patching, {args.heads} heads": lambda ids: patched_greedy_decode(donor, recipient, ids, heads, n_new, no_stop),
        "patching, all heads": lambda ids: patched_greedy_decode(donor, recipient, ids, geometry.all_heads(), n_new,
                                                                 no_stop),
    }
    # Warm every variant up once (kernel selection, allocator, lazy inits), then time the rounds
    # interleaved so that drifting machine load hits all variants alike.
    for fn in variants.values():
        fn(prompts[0])
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            samples[name] += timed(fn, prompts)
    results = {name: statistics.median(times) for name, times in samples.items()}
    base_time = results["unpatched (own greedy loop)"]
    report = {
        "model": Path(args.model_dir).name, "prompt_tokens": [len(p) for p in prompts], "new_tokens": n_new,
        "threads": args.threads, "merged_adapters": args.merged, "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "dtype": args.dtype,
        "shape": args.shape or "checkpoint", "random_init": bool(args.random_init or args.shape),
        "seconds_per_example": {k: round(v, 3) for k, v in results.items()},
        "ratio_to_unpatched": {k: round(v / base_time, 2) for k, v in results.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
