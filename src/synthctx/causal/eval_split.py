"""Which real eval examples rank the heads and which ones the causal tests run on.

A task's eval split (file order of ``results/{study}/data/{model}/{task}/eval.parquet``; Table 1 scores
all of it) is cut in two disjoint parts, so knockout and patching never test heads on the
examples that chose them:

* ranking part: the first ``heads.examples`` examples (``heads.task_examples[task]`` overrides
  it for one task); retrieval-head detection decodes exactly these
  (``synthctx.heads.retrieval`` takes the first N of the file);
* causal part: the next ``causal.examples`` (``causal.task_examples[task]``).

The two counts must fit the split: ``data.eval_examples`` (or ``data.<task>.eval_examples``)
>= ranking + causal. Rules check the configured counts when the workflow is parsed; the jobs
check the file itself (the data stage builds fewer examples when too few fit the budget).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def task_examples(section: Mapping[str, Any], task: str) -> int:
    """The example count of a ``heads:`` or ``causal:`` config section for one task:
    ``task_examples[task]`` where given, else ``examples``."""
    return int((section.get("task_examples") or {}).get(task, section["examples"]))


def split_error(task: str, available: int, ranking: int, causal: int, what: str) -> str | None:
    """Why an eval split of ``available`` examples cannot hold both parts (None when it can)."""
    if ranking + causal <= available:
        return None
    return (f"{task}: {what} = {available} eval examples cannot hold the head-ranking part "
            f"(heads.examples / heads.task_examples.{task} = {ranking}) and a disjoint causal part after it "
            f"(causal.examples / causal.task_examples.{task} = {causal}): {ranking} + {causal} = "
            f"{ranking + causal} > {available}; lower one of them or raise the eval split")


def causal_split(examples: Sequence[Mapping[str, Any]], ranking: int, causal: int, *, task: str,
                 source: str) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(ranking part, causal part) of an eval split read from ``source``, in file order.

    Every example must be of ``task`` (the file holds one task); the parts are disjoint by
    position and, checked here, by ``example_id``.
    """
    for index, example in enumerate(examples):
        if example["task"] != task:
            raise ValueError(f"{source}: record {index} ({example['example_id']!r}): field task is "
                             f"{example['task']!r}, expected {task!r}")
    problem = split_error(task, len(examples), ranking, causal, f"{source} holds")
    if problem:
        raise ValueError(problem)
    ranking_part, causal_part = list(examples[:ranking]), list(examples[ranking:ranking + causal])
    shared = {ex["example_id"] for ex in ranking_part} & {ex["example_id"] for ex in causal_part}
    if shared:
        raise ValueError(f"{source}: example ids {sorted(shared)} occur in both the ranking and the causal part")
    return ranking_part, causal_part


def check_heads_disjoint(head_meta: Mapping[str, Any], causal_ids: Sequence[str], head_scores_path: str) -> None:
    """Refuse head scores whose detection decoded any causal example.

    The heads job records every decoded example in its metadata (``predictions``); older tables
    without that record are taken as ranked on the first ``heads.examples``.
    """
    decoded = {str(p["example_id"]) for p in head_meta.get("predictions") or [] if "example_id" in p}
    shared = decoded & set(causal_ids)
    if shared:
        raise ValueError(f"{head_scores_path}: the heads were ranked on example ids {sorted(shared)}, "
                         "which the causal test would also run on (heads.examples and causal.examples "
                         "must pick disjoint parts of the eval split)")
