"""Per-example task metrics (Table 1 scores), following each task's official definition.

- MDQA (Lost in the Middle): SQuAD-normalized token F1, max over the accepted answers (the
  Table 1 score), plus ``best_subspan_em`` (1 if any normalized answer is a substring of the
  normalized first line of the prediction; the first-line cut is upstream's, it keeps a model
  that copies context from getting credit). Upstream drops the articles with the ``regex``
  package, whose word characters (hence ``\b``) include combining marks, which ``re``'s do
  not; ``best_subspan_em`` does the same. F1 and EM keep ``re``, as SQuAD's and MuSiQue's
  scripts do.
- MuSiQue: answer F1 and EM as in the official ``metrics/answer.py``: SQuAD normalization,
  bag-of-token F1, max over answer + aliases (``example["answers"]``).
- SummHay Citation: SummHay's citation precision / recall / F1 (``utils_eval.py``): every
  integer inside a bracket group of digits, commas and plain spaces (``[3]``, ``[3, 7]``; not
  a newline, tab or no-break space) is a cited document; duplicates collapse (sets); F1 = 0
  when P + R = 0.

All functions are pure and cheap; ``score_prediction`` is the one entry point used by
evaluation, knockout and patching, so every stage scores identically.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any, Iterable, Mapping

import regex

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
# Lost in the Middle's articles pattern: the same text, but ``regex``'s word boundaries (a
# combining mark is a word character there: "an\u0303o", NFD "año", keeps its "an").
_ARTICLES_LOST_IN_THE_MIDDLE = regex.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
# A SummHay citation group: "[3]", "[3, 7]", "[3,7]" (digits, commas and plain spaces only, as
# upstream's pattern: \s would also take newlines, tabs and no-break spaces).
_CITATION_GROUP = re.compile(r"\[([\d, ]+)\]")


def normalize_answer(text: str, articles: re.Pattern[str] | regex.Pattern[str] = _ARTICLES) -> str:
    """SQuAD normalization: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace.

    ``articles`` matches the articles to drop (``best_subspan_em`` passes upstream's ``regex`` one).
    """
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = articles.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD/MuSiQue token F1; when either side normalizes to nothing, 1.0 iff both do."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_recall(prediction: str, gold: str) -> float:
    """ROUGE-1 recall of the gold answer in the prediction (Wu et al.'s success test for
    retrieval heads uses recall > 0.5): the share of normalized gold tokens the prediction has."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not gold_tokens:
        return float(not pred_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    return sum(common.values()) / len(gold_tokens)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_subspan_em(prediction: str, golds: Iterable[str]) -> float:
    """Lost in the Middle's metric: a normalized gold answer occurs inside the normalized first line."""
    first_line = (prediction or "").split("\n")[0]
    normalized = normalize_answer(first_line, _ARTICLES_LOST_IN_THE_MIDDLE)
    for gold in golds:
        if normalize_answer(gold, _ARTICLES_LOST_IN_THE_MIDDLE) in normalized:
            return 1.0
    return 0.0


def parse_citations(text: str) -> set[int]:
    """Every integer cited in ``text`` (``[2][5]``, ``[2, 5]``, ``[2,5] [5]`` -> {2, 5})."""
    cited: set[int] = set()
    for group in _CITATION_GROUP.findall(text or ""):
        for part in group.split(","):
            part = part.strip()
            if part:
                # A group like "[3 7]" (spaces, no comma) still names two documents.
                cited.update(int(p) for p in part.split())
    return cited


def citation_scores(prediction: str, gold_doc_ids: Iterable[Any]) -> dict[str, float]:
    """SummHay citation precision, recall and F1 of the cited vs gold document numbers."""
    generated = parse_citations(prediction)
    gold = {int(g) for g in gold_doc_ids}
    if not gold and not generated:
        return {"citation_precision": 1.0, "citation_recall": 1.0, "citation_f1": 1.0, "n_cited": 0.0}
    hits = len(generated & gold)
    precision = hits / len(generated) if generated else 0.0
    recall = hits / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "citation_precision": precision,
        "citation_recall": recall,
        "citation_f1": f1,
        "n_cited": float(len(generated)),
    }


def _as_list(value: Any) -> list[Any]:
    # Parquet rows give numpy arrays, whose truth value is ambiguous: never test them with `or`.
    return [] if value is None else list(value)


def _answers(example: Mapping[str, Any]) -> list[str]:
    answers = [str(a) for a in _as_list(example.get("answers"))]
    if not answers and example.get("target"):
        answers = [str(example["target"])]
    return answers


def score_prediction(task: str, prediction: str, example: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    """Score one prediction; returns (Table 1 score, every metric of the task).

    ``example`` is a normalized example (a dict with ``answers`` / ``gold_doc_ids``).
    """
    from synthctx.tasks import get_task

    return get_task(task).score((prediction or "").strip(), example)
