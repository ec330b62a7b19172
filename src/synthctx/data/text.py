"""Text helpers of the real-data stage: answer normalization, answer spans, sentences.

Needle spans must be exact character offsets into document texts, so every helper here
works on the original string and returns offsets into it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_matches(span_text: str, answers: Iterable[str]) -> bool:
    """Whether a needle's text is one of ``answers`` up to SQuAD normalization."""
    norm = normalize_answer(span_text)
    return any(norm == normalize_answer(a) for a in answers)


def find_answer_spans(text: str, answers: Sequence[str]) -> list[tuple[int, int]]:
    """Every occurrence of any answer in ``text``, case-insensitive, on word boundaries.

    Word boundaries keep "1" from matching inside "1901" and "America" inside
    "American". Spans are sorted and de-duplicated; overlapping occurrences of
    different answers (e.g. "US" inside "the US") are all kept, since each is an
    occurrence of an accepted string.
    """
    spans: set[tuple[int, int]] = set()
    for answer in answers:
        answer = answer.strip()
        if not answer:
            continue
        pattern = r"(?<!\w)" + re.escape(answer) + r"(?!\w)"
        for m in re.finditer(pattern, text, flags=re.IGNORECASE):
            if m.end() > m.start():
                spans.add((m.start(), m.end()))
    return sorted(spans)


# A sentence ends at . ! or ? (optionally followed by a closing quote/bracket) before
# whitespace and an upper-case letter, digit or opening quote; line breaks always end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]?\s+(?=[A-Z0-9\"'\u201c\u2018(\[])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (stripped, non-empty)."""
    spans = []
    for block in re.finditer(r"[^\n]+", text):
        pieces = []
        cursor = block.start()
        for m in _SENTENCE_END.finditer(block.group()):
            # a closing quote/bracket stays with the sentence it ends
            closing = len(m.group()) - len(m.group().lstrip("\"'\u201d\u2019)]"))
            pieces.append((cursor, block.start() + m.start() + closing))
            cursor = block.start() + m.end()
        pieces.append((cursor, block.end()))
        for a, b in pieces:
            seg = text[a:b]
            lead = len(seg) - len(seg.lstrip())
            trail = len(seg) - len(seg.rstrip())
            if b - trail > a + lead:
                spans.append((a + lead, b - trail))
    return spans


def tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def unigram_f1(candidate: str, reference: str) -> float:
    """Token F1 of two strings after SQuAD normalization (0 when either is empty)."""
    cand, ref = tokens(candidate), tokens(reference)
    if not cand or not ref:
        return 0.0
    common = sum((Counter(cand) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_matching_sentence(text: str, reference: str) -> tuple[int, float]:
    """Index (into :func:`split_sentences`) of the sentence with the best unigram F1, and the F1."""
    best, best_f1 = -1, -1.0
    for i, (a, b) in enumerate(split_sentences(text)):
        f1 = unigram_f1(text[a:b], reference)
        if f1 > best_f1:
            best, best_f1 = i, f1
    return best, max(best_f1, 0.0)
