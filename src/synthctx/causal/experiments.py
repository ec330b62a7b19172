"""The two causal experiments end to end: knockout (Figure 4) and patching (Table 3).

Each function loads the models, decodes the causal part of the real eval split greedily under
every intervention (the ``examples`` examples after the ``ranking_examples`` that ranked the
heads, see ``synthctx.causal.eval_split``), scores the predictions with the task metric and
writes one ``intervention_predictions`` table whose metadata lists the ranking and the causal
example ids (nothing is written unless every run finished).

Interventions and their ``intervention`` labels:

* knockout: ``none`` (the unmasked model), ``knockout_topk`` (the model's own top-K retrieval
  heads), ``knockout_random`` (``draw`` = 0..R-1: K random heads outside its top
  ``random_exclude_top``);
* patching: ``none`` (the unpatched recipient), ``patch_intersection``, ``patch_complement``,
  ``patch_random``.

The ``mean`` knockout operator takes its per-head means over every prompt position of the same
(causal) examples (unmasked prefill), the only real-task prompts a knockout job decodes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from synthctx.causal.eval_split import causal_split, check_heads_disjoint
from synthctx.causal.head_sets import PATCH_SETS, knockout_random_heads, patch_head_sets, positive_ranking, ranked_heads
from synthctx.causal.interventions import Head, head_geometry, head_output_means, mask_heads
from synthctx.causal.patching import patched_greedy_decode, patched_greedy_decode_batch
from synthctx.causal.settings import KnockoutSettings, PatchingSettings
from synthctx.models.decoding import decode_in_groups, decode_text, greedy_decode, greedy_decode_batch
from synthctx.models.loading import pad_token_id, stop_token_ids
from synthctx.provenance import derived_seed, provenance
from synthctx.schema import read_metadata, read_table, write_table
from synthctx.study import recipe_reference

log = logging.getLogger("synthctx.causal")


def _score(task: str, prediction: str, example: Mapping[str, Any]) -> float:
    from synthctx.evaluate.metrics import score_prediction  # lazy: written by the evaluate stage

    return float(score_prediction(task, prediction, example)[0])


def select_eval_examples(eval_path: str, ranking_examples: int, examples: int, task: str,
                         head_scores_paths: Sequence[str] = ()):
    """The ids of the ranking part of ``task``'s eval split and the causal part after it: the
    ``examples`` examples after the first ``ranking_examples``. Each head-score table is checked
    not to have decoded a causal example. Runs before any model is loaded, so a bad split fails fast.
    """
    from synthctx.data.examples import read_examples

    ranking, chosen = causal_split(read_examples(eval_path), ranking_examples, examples, task=task, source=eval_path)
    causal_ids = [ex["example_id"] for ex in chosen]
    for path in head_scores_paths:
        check_heads_disjoint(read_metadata(path), causal_ids, path)
    return [ex["example_id"] for ex in ranking], chosen


def encode_prompts(examples, tokenizer):
    """Prompt token ids of each example (the chat template the other stages use)."""
    from synthctx.data.prompts import encode_prompt, render_prompt

    return [encode_prompt(render_prompt(ex, tokenizer), tokenizer)[0] for ex in examples]


def _split_meta(ranking_ids: Sequence[str], exs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Which eval examples ranked the heads and which ones this run decoded (disjoint)."""
    return {"ranking_examples": len(ranking_ids), "ranking_example_ids": list(ranking_ids),
            "examples": len(exs), "example_ids": [ex["example_id"] for ex in exs]}


def _heads_json(heads: Sequence[Head]) -> str:
    return json.dumps([[int(layer), int(head)] for layer, head in heads])


def _progress(total: int, log_path: str | None, desc: str):
    from tqdm import tqdm

    from synthctx.logging_utils import progress_stream

    return tqdm(total=total, desc=desc, file=progress_stream(log_path), mininterval=10)


