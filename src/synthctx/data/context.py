"""Build normalized examples from raw records, fitted to the model's context budget.

The budget (``context_tokens``) bounds :func:`synthctx.data.prompts.prompt_length`: prompt
plus target, chat template included, counted with the model's own tokenizer. Each task's
builder (in its module, ``synthctx.tasks.<task>``) yields progressively smaller variants of
one example and keeps the first that fits (:func:`fit_to_budget`); an example whose smallest
variant is still too long is dropped and counted by the caller (reason ``budget``).

Document ids are the 1-based positions in the prompt (the number in ``Document [i]``),
for every task, so a citation and a position are the same thing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from synthctx.data.loaders import Passage
from synthctx.data.prompts import prompt_length
from synthctx.provenance import derived_seed

# Placeholders until the split assigns the example (splits.assign): ``**UNSPLIT`` in make_example.
UNSPLIT = {"split": "train", "condition": "real_full"}


# --------------------------------------------------------------------------- budget


def fits_budget(example: Mapping[str, Any], tokenizer, context_tokens: int) -> tuple[bool, int]:
    """Whether prompt + target of ``example`` fit ``context_tokens``, and the token count."""
    length = prompt_length(example, tokenizer)
    return length <= context_tokens, length


def fit_to_budget(
    variants: Iterable[dict[str, Any]], tokenizer, context_tokens: int
) -> tuple[dict[str, Any] | None, int]:
    """The first of ``variants`` (largest first) that fits the budget, with its length.

    ``variants`` may be a lazy generator: variants after the first that fits are never
    built. Returns ``(None, smallest_length_seen)`` when none fits. The chosen example
    gets ``meta["prompt_tokens"]``. The synthetic stage can reuse this with its own
    generator of shrinking examples.
    """
    last = -1
    for example in variants:
        ok, last = fits_budget(example, tokenizer, context_tokens)
        if ok:
            example["meta"]["prompt_tokens"] = last
            return example, last
    return None, last


@dataclass
class Built:
    """Outcome of building one candidate: an example, or the reason it was dropped."""

    example: dict[str, Any] | None
    # budget | no_answer_span | no_supporting_paragraph | no_gold_documents | unanswerable | weak_insight_match
    reason: str = ""
    # SummHay: the best-sentence unigram F1 of every gold document of the insight, kept or not
    insight_matches: tuple[float, ...] = ()


@dataclass
class Candidate:
    """A raw item that may become an example; built lazily in split (hash) order."""

    example_id: str
    group: str  # SummHay: topic id (split unit); otherwise the example id
    build: Callable[[], Built]
    # Keys shared by candidates that must land on the same side of the eval/train split
    # (MuSiQue sub-question ids and supporting paragraphs, MDQA gold passage and question).
    links: tuple[str, ...] = ()


def passage_key(passage: Passage) -> str:
    """A passage's identity across records: title and text, case and spacing ignored."""
    return " ".join(passage.title.casefold().split()) + "\n" + " ".join(passage.text.casefold().split())


def seeded_rng(seed: int, *parts: Any) -> random.Random:
    """A generator seeded from the study seed and ``parts`` (what is drawn, for which record)."""
    return random.Random(derived_seed(seed, *parts))


def numbered_documents(passages: Sequence[Passage]) -> list[dict[str, str]]:
    """Prompt documents of ``passages`` in order, ``doc_id`` their 1-based position."""
    return [{"doc_id": str(i), "title": p.title, "text": p.text} for i, p in enumerate(passages, start=1)]
