"""Greedy evaluation of one (model, task): the base model's evaluation-only conditions ("nonft";
"closed_book": the question without the documents) and every trained adapter.

Input:  results/{study}/data/{model}/{task}/eval.parquet (examples), the prepared model,
        results/{study}/adapters/{model}/{task}/{condition}/ for every trained condition.
Output: results/{study}/eval/{model}/{task}/predictions.parquet (predictions, scored).
Feeds:  Table 1 (rule score_table; target table1), the head similarity / correlation analyses (scores).

A `shell:` rule runs this script with the backend's interpreter (vLLM has its own
environment), so it takes command-line arguments instead of the `snakemake` object.
"""

import argparse
import json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval", required=True, help="eval examples Parquet")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--adapter", action="append", default=[], metavar="CONDITION=DIR",
                        help="a trained adapter (repeatable)")
    parser.add_argument("--settings", required=True, help="JSON: model_spec, max_new_tokens, batch_size, vllm, seed, model, "
                        "evaluation_conditions (default: nonft only)")
    parser.add_argument("--backend", choices=["vllm", "hf"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", default=None)
    return parser.parse_args(argv)


def main(argv=None):
    from synthctx.evaluate.run import evaluate_task
    from synthctx.logging_utils import setup_logging

    args = parse_args(argv)
    log = setup_logging(args.log)
    settings = json.loads(args.settings)
    adapters = dict(a.split("=", 1) for a in args.adapter)
    frame = evaluate_task(
        eval_path=args.eval, model_dir=args.model_dir, model_settings=settings["model_spec"], adapters=adapters,
        max_new_tokens=int(settings["max_new_tokens"]), backend=args.backend, out_path=args.out,
        run_info={"model": settings.get("model")}, vllm_settings=settings.get("vllm"), seed=int(settings["seed"]),
        batch_size=int(settings["batch_size"]), log_path=args.log,
        evaluation_conditions=settings["evaluation_conditions"],
    )
    log.info("wrote %d predictions to %s", len(frame), args.out)


if __name__ == "__main__":  # vLLM spawns workers: the engine must be created under this guard
    main()
