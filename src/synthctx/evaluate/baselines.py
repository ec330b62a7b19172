"""Trivial baselines that every trained condition must beat to count as having learned the task.

A fine-tuned model can look good by learning the answer *format* alone: on SummHay, citing every
document of the prompt scores F1 2k/(n+k) with k gold of n documents; on the QA tasks, always
giving the most frequent training answer scores whatever that answer overlaps with. Table 1 and
the recipe sweep score these predictions on the same eval examples as the models (paired).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from synthctx.data.prompts import citation_target
from synthctx.evaluate.metrics import normalize_answer

TRIVIAL = "trivial"


def trivial_description(task: str) -> str:
    """What the trivial baseline predicts for ``task`` (Table 1's note)."""
    from synthctx.tasks import get_task

    return get_task(task).trivial_description


def most_frequent_answer(train_examples: Sequence[Mapping[str, Any]]) -> str:
    """The training target that occurs most often after SQuAD normalisation.

    Ties go to the normalised answer that sorts first, and the returned text is the first
    training example's spelling of it, so the choice never depends on file order beyond that.
    """
    if not train_examples:
        raise ValueError("most frequent answer: no training examples")
    counts = Counter(normalize_answer(str(ex["target"])) for ex in train_examples)
    best = min(counts, key=lambda answer: (-counts[answer], answer))
    return next(str(ex["target"]) for ex in train_examples if normalize_answer(str(ex["target"])) == best)


def cite_all_prediction(example: Mapping[str, Any]) -> str:
    """Every document of the prompt cited, in the target format (``[1][2]...[n]``)."""
    return citation_target([str(doc["doc_id"]) for doc in example["documents"]])


def trivial_predictions(task: str, eval_examples: Sequence[Mapping[str, Any]],
                        train_examples: Sequence[Mapping[str, Any]]) -> list[str]:
    """The trivial baseline's prediction for each eval example (the task's own rule)."""
    from synthctx.tasks import get_task

    return get_task(task).trivial_predictions(eval_examples, train_examples)


def distinct_predictions(predictions: Sequence[str]) -> int:
    """How many different answers a condition gave (after SQuAD normalisation): 1 is a constant model."""
    return len({normalize_answer(p) if not p.lstrip().startswith("[") else "".join(p.split()) for p in predictions})
