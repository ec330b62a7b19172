"""Retrieval scores of every attention head on real task examples (Wu et al. 2024, STUDY.md s.5).

Per example: greedy decoding with :func:`synthctx.heads.capture.greedy_decode`, which yields,
for every generated token w_t, the argmax key position j of every (layer, head) for the query
that produced w_t. Then

* **retrieval heads** (copy-paste criterion): the head gets ``1 / |S|`` at step t when j lies
  inside a needle token span S and the prompt token at j "equals" w_t. At most one credit per
  step per head (spans do not overlap; if they did, the first span listed wins). Example score
  = sum over steps, so a head that copies every token of one needle scores 1.
  ``token_match="normalized"`` (ours, every shipped config): two tokens are equal when their
  texts, each token decoded on its own, are equal after stripping surrounding whitespace; case
  is kept, a whitespace-only token never matches, and a token that decodes to a partial
  character (U+FFFD, a byte-level piece of a multi-byte character) matches only its own id.
  Why: an answer begins the assistant turn without the space its occurrence in the context
  has. A byte-level BPE (Llama-3, SmolLM2) writes the two as different ids (" Paris" vs
  "Paris"), so under id equality the answer's first token -- often the whole answer -- can
  never be credited, while a SentencePiece model (Mistral) writes both as "▁Paris" and can be.
  Text equality scores both kinds of tokenizer by one rule. ``"exact"`` compares token ids
  (Wu et al.'s literal rule); ``"stripped"`` is the earlier name of ``"normalized"``.
  :class:`DetectionResult` reports per head kind the share of generated tokens that equal
  some needle token, i.e. that any head could be credited for (``creditable_share``).
* **insight heads** (SummHay, STUDY.md s.5): no token-equality condition; at step t the head is
  credited when j lies inside the insight span of *the document being cited at step t*. That
  document is read off the complete generated text: a step cites document k when its token
  writes (part of) the digits of a citation ``[k`` (``[12]`` written as "[", "1", "2", "]":
  both digit steps cite 12; a token holding the digits of two citations cites both). Steps
  that write no citation digits (brackets, other text) cite nothing and are not scored. Only a
  gold document has an insight span, so a step citing another document credits no head.
  Normalisation (ours): the example score is the fraction of *citation steps* so credited, in
  [0, 1] like the retrieval score; an example with no citation step does not count. Insight
  sentences are not copied into the answer (the answer is a list of citations), so Wu's
  1/|needle tokens| would make the score depend on sentence length rather than on where the
  head looks; the per-step fraction also does not grow with answer length.
* final head score = mean of the example scores over the examples that count: those whose
  prediction scores >= ``success_threshold`` on the task metric when ``success_only`` (Wu et
  al. count only successful retrievals), all decoded examples otherwise. ``success_metric``
  picks the measure: ``score`` (the Table 1 metric, default) or a named metric of
  ``score_prediction`` (e.g. ``best_subspan_em`` for MDQA: the answer appears in the prediction,
  closer to Wu et al.'s ROUGE-1 recall test for verbose base models). No example counting
  gives scores of 0 with ``n_examples = 0`` (and a warning). An example with no needle span of
  a head kind (e.g. the answer never occurs verbatim in the context) does not count for it.

Needle kinds per task (``Task.head_kinds``): ``answer`` for the QA tasks, ``citation`` (the cited document number in
each gold document's header) for SummHay retrieval heads, ``insight`` for SummHay insight heads.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger("synthctx.heads")

TOKEN_MATCH = ("exact", "normalized")
# Earlier names of a rule, accepted so older configs stay valid.
TOKEN_MATCH_ALIASES = {"stripped": "normalized"}


def head_kinds_of(task: str) -> dict[str, tuple[str, ...]]:
    """Head kind -> needle kinds scored for it, as the task defines (synthctx.tasks)."""
    from synthctx.tasks import get_task

    return dict(get_task(task).head_kinds)


def span_length_map(spans: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """Array over positions: length of the span containing the position (0 outside every span)."""
    lengths = np.zeros(size, dtype=np.int64)
    for start, end in spans:
        start, end = max(0, int(start)), min(size, int(end))
        if end > start:
            free = lengths[start:end] == 0  # the first span listed wins on overlap
            lengths[start:end][free] = end - start
    return lengths


def resolve_token_match(token_match: str) -> str:
    """The rule a ``heads.token_match`` value names (aliases resolved); a clear error otherwise."""
    name = TOKEN_MATCH_ALIASES.get(token_match, token_match)
    if name not in TOKEN_MATCH:
        raise ValueError(f"heads.token_match must be one of {TOKEN_MATCH + tuple(TOKEN_MATCH_ALIASES)}, "
                         f"got {token_match!r}")
    return name


class TokenKeys:
    """Integer keys of token ids for the equality test: the id itself (``exact``) or a code of
    its whitespace-normalised text (``normalized``). Key :data:`NEVER` (whitespace-only tokens
    under ``normalized``) equals nothing, itself included."""

    NEVER = -1

    def __init__(self, token_match: str = "exact", tokenizer=None) -> None:
        self.token_match = resolve_token_match(token_match)
        if self.token_match == "normalized" and tokenizer is None:
            raise ValueError(f"token_match={token_match!r} needs the tokenizer")
        self.tokenizer = tokenizer
        self._codes: dict[object, int] = {}
        self._by_id: dict[int, int] = {}

    def key(self, token_id: int) -> int:
        token_id = int(token_id)
        if self.token_match == "exact":
            return token_id
        if token_id not in self._by_id:
            # One token decoded alone: byte-level BPE gives " Paris", SentencePiece "Paris"
            # (its decoder drops the "▁" of a sequence's first piece); both strip to "Paris".
            text = self.tokenizer.decode([token_id]).strip()
            if not text:
                code = self.NEVER
            elif "\ufffd" in text:  # part of a multi-byte character: many ids decode to U+FFFD
                code = self._codes.setdefault(("id", token_id), len(self._codes))
            else:
                code = self._codes.setdefault(text, len(self._codes))
            self._by_id[token_id] = code
        return self._by_id[token_id]

    def keys(self, token_ids: Sequence[int]) -> np.ndarray:
        return np.array([self.key(t) for t in token_ids], dtype=np.int64)


def creditable_steps(prompt_ids: Sequence[int], needle_spans: Sequence[tuple[int, int]], tokens: Sequence[int],
                     keys: TokenKeys | None = None) -> int:
    """Generated tokens that equal some needle token under ``keys``: the steps at which any head
    could be credited (a head's credit needs its argmax on such a needle token)."""
    keys = keys or TokenKeys("exact")
    needle = {int(k) for start, end in needle_spans for k in keys.keys(prompt_ids[max(0, start):end])}
    needle.discard(TokenKeys.NEVER)
    return int(sum(int(k) in needle for k in keys.keys(tokens)))


def retrieval_example_score(
    prompt_ids: Sequence[int],
    needle_spans: Sequence[tuple[int, int]],
    tokens: Sequence[int],
    argmax: np.ndarray,
    keys: TokenKeys | None = None,
) -> np.ndarray:
    """Copy-paste score of one example for every head: (layers, heads) array.

    ``argmax`` (steps, layers, heads) holds absolute key positions; row t belongs to ``tokens[t]``.
    Positions past the prompt (earlier generated tokens) are never inside a needle.
    """
    keys = keys or TokenKeys("exact")
    argmax = np.asarray(argmax, dtype=np.int64)
    steps, layers, heads = argmax.shape if argmax.ndim == 3 else (0, 0, 0)
    if steps == 0:
        return np.zeros(argmax.shape[1:] if argmax.ndim == 3 else (0, 0))
    size = max(len(prompt_ids), int(argmax.max()) + 1)
    lengths = span_length_map(needle_spans, size)
    prompt_keys = np.full(size, np.iinfo(np.int64).min, dtype=np.int64)
    prompt_keys[: len(prompt_ids)] = keys.keys(prompt_ids)
    token_keys = keys.keys(tokens[:steps])
    span_len = lengths[argmax]  # (steps, L, H)
    matchable = (token_keys != TokenKeys.NEVER)[:, None, None]
    hit = (span_len > 0) & matchable & (prompt_keys[argmax] == token_keys[:, None, None])
    credit = np.where(hit, 1.0 / np.maximum(span_len, 1), 0.0)
    return credit.sum(axis=0)


# "[k" of a citation, digits captured (whitespace after the bracket allowed: "[ 3]").
CITATION = re.compile(r"\[\s*(\d+)")


def generated_text_offsets(tokenizer, tokens: Sequence[int]) -> tuple[str, list[int]]:
    """The decoded generated text and, per token, the end of its characters in that text.

    Ends come from decoding each prefix (a token's text can depend on its left context, e.g.
    SentencePiece's leading space); they are kept non-decreasing, so a prefix that decodes
    to a partial character shifts at most that token's span.
    """
    text = tokenizer.decode(list(tokens), skip_special_tokens=True)
    ends, last = [], 0
    for t in range(len(tokens)):
        last = min(len(text), max(last, len(tokenizer.decode(list(tokens[: t + 1]), skip_special_tokens=True))))
        ends.append(last)
    return text, ends


def cited_per_step(text: str, ends: Sequence[int]) -> list[frozenset[int]]:
    """Per generated token (chars ``[ends[t-1], ends[t])`` of ``text``): the document numbers of
    the citations whose digits it writes; empty for a step writing no citation digits."""
    digits = [(m.start(1), m.end(1), int(m.group(1))) for m in CITATION.finditer(text)]
    cited, start = [], 0
    for end in ends:
        cited.append(frozenset(k for a, b, k in digits if a < end and b > start))
        start = end
    return cited


def insight_example_score(
    insight_spans: Mapping[int, Sequence[tuple[int, int]]],
    cited: Sequence[frozenset[int]],
    argmax: np.ndarray,
    prompt_length: int,
) -> np.ndarray:
    """Per head: the fraction of citation steps whose argmax lies in the insight span of the
    document cited at that step.

    ``insight_spans``: document number (as cited, ``[k]``) -> its insight token spans (gold
    documents only); ``cited[t]``: the numbers step t cites (:func:`cited_per_step`). Steps
    citing nothing are not scored; no citation step gives zeros.
    """
    argmax = np.asarray(argmax, dtype=np.int64)
    if argmax.ndim != 3 or argmax.shape[0] == 0:
        return np.zeros(argmax.shape[1:] if argmax.ndim == 3 else (0, 0))
    size = max(prompt_length, int(argmax.max()) + 1)
    maps: dict[frozenset[int], np.ndarray] = {}
    credit = np.zeros(argmax.shape[1:], dtype=np.float64)
    steps = 0
    for t, numbers in enumerate(cited[: argmax.shape[0]]):
        if not numbers:
            continue
        steps += 1
        if numbers not in maps:
            maps[numbers] = span_length_map([s for k in sorted(numbers) for s in insight_spans.get(k, ())], size) > 0
        credit += maps[numbers][argmax[t]]
    return credit / steps if steps else credit


@dataclass
class HeadScoreAccumulator:
    """Mean of example score matrices over the examples that count."""

    shape: tuple[int, int]
    total: np.ndarray = field(init=False)
    n_examples: int = 0
    n_seen: int = 0

    def __post_init__(self) -> None:
        self.total = np.zeros(self.shape, dtype=np.float64)

    def add(self, example_score: np.ndarray, counts: bool) -> None:
        self.n_seen += 1
        if counts:
            self.total += example_score
            self.n_examples += 1

    def scores(self) -> np.ndarray:
        return self.total / self.n_examples if self.n_examples else np.zeros(self.shape)


@dataclass
class PreparedExample:
    example_id: str
    prompt_ids: list[int]
    spans: dict[str, list[tuple[int, int]]]  # head kind -> token spans
    example: Mapping[str, Any]
    # insight heads: document number as cited ([k] = the k-th document) -> its insight spans
    insight_by_citation: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


def prepare_example(example: Mapping[str, Any], tokenizer, head_kinds: Mapping[str, Sequence[str]]) -> PreparedExample:
    """Render the task prompt and map the needles of every head kind to prompt token spans."""
    from synthctx.data.prompts import char_spans_to_token_spans, encode_prompt, needle_char_spans, render_prompt

    rendered = render_prompt(example, tokenizer)
    ids, offsets = encode_prompt(rendered, tokenizer)
    gold = set(example.get("gold_doc_ids") or [])
    # the number a model cites for a document is its 1-based position (prompts.document_header)
    position = {doc["doc_id"]: k for k, doc in enumerate(example["documents"], start=1)}
    spans: dict[str, list[tuple[int, int]]] = {}
    by_citation: dict[int, list[tuple[int, int]]] = {}
    for head_kind, kinds in head_kinds.items():
        char_spans = needle_char_spans(example, rendered, kinds)
        if head_kind == "insight" and gold:
            char_spans = [s for s in char_spans if s[3] in gold]
        token_spans = char_spans_to_token_spans(char_spans, offsets)
        spans[head_kind] = [(a, b) for a, b, _, _ in token_spans]
        if head_kind == "insight":
            for a, b, _, doc_id in token_spans:
                by_citation.setdefault(position[doc_id], []).append((a, b))
    return PreparedExample(str(example["example_id"]), ids, spans, example, by_citation)


def default_scorer(task: str, metric: str = "score") -> Callable[[str, Mapping[str, Any]], float]:
    """Success measure of a prediction: the Table 1 score (``"score"``) or one named metric of
    ``score_prediction`` (e.g. ``best_subspan_em`` for MDQA, closer to Wu et al.'s recall test)."""

    def score(prediction: str, example: Mapping[str, Any]) -> float:
        from synthctx.evaluate.metrics import score_prediction  # written by the evaluate stage

        value, metrics = score_prediction(task, prediction, example)
        if metric == "score":
            return float(value)
        if metric not in metrics:
            raise ValueError(f"heads.success_metric {metric!r} is not a {task} metric (have {sorted(metrics)})")
        return float(metrics[metric])

    return score


def success_metric_of(heads: Mapping[str, Any], task: str) -> str:
    """``heads.success_metric``: one name for every task, or a mapping task -> name."""
    value = heads["success_metric"]
    return str(value.get(task, "score")) if isinstance(value, Mapping) else str(value)


@dataclass
class DetectionResult:
    scores: dict[str, np.ndarray]  # head kind -> (layers, heads)
    n_examples: dict[str, int]
    n_seen: int
    per_example: list[dict[str, Any]]
    # head kind -> share of the generated tokens (of examples with a needle of that kind) at
    # which some head could be credited: the token equals a needle token (retrieval kinds), or
    # it cites a document with an insight span (insight)
    creditable_share: dict[str, float] = field(default_factory=dict)
    token_match: str = "exact"
    # head kind -> per decoded example (example id, whether it counted, its (layers, heads) score
    # matrix): what bootstrap intervals and split halves of the head scores are computed from
    example_scores: dict[str, list[tuple[str, bool, np.ndarray]]] = field(default_factory=dict)


def detect_heads(
    model,
    tokenizer,
    prepared: Sequence[PreparedExample],
    *,
    max_new_tokens: int,
    success_only: bool = True,
    success_threshold: float = 0.5,
    token_match: str = "normalized",
    scorer: Callable[[str, Mapping[str, Any]], float] | None = None,
    progress=None,
    batch_size: int = 1,
) -> DetectionResult:
    """Decode every prepared example once and accumulate the scores of every head kind.

    ``batch_size`` > 1 decodes length-sorted groups of examples together
    (:func:`~synthctx.heads.capture.greedy_decode_batch`); scores are accumulated in example
    order either way.
    """
    from tqdm.auto import tqdm

    from synthctx.heads.capture import greedy_decode, greedy_decode_batch, model_shape, stop_token_ids
    from synthctx.models.decoding import decode_in_groups
    from synthctx.models.loading import pad_token_id

    shape = model_shape(model)
    keys = TokenKeys(token_match, tokenizer)
    stops = stop_token_ids(tokenizer, model)
    kinds = sorted({k for p in prepared for k in p.spans})
    acc = {k: HeadScoreAccumulator(shape) for k in kinds}
    creditable = {k: [0, 0] for k in kinds}  # head kind -> [creditable steps, steps]
    example_scores: dict[str, list[tuple[str, bool, np.ndarray]]] = {k: [] for k in kinds}
    with tqdm(total=len(prepared), desc="heads", file=progress, mininterval=5) as bar:
        decoded = decode_in_groups(
            [item.prompt_ids for item in prepared], batch_size,
            lambda prompt: greedy_decode(model, prompt, max_new_tokens, stops, capture=True),
            lambda group: greedy_decode_batch(model, group, max_new_tokens, stops, pad_token_id(tokenizer, stops),
                                              capture=True),
            bar)
    per_example = []
    for item, result in zip(prepared, decoded):
        prediction = tokenizer.decode(result.tokens, skip_special_tokens=True).strip()
        metric = scorer(prediction, item.example) if scorer else 1.0
        counts = (metric >= success_threshold) if success_only else True
        argmax = result.argmax.numpy()
        record = {"example_id": item.example_id, "prediction": prediction, "metric": metric, "counts": counts,
                  "steps": len(result.tokens)}
        cited = None
        for kind in kinds:
            spans = item.spans.get(kind, [])
            if kind == "insight":
                if cited is None:
                    cited = cited_per_step(*generated_text_offsets(tokenizer, result.tokens))
                score = insight_example_score(item.insight_by_citation, cited, argmax, len(item.prompt_ids))
                can_credit = sum(any(k in item.insight_by_citation for k in c) for c in cited)
                # no citation step: nothing to take the fraction of, the example does not count
                scored = any(cited)
            else:
                score = retrieval_example_score(item.prompt_ids, spans, result.tokens, argmax, keys)
                can_credit = creditable_steps(item.prompt_ids, spans, result.tokens, keys)
                scored = True
            if score.size == 0:
                score = np.zeros(shape)
            # an example without a needle of this kind cannot credit any head: it does not count
            acc[kind].add(score, counts and bool(spans) and scored)
            example_scores[kind].append((item.example_id, bool(counts and spans and scored), score))
            if spans:
                creditable[kind][0] += can_credit
                creditable[kind][1] += len(result.tokens)
            record[f"{kind}_max"] = float(score.max()) if score.size else 0.0
            record[f"{kind}_creditable"] = int(can_credit)
        per_example.append(record)
        log.info("example %s: %r metric=%.3f counts=%s", item.example_id, prediction[:80], metric, counts)
    share = {k: (c / n if n else 0.0) for k, (c, n) in creditable.items()}
    for kind, (c, n) in creditable.items():
        what = ("cite a document with an insight span" if kind == "insight"
                else f"equal a needle token (token_match={keys.token_match})")
        log.info("head kind %s: %d of %d generated tokens (%.1f%%) %s, i.e. could credit some head",
                 kind, c, n, 100 * share[kind], what)
    for kind, a in acc.items():
        if a.n_examples == 0:
            log.warning("head kind %s: no example counted (success_only=%s): all scores are 0", kind, success_only)
    return DetectionResult(
        scores={k: a.scores() for k, a in acc.items()},
        n_examples={k: a.n_examples for k, a in acc.items()},
        n_seen=len(prepared),
        per_example=per_example,
        creditable_share=share,
        token_match=keys.token_match,
        example_scores=example_scores,
    )


def head_scores_frame(model_name: str, task: str, condition: str, result: DetectionResult):
    """Rows of the ``head_scores`` kind: one per (head kind, layer, head)."""
    import pandas as pd

    rows = []
    for kind, matrix in sorted(result.scores.items()):
        for layer in range(matrix.shape[0]):
            for head in range(matrix.shape[1]):
                rows.append(
                    {
                        "model": model_name, "task": task, "condition": condition, "head_kind": kind,
                        "layer": layer, "head": head, "score": float(matrix[layer, head]),
                        "n_examples": result.n_examples[kind], "n_seen": result.n_seen,
                    }
                )
    return pd.DataFrame(rows)


def head_example_scores_frame(model_name: str, task: str, condition: str, result: DetectionResult):
    """Rows of the ``head_example_scores`` kind: one per (head kind, decoded example), the example's
    score of every head flattened in (layer, head) order."""
    import pandas as pd

    rows = []
    for kind, entries in sorted(result.example_scores.items()):
        for example_id, counted, matrix in entries:
            rows.append({"model": model_name, "task": task, "condition": condition, "head_kind": kind,
                         "example_id": example_id, "counted": counted, "layers": int(matrix.shape[0]),
                         "heads": int(matrix.shape[1]), "scores": [float(v) for v in matrix.reshape(-1)]})
    return pd.DataFrame(rows, columns=["model", "task", "condition", "head_kind", "example_id", "counted", "layers",
                                       "heads", "scores"])


def run_task_heads(
    *,
    model_dir: str,
    eval_path: str,
    output: str,
    model_name: str,
    task: str,
    condition: str,
    model_settings: Mapping[str, Any],
    heads: Mapping[str, Any],
    adapter_dir: str | None = None,
    seed: int = 0,
    log_path: str | None = None,
    examples_output: str | None = None,
) -> None:
    """Entry point of rule ``heads``: head scores of one (model, task, condition), and with
    ``examples_output`` every decoded example's score of every head (``head_example_scores``)."""
    import torch

    from synthctx.data.examples import read_examples
    from synthctx.logging_utils import progress_stream, setup_logging
    from synthctx.models.loading import load_tokenizer
    from synthctx.provenance import provenance
    from synthctx.schema import write_table

    logger = setup_logging(log_path)
    torch.manual_seed(seed)
    examples = read_examples(eval_path)[: int(heads["examples"])]
    tokenizer = load_tokenizer(model_dir)
    # Merged LoRA weights: the same attention (q/k/v/o weights + B@A), no adapter matmuls per token.
    from synthctx.models.loading import load_finetuned  # LoRA adapter or full fine-tuned weights

    model = load_finetuned(model_dir, adapter_dir, dict(model_settings), merge=True)
    prepared = [prepare_example(ex, tokenizer, head_kinds_of(task)) for ex in examples]
    logger.info("%s/%s/%s: %d examples, adapter=%s", model_name, task, condition, len(prepared), adapter_dir)
    result = detect_heads(
        model, tokenizer, prepared,
        max_new_tokens=int(heads["max_new_tokens"]),
        success_only=bool(heads["success_only"]),
        success_threshold=float(heads["success_threshold"]),
        token_match=str(heads["token_match"]),
        scorer=default_scorer(task, success_metric_of(heads, task)),
        progress=progress_stream(log_path),
        batch_size=int(heads["batch_size"]),
    )
    frame = head_scores_frame(model_name, task, condition, result)
    meta = provenance(
        seed=seed, model=model_name, task=task, condition=condition, adapter=adapter_dir,
        heads=dict(heads), n_counted=result.n_examples, n_seen=result.n_seen,
        token_match=result.token_match, creditable_share=result.creditable_share,
        predictions=[{k: r[k] for k in ("example_id", "prediction", "metric", "counts")} for r in result.per_example],
    )
    write_table(frame, output, "head_scores", meta)
    if examples_output:
        write_table(head_example_scores_frame(model_name, task, condition, result), examples_output,
                    "head_example_scores", meta)