def _decode_all(decode: Callable[[Sequence[int]], list[int]],
                decode_batch: Callable[[list[Sequence[int]]], list[list[int]]], batch_size: int,
                tokenizer, task, examples, prompts, base_row, bar):
    """Score every example's greedy answer; rows in example order.

    ``batch_size`` 1 decodes each prompt alone (``decode``); more decodes length-sorted groups
    together (``decode_batch``), which on a GPU costs about what one prompt does.
    """
    answers = decode_in_groups(prompts, batch_size, decode, decode_batch, bar)
    rows = []
    for example, answer in zip(examples, answers):
        prediction = decode_text(tokenizer, answer)
        rows.append({**base_row, "example_id": example["example_id"], "prediction": prediction,
                     "score": _score(task, prediction, example)})
    return rows


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _load(model_dir: str, settings: Mapping[str, Any], adapter_dir: str | None):
    from synthctx.models.loading import load_finetuned  # LoRA adapter or full fine-tuned weights

    # Merged LoRA weights: hooks act on plain q_proj/o_proj modules, no adapter matmuls per token.
    return load_finetuned(model_dir, adapter_dir, dict(settings), merge=True)


def run_knockout(*, model_dir: str, settings: Mapping[str, Any], adapter_dir: str | None, eval_path: str,
                 head_scores_path: str, out_path: str, model_name: str, task: str, condition: str,
                 knockout: KnockoutSettings, log_path: str | None = None, threads: int | None = None) -> pd.DataFrame:
    """Knockout of a model's own top-K retrieval heads vs random heads (Figure 4).

    ``knockout.positive_heads_only`` false lets heads that never retrieved fill the top set (config
    ``causal.positive_heads_only``: rehearsals on random weights, whose heads never copy)."""
    from synthctx.models.loading import load_tokenizer

    top_k, random_exclude_top, random_draws = knockout.top_k, knockout.random_exclude_top, knockout.random_draws
    operator, ranking_examples, examples = knockout.operator, knockout.ranking_examples, knockout.examples
    max_new_tokens, seed, head_kind = knockout.max_new_tokens, knockout.seed, knockout.head_kind
    batch_size, positive_heads_only = knockout.batch_size, knockout.positive_heads_only
    _set_threads(threads)
    ranking_ids, exs = select_eval_examples(eval_path, ranking_examples, examples, task, [head_scores_path])
    tokenizer = load_tokenizer(model_dir)
    model = _load(model_dir, settings, adapter_dir)
    geometry = head_geometry(model)
    ranking = ranked_heads(read_table(head_scores_path, "head_scores"), head_kind, head_scores_path)
    if len(ranking) != geometry.num_layers * geometry.num_heads:
        raise ValueError(f"{head_scores_path}: {len(ranking)} {head_kind} heads scored, "
                         f"model has {geometry.num_layers * geometry.num_heads}")
    prompts = encode_prompts(exs, tokenizer)
    stops = stop_token_ids(tokenizer)
    pad_id = pad_token_id(tokenizer, stops)
    means = head_output_means(model, prompts) if operator == "mean" else None

    # Only heads that retrieved at all count as retrieval heads (as in synthctx.analysis): with
    # fewer than K positive heads the top set is smaller, and so is each random control set.
    if positive_heads_only:
        ranking = positive_ranking(read_table(head_scores_path, "head_scores"), ranking, head_kind)
    top = sorted(ranking[:top_k])
    runs: list[tuple[str, int, list[Head]]] = [("none", 0, []), ("knockout_topk", 0, top)]
    for draw in range(random_draws):
        draw_seed = derived_seed(seed, "knockout_random", model_name, task, condition, draw)
        runs.append(("knockout_random", draw,
                     knockout_random_heads(geometry.all_heads(), ranking, len(top), random_exclude_top, draw_seed)))
    log.info("knockout %s/%s/%s: %d examples x %d runs, operator %s", model_name, task, condition,
             len(exs), len(runs), operator)
    rows = []
    started = time.perf_counter()
    with _progress(len(exs) * len(runs), log_path, f"knockout {task}/{condition}") as bar:
        for intervention, draw, heads in runs:
            base_row = {"model": model_name, "task": task, "condition": condition, "intervention": intervention,
                        "draw": draw, "heads": _heads_json(heads)}
            with mask_heads(model, heads, operator, means):
                rows += _decode_all(
                    lambda ids: greedy_decode(model, ids, max_new_tokens, stops),
                    lambda batch: greedy_decode_batch(model, batch, max_new_tokens, stops, pad_id),
                    batch_size, tokenizer, task, exs, prompts, base_row, bar)
            log.info("%s draw %d: mean score %.3f", intervention, draw,
                     sum(r["score"] for r in rows[-len(exs):]) / len(exs))
    frame = pd.DataFrame(rows)
    write_table(frame, out_path, "intervention_predictions", provenance(
        seed=seed, model=model_name, task=task, condition=condition, operator=operator, top_k=top_k,
        random_exclude_top=random_exclude_top, random_draws=random_draws, head_kind=head_kind,
        max_new_tokens=max_new_tokens, batch_size=batch_size, seconds=round(time.perf_counter() - started, 1),
        **_split_meta(ranking_ids, exs)))
    return frame


