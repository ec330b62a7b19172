"""Evaluate the base model ("nonft"), the other evaluation-only conditions (``closed_book``: the
base model on the question without the documents) and every trained adapter of one task on its
real eval split.

One call per (model, task): with vLLM a single engine serves all LoRA adapters
(``LoRARequest`` per condition); with HF generate each condition is loaded in turn. Both
backends write the same ``predictions`` table (backend recorded in the metadata), scored
with :func:`synthctx.evaluate.metrics.score_prediction`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from synthctx.evaluate.generate import Generation, end_of_turn_ids, greedy_decode_hf, greedy_decode_vllm, prompt_token_ids
from synthctx.evaluate.metrics import score_prediction
from synthctx.provenance import provenance
from synthctx.schema import ArtifactError, write_table

log = logging.getLogger("synthctx.evaluate")

NONFT = "nonft"
# vLLM accepts only these LoRA ranks as max_lora_rank; the adapter's r is rounded up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def score_generations(task: str, condition: str, examples: Sequence[Mapping[str, Any]], prompts: Sequence[Sequence[int]],
                      generations: Sequence[Generation]) -> pd.DataFrame:
    rows = []
    for ex, prompt, gen in zip(examples, prompts, generations, strict=True):
        score, metrics = score_prediction(task, gen.text, ex)
        rows.append({
            "example_id": ex["example_id"], "task": task, "condition": condition, "prediction": gen.text,
            "score": float(score), "metrics": json.dumps(metrics, sort_keys=True), "prompt_tokens": len(prompt),
            "generated_tokens": gen.generated_tokens,
        })
    return pd.DataFrame(rows)


def check_answer_budget(examples: Sequence[Mapping[str, Any]], tokenizer, max_new_tokens: int, where: str) -> int:
    """Refuse a decoding budget that cannot hold some eval example's gold target and its
    end-of-turn token: a model that answers exactly right would be cut off and scored down (a
    SummHay citation list cut at "[11]" loses its later gold documents). Returns the tokens the
    longest target needs."""
    needed, longest = 0, None
    for ex in examples:
        tokens = len(tokenizer(str(ex["target"]), add_special_tokens=False)["input_ids"]) + 1
        if tokens > needed:
            needed, longest = tokens, ex
    if longest is not None and needed > max_new_tokens:
        task = longest["task"]
        raise ArtifactError(f"{where}: example {longest['example_id']!r}: field 'target' ({longest['target']!r}) needs "
                            f"{needed} tokens with its end-of-turn, above evaluate.max_new_tokens.{task} = "
                            f"{max_new_tokens}: raise the budget")
    return needed


def adapter_rank(adapter_dir: str) -> int:
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if "peft_type" not in cfg:
        raise ArtifactError(f"{adapter_dir}/adapter_config.json: not a LoRA adapter (full fine-tuning needs backend hf)")
    return int(cfg["r"])


def vllm_max_lora_rank(ranks: Sequence[int]) -> int:
    needed = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= needed:
            return allowed
    raise ValueError(f"LoRA rank {needed} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def generate_hf(examples, prompts, tokenizer, model_dir: str, model_settings: Mapping[str, Any],
                adapters: Mapping[str, str], max_new_tokens: int, batch_size: int, progress_file=None,
                base_prompts: Mapping[str, Sequence[Sequence[int]]] | None = None) -> dict[str, list]:
    """Greedy answers per condition: the base model on each of ``base_prompts`` (evaluation-only
    condition -> its prompts; default: ``nonft`` on ``prompts``), then every adapter on ``prompts``."""
    from tqdm import tqdm

    from synthctx.models.loading import load_finetuned

    base_prompts = dict(base_prompts) if base_prompts is not None else {NONFT: prompts}
    out = {}
    stop = end_of_turn_ids(tokenizer)
    total = sum(map(len, base_prompts.values())) + len(prompts) * len(adapters)
    bar = tqdm(total=total, desc="evaluate (hf)", file=progress_file, mininterval=5)
    model = load_finetuned(model_dir, None, model_settings, merge=True)  # loaded once for every base condition
    for condition, base in base_prompts.items():
        out[condition] = greedy_decode_hf(model, tokenizer, base, max_new_tokens, batch_size, stop, progress=bar)
    del model
    for condition, adapter_dir in adapters.items():
        # Merged LoRA weights: identical outputs, no adapter matmuls per token.
        model = load_finetuned(model_dir, adapter_dir, model_settings, merge=True)
        out[condition] = greedy_decode_hf(model, tokenizer, prompts, max_new_tokens, batch_size, stop, progress=bar)
        del model
    bar.close()
    return out


def generate_vllm(prompts, tokenizer, model_dir: str, model_settings: Mapping[str, Any], adapters: Mapping[str, str],
                  max_new_tokens: int, vllm_settings: Mapping[str, Any], seed: int,
                  base_prompts: Mapping[str, Sequence[Sequence[int]]] | None = None) -> dict[str, list]:
    """As :func:`generate_hf`, with one engine: the base model without a LoRA request."""
    from synthctx.models.loading import build_vllm_engine

    base_prompts = dict(base_prompts) if base_prompts is not None else {NONFT: prompts}
    stop = end_of_turn_ids(tokenizer)
    lora = {}
    if adapters:
        lora = dict(enable_lora=True, max_loras=1,
                    max_lora_rank=vllm_max_lora_rank([adapter_rank(d) for d in adapters.values()]))
    # The model settings reach the engine as load_model applies them (RoPE base, window).
    longest = max(len(p) for group in [prompts, *base_prompts.values()] for p in group)
    llm, _ = build_vllm_engine(model_dir, model_settings, longest + max_new_tokens, vllm_settings, seed, **lora)
    from vllm.lora.request import LoRARequest  # after build_vllm_engine set the CPU environment
    out = {condition: greedy_decode_vllm(llm, tokenizer, base, max_new_tokens, None, stop)
           for condition, base in base_prompts.items()}
    for lora_id, (condition, adapter_dir) in enumerate(adapters.items(), start=1):
        log.info("vLLM: condition %s", condition)
        request = LoRARequest(condition, lora_id, str(Path(adapter_dir).resolve()))
        out[condition] = greedy_decode_vllm(llm, tokenizer, prompts, max_new_tokens, request, stop)
    return out


def evaluate_task(*, eval_path: str, model_dir: str, model_settings: Mapping[str, Any], adapters: Mapping[str, str],
                  max_new_tokens: int, backend: str, out_path: str, run_info: Mapping[str, Any] | None = None,
                  vllm_settings: Mapping[str, Any] | None = None, seed: int = 0, batch_size: int = 8,
                  log_path: str | None = None, limit: int | None = None,
                  evaluation_conditions: Sequence[str] = (NONFT,)) -> pd.DataFrame:
    """Decode every condition of one task greedily, score, and write ``predictions.parquet``.

    ``evaluation_conditions``: the base model's conditions (``study.evaluation_conditions``),
    each on the prompts its registry entry names: ``nonft`` on the task's prompts,
    ``closed_book`` on the closed-book prompts (same chat template, decoding and budget)."""
    from synthctx.data.examples import read_examples
    from synthctx.models.loading import load_tokenizer
    from synthctx.study import get_condition

    examples = read_examples(eval_path)[:limit]
    if not examples:
        raise ArtifactError(f"{eval_path}: no eval examples")
    tasks = {ex["task"] for ex in examples}
    if len(tasks) != 1:
        raise ArtifactError(f"{eval_path}: field 'task' mixes {sorted(tasks)}")
    task = tasks.pop()
    tokenizer = load_tokenizer(model_dir)
    check_answer_budget(examples, tokenizer, max_new_tokens, eval_path)
    prompts = prompt_token_ids(examples, tokenizer)
    base_prompts = {}
    for condition in evaluation_conditions:
        found = get_condition(condition)
        if found is None or found.kind != "evaluation_only":
            raise ValueError(f"evaluation condition {condition!r} is not a registered evaluation-only condition")
        base_prompts[condition] = prompts if found.with_documents else prompt_token_ids(examples, tokenizer, False)
    clash = sorted(set(base_prompts) & set(adapters))
    if clash:
        raise ValueError(f"conditions {clash} are both evaluation-only and trained adapters")
    started = time.perf_counter()
    if backend == "vllm":
        generations = generate_vllm(prompts, tokenizer, model_dir, model_settings, adapters, max_new_tokens,
                                    vllm_settings or {}, seed, base_prompts=base_prompts)
    elif backend == "hf":
        from synthctx.logging_utils import progress_stream

        stream = progress_stream(log_path)
        try:
            generations = generate_hf(examples, prompts, tokenizer, model_dir, model_settings, adapters, max_new_tokens,
                                      batch_size, progress_file=stream, base_prompts=base_prompts)
        finally:
            if log_path:
                stream.close()
    else:
        raise ValueError(f"evaluate backend {backend!r}: expected vllm or hf")
    seconds = time.perf_counter() - started
    frame = pd.concat(
        [score_generations(task, condition, examples, base_prompts.get(condition, prompts), gens)
         for condition, gens in generations.items()],
        ignore_index=True,
    )
    means = frame.groupby("condition", sort=False)["score"].mean().round(4).to_dict()
    log.info("%s: mean scores %s (%.1f s, backend %s)", task, means, seconds, backend)
    meta = provenance(seed=seed, backend=backend, task=task, max_new_tokens=max_new_tokens, seconds=seconds,
                      evaluation_conditions=list(base_prompts), adapters={k: str(v) for k, v in adapters.items()}, **dict(run_info or {}))
    write_table(frame, out_path, "predictions", meta)
    return frame
