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
    return get_peft_model(model, cfg).eval()


def timed(fn, prompts) -> list[float]:
    times = []
    for ids in prompts:
        start = time.perf_counter()
        fn(ids)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(REPO / "resources/models/smollm2-135m"))
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heads", type=int, default=10, help="heads patched / masked (random, seeded)")
    parser.add_argument("--merged", action="store_true", help="merge the LoRA adapters into copies first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from synthctx.causal.decoding import greedy_decode
    from synthctx.causal.head_sets import random_heads
    from synthctx.causal.interventions import head_geometry, mask_heads
    from synthctx.causal.patching import patched_greedy_decode
    from synthctx.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model_dir)
    base = load_model(args.model_dir, dtype="float32", attn_implementation="sdpa")
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
        return recipient.generate(input_ids=torch.tensor([ids]), max_new_tokens=n_new, min_new_tokens=n_new,
                                  do_sample=False, pad_token_id=tokenizer.pad_token_id)

    variants = {
        "unpatched (own greedy loop)": lambda ids: greedy_decode(recipient, ids, n_new, no_stop),
        "unpatched (HF generate)": hf_generate,
        f"knockout uniform, {args.heads} heads": knockout,
        f"patching, {args.heads} heads": lambda ids: patched_greedy_decode(donor, recipient, ids, heads, n_new, no_stop),
        "patching, all heads": lambda ids: patched_greedy_decode(donor, recipient, ids, geometry.all_heads(), n_new,
                                                                 no_stop),
    }
    greedy_decode(recipient, prompts[0][:64], 2, no_stop)  # warm-up
    results = {}
    for name, fn in variants.items():
        results[name] = statistics.median(timed(fn, prompts))
    base_time = results["unpatched (own greedy loop)"]
    report = {
        "model": Path(args.model_dir).name, "prompt_tokens": [len(p) for p in prompts], "new_tokens": n_new,
        "threads": args.threads, "merged_adapters": args.merged, "torch": torch.__version__,
        "seconds_per_example": {k: round(v, 3) for k, v in results.items()},
        "ratio_to_unpatched": {k: round(v / base_time, 2) for k, v in results.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
