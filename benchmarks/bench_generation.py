"""Generation throughput of the synth-stage backends: vLLM vs Hugging Face generate.

Both backends write the same prompts (the document-pool prompts of one task) with the same
sampling settings on the embedded model; the table gives output tokens per second of the
generation itself (model load / engine start reported separately) and the vLLM/HF ratio.
vLLM lives in its own environment, so each backend runs in a subprocess with its own
interpreter (``--worker`` mode) and reports JSON back.

    .venv/bin/python benchmarks/bench_generation.py --prompts 16 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTERPRETERS = {"hf": REPO / ".venv" / "bin" / "python", "vllm": REPO / ".venv-vllm" / "bin" / "python"}


def worker(args: argparse.Namespace) -> None:
    from synthctx.synth.backends import GenerationParams, make_backend
    from synthctx.synth.pool import plan_pool

    items = [it for it in plan_pool(args.task, args.prompts * 2, args.seed) if it["kind"].endswith("article")]
    items = items[: args.prompts]
    started = time.perf_counter()
    backend = make_backend(args.worker, args.model_dir, seed=args.seed, batch_size=args.hf_batch_size,
                           vllm_settings={"gpu_memory_utilization": 0.3, "max_model_len": 2048,
                                          "enforce_eager": True})
    load_s = time.perf_counter() - started
    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=args.seed)
    started = time.perf_counter()
    texts = backend.generate([it["prompt"] for it in items], params, [it["pool_id"] for it in items])
    gen_s = time.perf_counter() - started
    # vLLM logs to stdout too: the result goes to a file.
    Path(args.result).write_text(json.dumps({"backend": args.worker, "prompts": len(texts),
                                             "output_tokens": backend.last_output_tokens, "load_s": load_s,
                                             "generate_s": gen_s, "info": backend.info()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["hf", "vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=str(REPO / "resources" / "models" / "smollm2-135m"))
    parser.add_argument("--task", default="mdqa")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = {}
    for name in ("hf", "vllm"):
        python = INTERPRETERS[name]
        if not python.exists():
            print(f"skipping {name}: {python} not found", file=sys.stderr)
            continue
        cmd = [str(python), __file__, "--worker", name, "--model-dir", args.model_dir, "--task", args.task,
               "--prompts", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens),
               "--hf-batch-size", str(args.hf_batch_size), "--seed", str(args.seed)]
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "result.json"
            proc = subprocess.run(cmd + ["--result", str(result)], capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(result.read_text())
    if not results:
        sys.exit(1)
    base = results.get("hf")
    print(f"\nprompts={args.prompts} max_new_tokens={args.max_new_tokens} task={args.task} "
          f"(HF batch size {args.hf_batch_size}; vLLM one batched call)\n")
    print("| backend | version | load / engine start (s) | generate (s) | output tokens | output tok/s | vs HF |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        tps = r["output_tokens"] / r["generate_s"]
        ratio = tps / (base["output_tokens"] / base["generate_s"]) if base else float("nan")
        print(f"| {name} | {r['info']['backend_version']} | {r['load_s']:.1f} | {r['generate_s']:.1f} | "
              f"{r['output_tokens']} | {tps:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
