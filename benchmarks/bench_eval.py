"""Greedy evaluation throughput: vLLM (CPU build) vs HF generate, embedded SmolLM2-135M.

    .venv/bin/python benchmarks/bench_eval.py [--examples 8] [--max-new-tokens 24]

Both backends decode the same task prompts (synthctx.evaluate.generate, real eval examples
of results/default/data/smollm2-135m/<task>/eval.parquet, or hand-made examples when absent). HF runs
in this interpreter (batched, left padding); vLLM runs in .venv-vllm (a subprocess of this
same script with --worker vllm). Reports set-up time (model load / engine start), decode
time, prompt and generated tokens per second, and how many greedy predictions agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "resources" / "models" / "smollm2-135m"


def load_examples(task: str, n: int):
    from synthctx.data.examples import read_examples

    path = REPO / "results" / "default" / "data" / "smollm2-135m" / task / "eval.parquet"  # the default study's
    if path.exists():
        return read_examples(str(path))[:n]
    sys.path.insert(0, str(REPO / "tests"))
    from test_eval import eval_examples  # hand-made MDQA examples

    return eval_examples(n)


def worker(backend: str, task: str, n: int, max_new_tokens: int, batch_size: int) -> dict:
    import torch

    from synthctx.evaluate.generate import greedy_decode_hf, greedy_decode_vllm, prompt_token_ids
    from synthctx.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(MODEL_DIR))
    prompts = prompt_token_ids(load_examples(task, n), tokenizer)
    start = time.perf_counter()
    if backend == "hf":
        model = load_model(str(MODEL_DIR))
        setup = time.perf_counter() - start
        start = time.perf_counter()
        gens = greedy_decode_hf(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size)
    else:
        from vllm import LLM

        llm = LLM(model=str(MODEL_DIR), dtype="float32", max_model_len=max(map(len, prompts)) + max_new_tokens,
                  gpu_memory_utilization=0.3, enforce_eager=True, seed=0)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        gens = greedy_decode_vllm(llm, tokenizer, prompts, max_new_tokens)
    decode = time.perf_counter() - start
    return {"backend": backend, "threads": torch.get_num_threads(), "setup_s": setup, "decode_s": decode,
            "prompts": len(prompts), "prompt_tokens": sum(map(len, prompts)),
            "generated_tokens": sum(g.generated_tokens for g in gens), "predictions": [g.text for g in gens]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mdqa")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--worker", choices=["hf", "vllm"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.task, args.examples, args.max_new_tokens, args.batch_size)))
        return 0

    rows = []
    for backend, python in (("hf", sys.executable), ("vllm", args.vllm_python)):
        if not Path(python).exists():
            print(f"# {backend}: interpreter {python} missing, skipped")
            continue
        cmd = [python, __file__, "--worker", backend, "--task", args.task, "--examples", str(args.examples),
               "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size)]
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"# {backend} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            continue
        rows.append(json.loads(line[len("RESULT "):]))
    print(f"\n{args.examples} {args.task} prompts, greedy, max_new_tokens={args.max_new_tokens}\n")
    print("| backend | threads | set-up s | decode s | prompt tok/s | generated tok/s | speed-up (decode) |")
    print("|---|---|---|---|---|---|---|")
    base = next((r for r in rows if r["backend"] == "hf"), None)
    for r in rows:
        speed = f"{base['decode_s'] / r['decode_s']:.2f}x" if base else "-"
        print(f"| {r['backend']} | {r['threads']} | {r['setup_s']:.1f} | {r['decode_s']:.1f} | "
              f"{r['prompt_tokens'] / r['decode_s']:.0f} | {r['generated_tokens'] / r['decode_s']:.1f} | {speed} |")
    if len(rows) == 2:
        same = sum(a == b for a, b in zip(rows[0]["predictions"], rows[1]["predictions"]))
        print(f"\nidentical greedy predictions HF vs vLLM: {same}/{len(rows[0]['predictions'])}")
        for a, b in zip(rows[0]["predictions"], rows[1]["predictions"]):
            if a != b:
                print(f"  hf={a!r}  vllm={b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