def run_patching(*, model_dir: str, settings: Mapping[str, Any], donor_adapter: str | None,
                 recipient_adapter: str | None, eval_path: str, donor_scores_path: str,
                 recipient_scores_path: str, out_path: str, model_name: str, task: str, recipient: str,
                 patching: PatchingSettings, donor: str | None = None, log_path: str | None = None,
                 threads: int | None = None) -> pd.DataFrame:
    """Patch the Real (Full) model's heads into a synthetic-data model (Table 3); for
    ``patching.positive_heads_only`` see :func:`run_knockout`. ``donor``: the donor condition's
    name, recorded in the metadata; None (workflow/scripts/patching.py): the Real (Full) model of
    the recipient's training recipe (:func:`synthctx.study.recipe_reference`), the one whose
    adapter and head scores rule ``patching`` reads."""

    from synthctx.models.loading import load_tokenizer

    top_k, ranking_examples, examples = patching.top_k, patching.ranking_examples, patching.examples
    max_new_tokens, seed, head_kind = patching.max_new_tokens, patching.seed, patching.head_kind
    batch_size, positive_heads_only = patching.batch_size, patching.positive_heads_only
    donor = recipe_reference(recipient) if donor is None else donor
    _set_threads(threads)
    ranking_ids, exs = select_eval_examples(eval_path, ranking_examples, examples, task,
                                            [donor_scores_path, recipient_scores_path])
    tokenizer = load_tokenizer(model_dir)
    donor_model = _load(model_dir, settings, donor_adapter)
    recipient_model = _load(model_dir, settings, recipient_adapter)
    geometry = head_geometry(recipient_model)
    donor_table = read_table(donor_scores_path, "head_scores")
    recipient_table = read_table(recipient_scores_path, "head_scores")
    # Top-K sets hold only heads with a positive score (as in synthctx.analysis).
    donor_ranking = ranked_heads(donor_table, head_kind, donor_scores_path)
    recipient_ranking = ranked_heads(recipient_table, head_kind, recipient_scores_path)
    if positive_heads_only:
        donor_ranking = positive_ranking(donor_table, donor_ranking, head_kind)
        recipient_ranking = positive_ranking(recipient_table, recipient_ranking, head_kind)
    sets = patch_head_sets(donor_ranking, recipient_ranking, top_k, geometry.all_heads(),
                           derived_seed(seed, "patch_random", model_name, task, recipient))
    prompts = encode_prompts(exs, tokenizer)
    stops = stop_token_ids(tokenizer)
    pad_id = pad_token_id(tokenizer, stops)
    runs = [("none", [])] + [(f"patch_{name}", sets[name]) for name in PATCH_SETS]
    log.info("patching %s/%s/%s (donor %s): sets %s", model_name, task, recipient, donor,
             {k: len(v) for k, v in sets.items()})
    rows = []
    started = time.perf_counter()
    with _progress(len(exs) * len(runs), log_path, f"patching {task}/{recipient}") as bar:
        for intervention, heads in runs:
            base_row = {"model": model_name, "task": task, "condition": recipient, "intervention": intervention,
                        "draw": 0, "heads": _heads_json(heads)}
            rows += _decode_all(
                lambda ids: patched_greedy_decode(donor_model, recipient_model, ids, heads, max_new_tokens, stops),
                lambda batch: patched_greedy_decode_batch(donor_model, recipient_model, batch, heads, max_new_tokens,
                                                          stops, pad_id),
                batch_size, tokenizer, task, exs, prompts, base_row, bar)
            log.info("%s (%d heads): mean score %.3f", intervention, len(heads),
                     sum(r["score"] for r in rows[-len(exs):]) / len(exs))
    frame = pd.DataFrame(rows)
    write_table(frame, out_path, "intervention_predictions", provenance(
        seed=seed, model=model_name, task=task, condition=recipient, donor=donor, top_k=top_k,
        head_kind=head_kind, max_new_tokens=max_new_tokens, batch_size=batch_size,
        seconds=round(time.perf_counter() - started, 1), **_split_meta(ranking_ids, exs)))
    return frame
