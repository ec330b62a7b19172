"""Retrieval scores of every attention head on real task examples (Wu et al. 2024, STUDY.md s.5).

Per example: greedy decoding with :func:`synthctx.heads.capture.greedy_decode`, which yields,
for every generated token w_t, the argmax key position j of every (layer, head) for the query
that produced w_t. Then

* **retrieval heads** (copy-paste criterion): the head gets ``1 / |S|`` at step t when j lies
  inside a needle token span S and the prompt token at j "equals" w_t. At most one credit per
  step per head (spans do not overlap; if they did, the first span listed wins). Example score
  = sum over steps, so a head that copies every token of one needle scores 1.
  ``token_match="exact"`` (default, Wu et al.) compares token ids. ``"stripped"`` compares the
  decoded token texts with leading whitespace removed (empty texts never match): an answer
  begins the assistant turn without the leading space its occurrence in the context has, so
  under exact matching its first token (" Paris" vs "Paris") can never be credited.
* **insight heads** (SummHay): no token-equality condition; the head is credited at step t when
  j lies inside the ``insight`` span of a gold document. Normalisation (ours): the example score
  is the *fraction of decoding steps* whose argmax lands in a gold insight span, in [0, 1] like
  the retrieval score. Insight sentences are not copied into the answer (the answer is a list of
  citations), so Wu's 1/|needle tokens| would make the score depend on sentence length rather
  than on where the head looks; the per-step fraction also does not grow with answer length.
* final head score = mean of the example scores over the examples that count: those whose
  prediction scores >= ``success_threshold`` on the task metric when ``success_only`` (Wu et
  al. count only successful retrievals), all decoded examples otherwise. ``success_metric``
  picks the measure: ``score`` (the Table 1 metric, default) or a named metric of
  ``score_prediction`` (e.g. ``best_subspan_em`` for MDQA: the answer appears in the prediction,
  closer to Wu et al.'s ROUGE-1 recall test for verbose base models). No example counting
  gives scores of 0 with ``n_examples = 0`` (and a warning). An example with no needle span of
  a head kind (e.g. the answer never occurs verbatim in the context) does not count for it.

Needle kinds per task: ``answer`` for mdqa/musique, ``citation`` (the cited document number in
each gold document's header) for SummHay retrieval heads, ``insight`` for SummHay insight heads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger("synthctx.heads")

TOKEN_MATCH = ("exact", "stripped")
# head kind -> needle kinds, per task
HEAD_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "mdqa": {"retrieval": ("answer",)},
    "musique": {"retrieval": ("answer",)},
    "summhay": {"retrieval": ("citation",), "insight": ("insight",)},
}


def span_length_map(spans: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """Array over positions: length of the span containing the position (0 outside every span)."""
    lengths = np.zeros(size, dtype=np.int64)
    for start, end in spans:
        start, end = max(0, int(start)), min(size, int(end))
        if end > start:
            free = lengths[start:end] == 0  # the first span listed wins on overlap
            lengths[start:end][free] = end - start
    return lengths


class TokenKeys:
    """Integer keys of token ids for the equality test: the id itself, or its stripped text."""

    def __init__(self, token_match: str = "exact", tokenizer=None) -> None:
        if token_match not in TOKEN_MATCH:
            raise ValueError(f"token_match must be one of {TOKEN_MATCH}, got {token_match!r}")
        if token_match == "stripped" and tokenizer is None:
            raise ValueError("token_match='stripped' needs the tokenizer")
        self.token_match = token_match
        self.tokenizer = tokenizer
        self._codes: dict[str, int] = {}
        self._by_id: dict[int, int] = {}

    def key(self, token_id: int) -> int:
        if self.token_match == "exact":
            return int(token_id)
        token_id = int(token_id)
        if token_id not in self._by_id:
            text = self.tokenizer.decode([token_id]).lstrip()
            # whitespace-only tokens never match (-1 - id is unique and never equals a text code)
            self._by_id[token_id] = self._codes.setdefault(text, len(self._codes)) if text else -1 - token_id
        return self._by_id[token_id]

    def keys(self, token_ids: Sequence[int]) -> np.ndarray:
        return np.array([self.key(t) for t in token_ids], dtype=np.int64)


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
    hit = (span_len > 0) & (prompt_keys[argmax] == token_keys[:, None, None])
    credit = np.where(hit, 1.0 / np.maximum(span_len, 1), 0.0)
    return credit.sum(axis=0)


def insight_example_score(insight_spans: Sequence[tuple[int, int]], argmax: np.ndarray, prompt_length: int) -> np.ndarray:
    """Fraction of decoding steps whose argmax lies in a gold insight span, per head."""
    argmax = np.asarray(argmax, dtype=np.int64)
    if argmax.ndim != 3 or argmax.shape[0] == 0:
        return np.zeros(argmax.shape[1:] if argmax.ndim == 3 else (0, 0))
    size = max(prompt_length, int(argmax.max()) + 1)
    inside = span_length_map(insight_spans, size)[argmax] > 0
    return inside.mean(axis=0).astype(float)


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


def prepare_example(example: Mapping[str, Any], tokenizer, head_kinds: Mapping[str, Sequence[str]]) -> PreparedExample:
    """Render the task prompt and map the needles of every head kind to prompt token spans."""
    from synthctx.data.prompts import char_spans_to_token_spans, encode_prompt, needle_char_spans, render_prompt

    rendered = render_prompt(example, tokenizer)
    ids, offsets = encode_prompt(rendered, tokenizer)
    gold = set(example.get("gold_doc_ids") or [])
    spans: dict[str, list[tuple[int, int]]] = {}
    for head_kind, kinds in head_kinds.items():
        char_spans = needle_char_spans(example, rendered, kinds)
        if head_kind == "insight" and gold:
            char_spans = [s for s in char_spans if s[3] in gold]
        spans[head_kind] = [(a, b) for a, b, _, _ in char_spans_to_token_spans(char_spans, offsets)]
    return PreparedExample(str(example["example_id"]), ids, spans, example)


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
    value = heads.get("success_metric", "score")
    return str(value.get(task, "score")) if isinstance(value, Mapping) else str(value)


@dataclass
class DetectionResult:
    scores: dict[str, np.ndarray]  # head kind -> (layers, heads)
    n_examples: dict[str, int]
    n_seen: int
    per_example: list[dict[str, Any]]


def detect_heads(
    model,
    tokenizer,
    prepared: Sequence[PreparedExample],
    *,
    max_new_tokens: int,
    success_only: bool = True,
    success_threshold: float = 0.5,
    token_match: str = "exact",
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
        record = {"example_id": item.example_id, "prediction": prediction, "metric": metric, "counts": counts}
        for kind in kinds:
            spans = item.spans.get(kind, [])
            if kind == "insight":
                score = insight_example_score(spans, argmax, len(item.prompt_ids))
            else:
                score = retrieval_example_score(item.prompt_ids, spans, result.tokens, argmax, keys)
            if score.size == 0:
                score = np.zeros(shape)
            # an example without a needle of this kind cannot credit any head: it does not count
            acc[kind].add(score, counts and bool(spans))
            record[f"{kind}_max"] = float(score.max()) if score.size else 0.0
        per_example.append(record)
        log.info("example %s: %r metric=%.3f counts=%s", item.example_id, prediction[:80], metric, counts)
    for kind, a in acc.items():
        if a.n_examples == 0:
            log.warning("head kind %s: no example counted (success_only=%s): all scores are 0", kind, success_only)
    return DetectionResult(
        scores={k: a.scores() for k, a in acc.items()},
        n_examples={k: a.n_examples for k, a in acc.items()},
        n_seen=len(prepared),
        per_example=per_example,
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
) -> None:
    """Entry point of rule ``heads``: head scores of one (model, task, condition)."""
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
    from synthctx.train.lora import load_finetuned  # LoRA adapter or full fine-tuned weights

    model = load_finetuned(model_dir, adapter_dir, dict(model_settings), merge=True)
    prepared = [prepare_example(ex, tokenizer, HEAD_KINDS[task]) for ex in examples]
    logger.info("%s/%s/%s: %d examples, adapter=%s", model_name, task, condition, len(prepared), adapter_dir)
    result = detect_heads(
        model, tokenizer, prepared,
        max_new_tokens=int(heads["max_new_tokens"]),
        success_only=bool(heads["success_only"]),
        success_threshold=float(heads["success_threshold"]),
        token_match=str(heads.get("token_match", "exact")),
        scorer=default_scorer(task, success_metric_of(heads, task)),
        progress=progress_stream(log_path),
        batch_size=int(heads.get("batch_size", 1)),
    )
    frame = head_scores_frame(model_name, task, condition, result)
    meta = provenance(
        seed=seed, model=model_name, task=task, condition=condition, adapter=adapter_dir,
        heads=dict(heads), n_counted=result.n_examples, n_seen=result.n_seen,
        predictions=[{k: r[k] for k in ("example_id", "prediction", "metric", "counts")} for r in result.per_example],
    )
    write_table(frame, output, "head_scores", meta)
