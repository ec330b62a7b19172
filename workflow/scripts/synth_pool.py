"""Generate one task's shared pool of LLM-written documents (run with the vLLM interpreter).

Input:  resources/models/{generator_model}/ (the generator model, prepared).
Output: results/{study}/synth/{task}/pool.parquet (kind document_pool); resumable through
        results/{study}/synth/{task}/.partial/ (removed after the final atomic write).
Feeds:  the synthetic variants (results/{study}/data/{model}/{task}/train/{variant}.parquet), hence
        Table 1, Figure 3 and the causal tables.

A `shell:` rule runs this file with the interpreter of the chosen backend (vLLM lives in its
own environment), so the arguments come on the command line instead of a `snakemake` object.
vLLM spawns worker processes: the engine is created inside main(), under the __main__ guard.
"""

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--generator-model", required=True)
    parser.add_argument("--backend", required=True, choices=["vllm", "hf"])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--pool-size", type=int, required=True)
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--top-p", type=float, required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--vllm-settings", default="{}", help="JSON of the config's generation.vllm section")
    parser.add_argument("--request-batch", type=int, default=32,
                        help="requests per backend call (HF: one generate batch; also the resume unit)")
    parser.add_argument("--haystack-documents", type=int, default=None,
                        help="SummHay: documents per haystack (sizes the pool's topics)")
    parser.add_argument("--max-template-overlap", type=float, required=True,
                        help="SummHay: reject insight paraphrases whose overlap with the templated statement is above"
                             " this (config generation.max_template_overlap)")
    parser.add_argument("--log", default=None)
    args = parser.parse_args()

    from synthctx.synth.pool import build_pool_file

    build_pool_file(task=args.task, out_path=args.output, model_dir=args.model_dir,
                    generator_model=args.generator_model, backend=args.backend, seed=args.seed,
                    pool_size=args.pool_size, temperature=args.temperature, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens, dtype=args.dtype,
                    vllm_settings=json.loads(args.vllm_settings), request_batch=args.request_batch,
                    haystack_documents=args.haystack_documents,
                    max_template_overlap=args.max_template_overlap, log_path=args.log)


if __name__ == "__main__":
    main()
