"""Prompt rendering and target format, shared by training, evaluation and head detection.

One function renders an example of the normalized schema into chat messages and the
model's templated prompt text, and reports where every document's text and header
landed in that text, so that needle spans (characters inside documents) map to prompt
tokens exactly. Real and synthetic examples go through the same code: only the data
differs between conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

def document_header(position: int, title: str) -> str:
    """The header of the document at 1-based ``position``; its number is what a model cites."""
    return f"Document [{position}](Title: {title})" if title else f"Document [{position}]"


def citation_span_in_header(position: int) -> tuple[int, int]:
    """Character span of the cited number inside :func:`document_header`."""
    start = len("Document [")
    return start, start + len(str(position))


def citation_target(doc_ids: Sequence[str]) -> str:
    """SummHay target: the gold document numbers in increasing order, e.g. ``[2][5]``."""
    return "".join(f"[{d}]" for d in sorted(set(doc_ids), key=int))


@dataclass
class RenderedPrompt:
    messages: list[dict[str, str]]
    text: str  # the templated prompt, generation prompt included
    doc_text_spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # doc_id -> chars in text
    doc_header_spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # doc_id -> header chars in text


def _meta(example: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = example.get("meta") or {}
    if isinstance(meta, str):
        import json

        meta = json.loads(meta)
    return meta


def user_content(example: Mapping[str, Any], documents: bool = True
                 ) -> tuple[str, dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """The user message of an example and the spans of each document inside it.

    ``documents=False``: the task's closed-book message (the question without the documents,
    :meth:`synthctx.tasks.base.Task.closed_book_content`); no spans."""
    from synthctx.tasks import get_task

    try:
        spec = get_task(example["task"])
    except ValueError as error:
        raise ValueError(f"example {example.get('example_id')}: {error}") from None
    if not documents:
        return spec.closed_book_content(example, _meta(example)), {}, {}
    parts = [spec.instruction, "\n\n"]
    offset = sum(map(len, parts))
    text_spans: dict[str, tuple[int, int]] = {}
    header_spans: dict[str, tuple[int, int]] = {}
    for position, doc in enumerate(example["documents"], start=1):
        header = document_header(position, doc.get("title") or "")
        header_spans[doc["doc_id"]] = (offset, offset + len(header))
        parts.append(header + " ")
        offset += len(header) + 1
        text_spans[doc["doc_id"]] = (offset, offset + len(doc["text"]))
        parts.append(doc["text"] + "\n")
        offset += len(doc["text"]) + 1
    parts.append(spec.question_block(example, _meta(example)))
    return "".join(parts), text_spans, header_spans


def render_prompt(example: Mapping[str, Any], tokenizer, documents: bool = True) -> RenderedPrompt:
    """Chat-templated prompt of ``example`` for ``tokenizer``'s model, with document spans
    (``documents=False``: the closed-book prompt, see :func:`user_content`)."""
    content, text_spans, header_spans = user_content(example, documents)
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    base = text.find(content)
    if base < 0:  # a template that rewrites content would break the span bookkeeping
        raise ValueError(f"chat template of {tokenizer.name_or_path} does not keep the user message verbatim")
    shift = lambda span: (span[0] + base, span[1] + base)  # noqa: E731
    return RenderedPrompt(
        messages=messages,
        text=text,
        doc_text_spans={k: shift(v) for k, v in text_spans.items()},
        doc_header_spans={k: shift(v) for k, v in header_spans.items()},
    )


def encode_prompt(rendered: RenderedPrompt, tokenizer) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the templated prompt and each token's character span in it.

    The template already contains any BOS/special tokens as text, so none are added.
    """
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def needle_char_spans(example: Mapping[str, Any], rendered: RenderedPrompt, kinds: Sequence[str] | None = None):
    """Needles of ``example`` as character spans of the prompt text: (start, end, kind, doc_id)."""
    spans = []
    for needle in example["needles"]:
        if kinds is not None and needle["kind"] not in kinds:
            continue
        doc_id = needle["doc_id"]
        table = rendered.doc_header_spans if needle["kind"] == "citation" else rendered.doc_text_spans
        if doc_id not in table:
            raise ValueError(f"example {example['example_id']}: needle refers to unknown document {doc_id!r}")
        base = table[doc_id][0]
        spans.append((base + int(needle["start"]), base + int(needle["end"]), needle["kind"], doc_id))
    return spans


def char_spans_to_token_spans(char_spans, offsets: Sequence[tuple[int, int]]):
    """Map character spans to [token_start, token_end) ranges of the tokens overlapping them."""
    out = []
    for start, end, kind, doc_id in char_spans:
        toks = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
        if toks:
            out.append((toks[0], toks[-1] + 1, kind, doc_id))
    return out


def training_ids(example: Mapping[str, Any], tokenizer) -> tuple[list[int], list[int]]:
    """Input ids and labels for supervised fine-tuning: loss on the target tokens only.

    The target is rendered as the assistant turn by the model's chat template, so the
    end-of-turn token is learned too (the model learns to stop).
    """
    rendered = render_prompt(example, tokenizer)
    full = tokenizer.apply_chat_template(
        rendered.messages + [{"role": "assistant", "content": example["target"]}], tokenize=False
    )
    if not full.startswith(rendered.text):
        raise ValueError(f"chat template of {tokenizer.name_or_path}: assistant turn does not extend the prompt")
    prompt_ids = tokenizer(rendered.text, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(full[len(rendered.text):], add_special_tokens=False)["input_ids"]
    # Drop trailing whitespace tokens after the end-of-turn marker (e.g. a final newline).
    while target_ids and tokenizer.decode(target_ids[-1:]).strip() == "":
        target_ids = target_ids[:-1]
    input_ids = list(prompt_ids) + list(target_ids)
    labels = [-100] * len(prompt_ids) + list(target_ids)
    return input_ids, labels


def prompt_length(example: Mapping[str, Any], tokenizer) -> int:
    """Tokens of prompt plus target: what the context budget bounds."""
    return len(training_ids(example, tokenizer)[0])
