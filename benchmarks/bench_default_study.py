"""The default study's speed-ups, each against its baseline measured in the same run.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/bench_default_study.py [--rounds 3] [--only train heads engine]

Comparisons (baseline -> changed), on the embedded model and the study's own artifacts under
``results/default/`` (run the default study first; ``--results`` points elsewhere, e.g. another study's folder):

- ``train``: one LoRA training step (forward + backward, one thread) of a Real (Full) MDQA
  example, fp32 -> ``train.cpu_autocast: bfloat16``; also the loss of each.
- ``heads``: one retrieval-head detection job (``run_task_heads``, Real (Full) MDQA, the first
  ``heads.examples`` of the eval split, one thread), ``heads.batch_size`` 1 -> 4; also whether the
  two head-score tables are equal.
- ``engine``: a vLLM CPU engine's start-up (import + ``build_vllm_engine``, a fresh ``.venv-vllm``
  process each time), vLLM's own KV-cache sizing -> ``generation.vllm.cpu_kv_cache_gib: 1``.

Each comparison runs one warm-up of each side, then ``--rounds`` rounds that alternate which side
goes first, and prints the median seconds with the min-max spread and the ratio changed /
baseline of the medians. The machine is shared: read ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
SPEC = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 640}
HEADS = {"examples": 8, "max_new_tokens": 16, "success_only": False, "success_threshold": 0.5,
         "token_match": "normalized", "success_metric": {"mdqa": "answer_recall"}}


def alternate(run_a, run_b, rounds: int) -> tuple[list[float], list[float], list, list]:
    """Warm-up of each, then ``rounds`` rounds alternating the order; seconds and results per side."""
    run_a(), run_b()
    times_a, times_b, out_a, out_b = [], [], [], []
    for r in range(rounds):
        order = [(run_a, times_a, out_a), (run_b, times_b, out_b)]
        for fn, times, outs in (order if r % 2 == 0 else order[::-1]):
            started = time.perf_counter()
            outs.append(fn())
            times.append(time.perf_counter() - started)
    return times_a, times_b, out_a, out_b


def train_step(results: Path, rounds: int) -> dict:
    import torch

    from synthctx.data.examples import read_examples
    from synthctx.data.prompts import training_ids
    from synthctx.models.loading import load_model, load_tokenizer
    from dataclasses import replace

    import yaml

    from synthctx.train.lora import TrainSettings, attach_lora, cpu_autocast_context, target_token_loss

    # the default study's train: section (the settings have no defaults of their own)
    TRAIN = TrainSettings.from_config(yaml.safe_load((REPO / "config.yaml").read_text())["train"])
    torch.set_num_threads(1)
    model_dir = str(REPO / "resources" / "models" / MODEL)
    tokenizer = load_tokenizer(model_dir)
    example = read_examples(str(results / "data" / MODEL / "mdqa" / "train" / "real_full.parquet"))[0]
    ids, labels = (torch.tensor([x]) for x in training_ids(example, tokenizer))
    model = load_model(model_dir, **SPEC)
    model.config.use_cache = False
    model = attach_lora(model, TRAIN, seed=0)
    model.train()

    def step(autocast):
        context = cpu_autocast_context(replace(TRAIN, cpu_autocast=autocast), "cpu")

        def run():
            with context:
                loss = target_token_loss(model, ids, labels)
            loss.backward()
            model.zero_grad(set_to_none=True)
            return float(loss)
        return run

    fp32, bf16, loss32, loss16 = alternate(step(None), step("bfloat16"), rounds)
    return {"name": "train step (1 thread)", "baseline": "fp32", "changed": "bf16 autocast", "a": fp32, "b": bf16,
            "note": f"{ids.shape[1]} tokens; loss fp32 {loss32[0]:.4f}, bf16 {loss16[0]:.4f}"}


def heads_job(results: Path, rounds: int) -> dict:
    import pandas as pd
    import torch

    from synthctx.heads.retrieval import run_task_heads

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_heads."))

    def job(batch_size):
        def run():
            out = tmp / f"b{batch_size}.parquet"
            run_task_heads(model_dir=str(REPO / "resources" / "models" / MODEL),
                           eval_path=str(results / "data" / MODEL / "mdqa" / "eval.parquet"), output=str(out),
                           model_name=MODEL, task="mdqa", condition="real_full", model_settings=SPEC,
                           heads={**HEADS, "batch_size": batch_size},
                           adapter_dir=str(results / "adapters" / MODEL / "mdqa" / "real_full"), seed=1234,
                           log_path=str(tmp / f"b{batch_size}.log"))
            return pd.read_parquet(out)
        return run

    one, four, frames1, frames4 = alternate(job(1), job(4), rounds)
    same = all(a.equals(b) for a, b in zip(frames1, frames4))
    return {"name": "heads job, MDQA Real (Full), 8 examples", "baseline": "batch 1", "changed": "batch 4",
            "a": one, "b": four, "note": f"head scores equal: {same}"}


ENGINE_CHILD = """
import time, sys
started = time.perf_counter()
from synthctx.models.loading import build_vllm_engine
settings = {"gpu_memory_utilization": 0.3, "enforce_eager": True}
if sys.argv[2] != "none":
    settings["cpu_kv_cache_gib"] = float(sys.argv[2])
llm, kwargs = build_vllm_engine(sys.argv[1], {"dtype": "float32"}, 2048, settings, 1234)
print("SECONDS", time.perf_counter() - started, flush=True)
"""


def engine_startup(results: Path, rounds: int) -> dict:
    # the vLLM environment: SYNTHCTX_VLLM_PYTHON (as the workflow's rules), else this checkout's
    python = Path(os.environ.get("SYNTHCTX_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    env["PYTHONPATH"] = str(REPO / "src")

    def start(gib):
        def run():
            proc = subprocess.run([str(python), "-c", ENGINE_CHILD, str(REPO / "resources" / "models" / MODEL), gib],
                                  capture_output=True, text=True, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("SECONDS")), None)
            if line is None:
                raise RuntimeError(f"engine start-up failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
            return float(line.split()[1])
        return run

    auto, one, inner_auto, inner_one = alternate(start("none"), start("1"), rounds)
    return {"name": "vLLM CPU engine start-up (fresh process)", "baseline": "KV cache auto-sized",
            "changed": "cpu_kv_cache_gib 1", "a": auto, "b": one,
            "note": f"in-process import+build median {statistics.median(inner_auto):.1f} -> "
                    f"{statistics.median(inner_one):.1f} s"}


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} [{min(times):.2f}-{max(times):.2f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=str(REPO / "results" / "default"), help="a study's folder")
    parser.add_argument("--only", nargs="*", choices=["train", "heads", "engine"], default=["train", "heads", "engine"])
    parser.add_argument("--json", default=None, help="also write the raw seconds here")
    args = parser.parse_args(argv)
    results = Path(args.results)
    benches = {"train": train_step, "heads": heads_job, "engine": engine_startup}
    rows = []
    for name in args.only:
        rows.append(benches[name](results, args.rounds))
        print(f"# {name} done", file=sys.stderr, flush=True)
    print(f"\n{args.rounds} alternating rounds after one warm-up of each side; seconds: median [min-max]\n")
    print("| comparison | baseline | changed | baseline s | changed s | ratio (changed / baseline) | note |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = statistics.median(r["b"]) / statistics.median(r["a"])
        print(f"| {r['name']} | {r['baseline']} | {r['changed']} | {spread(r['a'])} | {spread(r['b'])} | "
              f"{ratio:.2f} | {r['note']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
