"""Check that LoRA training on a GPU in bf16 (SDPA, gradient checkpointing) follows the CPU fp32 run.

Trains the same examples with the same seed and hyper-parameters twice, once on the CPU in
fp32 and once on CUDA in bf16, and prints the per-step losses side by side with their
relative difference. LoRA dropout is set to 0 so both runs draw no random masks (CPU and
CUDA random streams differ). Used for issue 4's "loss matches the CPU run's first steps".

    python benchmarks/check_bf16_training.py --model-dir resources/models/smollm2-135m \
        --train results/default/data/smollm2-135m/mdqa/train/real_full.parquet --examples 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from synthctx.data.examples import read_examples
from synthctx.schema import read_table
from synthctx.train.lora import TrainSettings, train_condition


def run(device: str, dtype: str, args, examples) -> list[float]:
    settings = TrainSettings(
        method="lora", weight_decay=0.0, max_grad_norm=1.0,
        lora={"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        learning_rate=args.lr, epochs=1, batch_size=1, gradient_accumulation=1, warmup_ratio=0.0,
        checkpoint_every=0, gradient_checkpointing="auto",
    )
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as ckpt:
        start = time.perf_counter()
        train_condition(examples=examples, model_dir=args.model_dir,
                        model_settings={"dtype": dtype, "attn_implementation": "sdpa"}, settings=settings,
                        seed=args.seed, out_dir=out, checkpoint_dir=ckpt, device=device)
        seconds = time.perf_counter() - start
        curve = read_table(f"{out}/train_curve.parquet", "train_curve")
    print(f"{device} {dtype}: {len(curve)} steps in {seconds:.1f} s", flush=True)
    return curve["loss"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", default=None, help="also write the losses here")
    args = parser.parse_args()
    examples = read_examples(args.train)[: args.examples]
    cpu = run("cpu", "float32", args, examples)
    gpu = run("cuda", "bfloat16", args, examples)
    print("| step | CPU fp32 loss | GPU bf16 loss | relative difference |")
    print("|---|---|---|---|")
    rel = []
    for step, (a, b) in enumerate(zip(cpu, gpu), start=1):
        rel.append(abs(a - b) / max(abs(a), 1e-8))
        print(f"| {step} | {a:.4f} | {b:.4f} | {rel[-1]:.2%} |")
    print(f"max relative difference over {len(rel)} steps: {max(rel):.2%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": cpu, "gpu": gpu, "relative": rel}, fh)


if __name__ == "__main__":
    main()
