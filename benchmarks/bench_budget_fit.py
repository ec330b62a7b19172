"""Fitting synthetic examples to the context budget: bisection vs dropping one document at a time.

    python benchmarks/bench_budget_fit.py --model-dir resources/models/smollm2-135m \\
        --task musique --budget 8192 --documents 60 --examples 20

Builds the same variant twice from a FakeBackend pool (seeded), once with
``synthctx.synth.variants.fit_to_budget`` (bisection over the number of dropped distractors)
and once with the one-at-a-time reference, checks that both give identical examples, and prints
seconds per example and the ratio (same run, same tokenizer).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from synthctx.data.prompts import prompt_length
from synthctx.models.loading import load_tokenizer
from synthctx.synth import variants
from synthctx.synth.backends import GenerationParams
from synthctx.synth.pool import generate_pool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakes import FakeBackend  # noqa: E402 - the tests' stand-in LLM (not part of the library)


def fit_one_at_a_time(draft, settings, tokenizer, example_id):
    dropped = 0
    while True:
        example = variants.finalize(draft, settings, example_id)
        tokens = prompt_length(example, tokenizer)
        if tokens <= settings.context_tokens:
            return example, tokens, dropped
        if not draft.droppable:
            raise variants.Reject("over_budget")
        draft = variants.without_last_droppable(draft, 1)
        dropped += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--task", default="musique", choices=["mdqa", "musique", "summhay"])
    parser.add_argument("--variant", default="low_low")
    parser.add_argument("--budget", type=int, default=8192)
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--pool-size", type=int, default=120)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model_dir)
    with tempfile.TemporaryDirectory() as partial:
        pool, _ = generate_pool(args.task, FakeBackend(), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=1), args.pool_size, partial, "fake")
    results = {}
    bisect = variants.fit_to_budget
    for name, fit in (("one at a time", fit_one_at_a_time), ("bisection", bisect)):
        variants.fit_to_budget = fit
        start = time.perf_counter()
        examples, stats = variants.build_variant(args.task, args.variant, pool, tokenizer, 1, args.examples,
                                                 args.budget, args.documents, 2)
        results[name] = (time.perf_counter() - start, examples, stats)
    variants.fit_to_budget = bisect
    same = results["one at a time"][1] == results["bisection"][1]
    dropped = results["bisection"][2].set_index("stat")["value"]["distractors_dropped"] / args.examples
    print(f"{args.task}/{args.variant}, budget {args.budget}, {args.documents} documents, {args.examples} examples; "
          f"identical examples: {same}; distractors dropped per example: {dropped:.1f}")
    print("| fit | s / example | x one at a time |")
    print("|---|---|---|")
    base = results["one at a time"][0]
    for name, (seconds, _, _) in results.items():
        print(f"| {name} | {seconds / args.examples:.3f} | {base / seconds:.2f}x |")
    if not same:
        raise SystemExit("the two fits disagree")


if __name__ == "__main__":
    main()
