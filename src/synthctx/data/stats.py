"""``dataset_stats``: one description of a set of examples, real or synthetic.

The real-data build (``results/{study}/data/{model}/{task}/stats/real.parquet``: eval, Real (Full),
Real (Limited) plus the build counts) and every synthetic variant (``stats/{variant}.parquet``:
the variant's set plus its candidate/reject counts) write the same rows (task, condition,
stat, value) with the same definitions:

* ``prompt_tokens_{min,mean,max}``: prompt + target tokens (:func:`synthctx.data.prompts.prompt_length`;
  ``meta.prompt_tokens`` of real examples, ``meta.token_length`` of synthetic ones);
* ``needle_depth_{min,mean,max}``: :func:`needle_depth`, stored per example in ``meta.needle_depth``;
* ``gold_position_{min,mean,max}``: 0-based position of each gold document / (documents - 1)
  (0 = first document, 1 = last);
* ``documents_*``, ``gold_documents_*``, ``needles_*``: counts per example; plus the task's
  ``set_stats`` rows and the counts given.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

# The needle kind that stands for the answer in the symbolic variants (key -> value lookups),
# whose examples carry no needle of the task's primary kind.
SYMBOLIC_ANSWER_KIND = "value"


def describe(values: Sequence[float], name: str) -> dict[str, float]:
    if not values:
        return {}
    return {f"{name}_min": float(min(values)), f"{name}_mean": float(sum(values) / len(values)),
            f"{name}_max": float(max(values))}


def needle_depth(example: Mapping[str, Any], tokenizer) -> float | None:
    """Mean relative token position (0 = prompt start, 1 = end) of the example's primary needles:
    its task's ``primary_needle`` kind, or :data:`SYMBOLIC_ANSWER_KIND` where it has none of that
    kind; None without either."""
    from synthctx.data.prompts import char_spans_to_token_spans, encode_prompt, needle_char_spans, render_prompt
    from synthctx.tasks import get_task

    primary = get_task(example["task"]).primary_needle
    kinds = {n["kind"] for n in example["needles"]}
    kind = primary if primary in kinds else SYMBOLIC_ANSWER_KIND
    if kind not in kinds:
        return None
    rendered = render_prompt(example, tokenizer)
    ids, offsets = encode_prompt(rendered, tokenizer)
    spans = char_spans_to_token_spans(needle_char_spans(example, rendered, [kind]), offsets)
    if not spans or not ids:
        return None
    return sum(start for start, *_ in spans) / len(spans) / len(ids)


def gold_positions(example: Mapping[str, Any]) -> list[int]:
    """0-based positions of the gold documents in the prompt (the ``meta.gold_positions`` convention)."""
    gold = set(example.get("gold_doc_ids") or [])
    return [k for k, doc in enumerate(example["documents"]) if doc["doc_id"] in gold]


def _prompt_tokens(example: Mapping[str, Any]) -> int:
    meta = example["meta"]
    return meta["prompt_tokens"] if "prompt_tokens" in meta else meta["token_length"]


def set_stats(task: str, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The statistics of one set of examples (see the module docstring)."""
    from synthctx.tasks import get_task

    stats: dict[str, float] = {"examples": float(len(examples))}
    stats.update(describe([_prompt_tokens(ex) for ex in examples], "prompt_tokens"))
    stats.update(describe([ex["meta"]["needle_depth"] for ex in examples
                           if ex["meta"].get("needle_depth") is not None], "needle_depth"))
    stats.update(describe([len(ex["documents"]) for ex in examples], "documents"))
    stats.update(describe([len(ex["gold_doc_ids"]) for ex in examples], "gold_documents"))
    stats.update(describe([len(ex["needles"]) for ex in examples], "needles"))
    stats.update(describe([p / max(1, len(ex["documents"]) - 1) for ex in examples for p in gold_positions(ex)],
                          "gold_position"))
    stats.update(get_task(task).set_stats(examples))
    return stats


def dataset_stats(task: str, sets: Mapping[str, Sequence[Mapping[str, Any]]], counts: Mapping[str, float],
                  counts_condition: str) -> pd.DataFrame:
    """Rows (task, condition, stat, value): :func:`set_stats` of each set (by condition), then
    ``counts`` (build or generation counts) under ``counts_condition``."""
    from synthctx.schema import SCHEMAS

    rows = []
    for condition, examples in sets.items():
        rows += [{"task": task, "condition": condition, "stat": k, "value": float(v)}
                 for k, v in set_stats(task, examples).items()]
    rows += [{"task": task, "condition": counts_condition, "stat": k, "value": float(v)}
             for k, v in counts.items()]
    return pd.DataFrame(rows, columns=SCHEMAS["dataset_stats"].names)
