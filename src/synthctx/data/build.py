"""The real-data stage: raw files -> eval split, Real (Full), Real (Limited), stats.

Set sizes: eval = ``eval_examples``; Real (Full) = every remaining train example that
builds (optionally capped by ``max_train_examples``); Real (Limited) = ``limited_fraction``
of Real (Full), which must be non-empty and smaller than Real (Full).

:func:`build_real_data` is pure (returns everything in memory);
:func:`write_real_data` validates every example first and only then writes the four
artifacts, so a failure leaves no partial output. :func:`run_build_real_data` is what
the Snakemake script calls.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from synthctx.data import context, loaders, splits
from synthctx.data.examples import examples_to_frame, validate_example
from synthctx.data.prompts import char_spans_to_token_spans, encode_prompt, needle_char_spans, render_prompt
from synthctx.schema import SCHEMAS, ArtifactError, write_table

log = logging.getLogger("synthctx.data")

# The needle kind whose position is reported as "needle depth" per task.
PRIMARY_NEEDLE = {"mdqa": "answer", "musique": "answer", "summhay": "insight"}
# Fixed F1 bands of the insight-match shares in the stats, comparable across settings.
INSIGHT_MATCH_BANDS = (0.5, 0.75, 1.0)


@dataclass
class RealData:
    task: str
    eval: list[dict[str, Any]]
    real_full: list[dict[str, Any]]
    real_limited: list[dict[str, Any]]
    counts: dict[str, float] = field(default_factory=dict)  # raw/candidate/dropped counts
    stats: pd.DataFrame | None = None


def needle_depth(example: Mapping[str, Any], tokenizer) -> float | None:
    """Mean relative token position (0 = prompt start, 1 = end) of the primary needles."""
    rendered = render_prompt(example, tokenizer)
    ids, offsets = encode_prompt(rendered, tokenizer)
    spans = char_spans_to_token_spans(
        needle_char_spans(example, rendered, [PRIMARY_NEEDLE[example["task"]]]), offsets
    )
    if not spans or not ids:
        return None
    return sum(start for start, *_ in spans) / len(spans) / len(ids)


def musique_hop_sets(task_config: Mapping[str, Any]) -> tuple[set[int], set[int]]:
    """(eval hop counts, training hop counts): ``hops`` and ``train_hops`` (absent/null: ``hops``)."""
    hops = {int(h) for h in task_config["hops"]}
    train_hops = task_config.get("train_hops")
    if train_hops is None:
        return hops, hops
    if not train_hops:
        raise ValueError("data.musique.train_hops is empty (null means: the same as data.musique.hops)")
    return hops, {int(h) for h in train_hops}


def _candidates(task: str, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                context_tokens: int, counts: Counter) -> tuple[list[context.Candidate], dict[str, int]]:
    """The task's candidates and, for MuSiQue, each candidate's hop count (by example id)."""
    if task == "mdqa":
        if len(raw_files) != 1:
            raise ValueError(f"mdqa takes one documents file, got {list(raw_files)}")
        records = loaders.load_mdqa(raw_files[0])
        counts["raw_records"] = len(records)
        return [
            context.Candidate(
                r.record_id, r.record_id,
                lambda r=r: context.build_mdqa(
                    r, seed=seed, num_documents=int(task_config["num_documents"]),
                    gold_position=task_config["gold_position"], tokenizer=tokenizer, context_tokens=context_tokens,
                ),
                links=context.mdqa_links(r),
            )
            for r in records
        ], {}
    if task == "musique":
        records = loaders.load_musique_files(raw_files)
        counts["raw_records"] = len(records)
        eval_hops, train_hops = musique_hop_sets(task_config)
        kept = [r for r in records if r.hops in eval_hops | train_hops]
        counts["filtered_hops"] = len(records) - len(kept)
        # Every record of the files, whatever its hop count: no padding is any record's evidence.
        pool = context.ParagraphPool(records)
        evidence = {context.passage_key(r.paragraphs[s]) for r in kept for s in r.supporting}
        return [
            context.Candidate(
                r.record_id, r.record_id,
                lambda r=r: context.build_musique(
                    r, seed=seed, num_paragraphs=int(task_config["num_paragraphs"]), pool=pool,
                    tokenizer=tokenizer, context_tokens=context_tokens,
                ),
                links=context.musique_links(r, evidence),
            )
            for r in kept
        ], {r.record_id: r.hops for r in kept}
    if task == "summhay":
        haystacks = loaders.load_summhay_files(raw_files)
        counts["raw_records"] = sum(len(s.insights) for h in haystacks for s in h.subtopics)
        counts["haystacks"] = len(haystacks)
        out = []
        for h in haystacks:
            out += context.summhay_candidates(
                h, seed=seed, num_documents=int(task_config["num_documents"]),
                max_gold_documents=int(task_config["max_gold_documents"]),
                excerpt_sentences=int(task_config["excerpt_sentences"]),
                min_insight_match=float(task_config["min_insight_match"]),
                tokenizer=tokenizer, context_tokens=context_tokens,
            )
        return out, {}
    raise ValueError(f"unknown task {task!r}")


def build_real_data(
    task: str,
    raw_files: Sequence[str],
    tokenizer,
    *,
    task_config: Mapping[str, Any],
    eval_examples: int,
    max_train_examples: int | None,
    limited_fraction: float,
    seed: int,
    context_tokens: int,
    progress_file=None,
) -> RealData:
    """Eval split, Real (Full), Real (Limited) and stats of one task (see splits.py).

    Raises ArtifactError when a set would be empty or Real (Limited) would not be smaller
    than Real (Full).
    """
    from tqdm import tqdm

    counts: Counter = Counter()
    candidates, hops_of = _candidates(task, raw_files, tokenizer, task_config, seed, context_tokens, counts)
    counts["candidates"] = len(candidates)
    dropped: Counter = Counter()
    total = eval_examples + (max_train_examples if max_train_examples is not None else len(candidates))
    bar = tqdm(total=min(total, len(candidates)), desc=f"build {task}", file=progress_file, mininterval=5)
    insight_matches: list[float] = []  # SummHay: every gold document the build scored

    def build(cand: context.Candidate) -> context.Built:
        result = cand.build()
        insight_matches.extend(result.insight_matches)
        return result

    if task == "summhay":
        eval_groups = set(splits.heldout_groups([c.group for c in candidates], int(task_config["eval_haystacks"]), seed))
        counts["eval_haystacks"] = len(eval_groups)
        eval_pool = [c for c in candidates if c.group in eval_groups]
        train_pool = [c for c in candidates if c.group not in eval_groups]
        eval_set, _ = splits.take_buildable(
            splits.order_by_hash(eval_pool, seed, lambda c: c.example_id), eval_examples, build, dropped, bar.update
        )
        train_set, _ = splits.take_buildable(
            splits.order_by_hash(train_pool, seed, lambda c: c.example_id), max_train_examples, build, dropped,
            bar.update,
        )
    else:
        # Records sharing a sub-question, a supporting paragraph or a gold passage stay together.
        example_id, links = (lambda c: c.example_id), (lambda c: c.links)
        groups = splits.linked_groups(candidates, seed, example_id, links)
        counts["split_groups"] = len(groups)
        counts["split_group_max"] = max(len(g) for g in groups)
        # MuSiQue draws the eval split from the `hops` questions and trains on the `train_hops`
        # ones (the same set unless train_hops is set).
        eval_hops, train_hops = musique_hop_sets(task_config) if task == "musique" else (None, None)
        eval_pool = [c for c in candidates if eval_hops is None or hops_of[c.example_id] in eval_hops]
        eval_groups = groups if len(eval_pool) == len(candidates) else splits.linked_groups(
            eval_pool, seed, example_id, links)
        eval_set, rest = splits.take_eval_groups(eval_groups, eval_examples, build, dropped, bar.update)
        if len(eval_set) < eval_examples:
            log.warning("%s: only %d of eval_examples=%d eval examples (linked groups larger than the room left "
                        "went to training)", task, len(eval_set), eval_examples)
        left = {c.example_id for c in rest}
        taken = {c.example_id for c in eval_pool if c.example_id not in left}
        # A candidate linked to the eval side, directly or through any other candidate (of any
        # hop count), stays out of training. None is when eval and training draw on the same
        # candidates (the eval split took whole groups).
        linked = splits.linked_to(groups, taken, example_id)
        rest = [c for c in candidates if c.example_id not in taken and c.example_id not in linked]
        if task == "musique":
            counts["train_linked_to_eval"] = sum(1 for i in linked if hops_of[i] in train_hops)
            counts["not_train_hops"] = sum(1 for c in rest if hops_of[c.example_id] not in train_hops)
            rest = [c for c in rest if hops_of[c.example_id] in train_hops]
        rest = splits.order_by_hash(rest, seed, example_id)
        train_set, _ = splits.take_buildable(rest, max_train_examples, build, dropped, bar.update)
        if task == "musique":
            histogram = Counter(hops_of[ex["example_id"]] for ex in train_set)
            for h in sorted(eval_hops | train_hops):
                counts[f"real_full_hops_{h}"] = histogram.get(h, 0)
            log.info("musique: Real (Full) by hop count %s (eval hops %s, train_hops %s; %d training candidates "
                     "left out as linked to the eval split)", dict(sorted(histogram.items())), sorted(eval_hops),
                     sorted(train_hops), counts["train_linked_to_eval"])
    bar.close()
    for reason, n in dropped.items():
        counts[f"dropped_{reason}"] = n
    counts["dropped_budget"] = dropped.get("budget", 0)
    if task == "summhay":
        minimum = float(task_config["min_insight_match"])
        counts["dropped_weak_insight_match"] = dropped.get("weak_insight_match", 0)
        counts["insight_documents_scored"] = len(insight_matches)
        counts["insight_documents_below_match"] = sum(1 for f in insight_matches if f < minimum)
        counts.update(_describe(insight_matches, "insight_match_scored"))
    if not eval_set:
        raise ArtifactError(f"{task}: no eval example could be built from {list(raw_files)}")
    if not train_set:
        raise ArtifactError(f"{task}: no training example could be built from {list(raw_files)}: "
                            f"{len(candidates)} candidates, of which eval_examples={eval_examples} went to "
                            f"the eval split (data.eval_examples or data.{task}.eval_examples)")
    limited_set = splits.limited_subset(train_set, limited_fraction, seed)
    sizes = (f"Real (Full) has {len(train_set)} examples (data.max_train_examples={max_train_examples}), "
             f"data.limited_fraction={limited_fraction} gives Real (Limited) {len(limited_set)}")
    if not limited_set:
        raise ArtifactError(f"{task}: Real (Limited) would be empty: {sizes}; raise the fraction or the train size")
    if len(limited_set) >= len(train_set):
        raise ArtifactError(f"{task}: Real (Limited) must be smaller than Real (Full): {sizes}")
    for ex in eval_set + train_set:
        depth = needle_depth(ex, tokenizer)
        ex["meta"]["needle_depth"] = None if depth is None else round(depth, 4)
    data = RealData(
        task=task,
        eval=splits.assign(eval_set, "eval", "real"),
        real_full=splits.assign(train_set, "train", "real_full"),
        real_limited=splits.assign(limited_set, "train", "real_limited"),
        counts=dict(counts),
    )
    data.stats = dataset_stats(data)
    log.info("%s: %s", task, {k: v for k, v in sorted(counts.items())})
    return data


def _describe(values: Sequence[float], name: str) -> dict[str, float]:
    if not values:
        return {}
    return {f"{name}_min": float(min(values)), f"{name}_mean": float(sum(values) / len(values)),
            f"{name}_max": float(max(values))}


def dataset_stats(data: RealData) -> pd.DataFrame:
    """Rows (task, condition, stat, value): per set sizes, token lengths, needle depth; and counts."""
    rows = []
    for condition, examples in (("real", data.eval), ("real_full", data.real_full), ("real_limited", data.real_limited)):
        stats: dict[str, float] = {"examples": float(len(examples))}
        stats.update(_describe([ex["meta"]["prompt_tokens"] for ex in examples], "prompt_tokens"))
        depths = [ex["meta"]["needle_depth"] for ex in examples if ex["meta"].get("needle_depth") is not None]
        stats.update(_describe(depths, "needle_depth"))
        stats.update(_describe([len(ex["documents"]) for ex in examples], "documents"))
        stats.update(_describe([len(ex["gold_doc_ids"]) for ex in examples], "gold_documents"))
        stats.update(_describe([len(ex["needles"]) for ex in examples], "needles"))
        if data.task == "summhay":
            # How well the insight needles state their insight (best-sentence unigram F1).
            matches = [f for ex in examples for f in ex["meta"]["insight_f1"]]
            stats.update(_describe(matches, "insight_match"))
            for threshold in INSIGHT_MATCH_BANDS:
                stats[f"insight_match_share_below_{threshold}"] = (
                    sum(1 for f in matches if f < threshold) / len(matches) if matches else 0.0
                )
        rows += [{"task": data.task, "condition": condition, "stat": k, "value": v} for k, v in stats.items()]
    rows += [{"task": data.task, "condition": "all", "stat": k, "value": float(v)} for k, v in sorted(data.counts.items())]
    return pd.DataFrame(rows, columns=SCHEMAS["dataset_stats"].names)


def write_real_data(data: RealData, *, eval_path: str, full_path: str, limited_path: str, stats_path: str,
                    metadata: Mapping[str, Any]) -> None:
    """Validate all examples, then write the four artifacts (nothing is written on error)."""
    outputs = ((eval_path, data.eval), (full_path, data.real_full), (limited_path, data.real_limited))
    for path, examples in outputs:
        for ex in examples:
            validate_example(ex, where=str(path))
    frames = [(path, examples_to_frame(examples)) for path, examples in outputs]
    for path, frame in frames:
        write_table(frame, path, "examples", metadata)
    write_table(data.stats, stats_path, "dataset_stats", metadata)


def _log_file_stream(log_path: str | None):
    """The open stream of the logging FileHandler writing ``log_path``, if any."""
    import os

    if not log_path:
        return None
    target = os.path.abspath(log_path)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and os.path.abspath(handler.baseFilename) == target:
            return handler.stream
    return None


def run_build_real_data(
    *,
    task: str,
    raw_files: Sequence[str],
    model_dir: str,
    outputs: Mapping[str, str],
    params: Mapping[str, Any],
    model: str,
    log_path: str | None = None,
) -> RealData:
    """Entry point of the ``build_real_data`` rule: load the tokenizer, build, write.

    ``params``: task_config, eval_examples, max_train_examples, limited_fraction, seed,
    context_tokens. ``outputs``: eval, real_full, real_limited, stats paths.
    """
    from synthctx.logging_utils import progress_stream
    from synthctx.models.loading import load_tokenizer
    from synthctx.provenance import provenance

    tokenizer = load_tokenizer(model_dir)
    # Share the log handler's file object: a second handle on the same file would have
    # the handler (opened without O_APPEND) overwrite the progress lines.
    shared = _log_file_stream(log_path)
    stream = shared or progress_stream(log_path)
    try:
        data = build_real_data(
            task, raw_files, tokenizer,
            task_config=params["task_config"], eval_examples=int(params["eval_examples"]),
            max_train_examples=params.get("max_train_examples"), limited_fraction=float(params["limited_fraction"]),
            seed=int(params["seed"]), context_tokens=int(params["context_tokens"]), progress_file=stream,
        )
    finally:
        if log_path and shared is None:
            stream.close()
    metadata = provenance(
        seed=int(params["seed"]), model=model, task=task, context_tokens=int(params["context_tokens"]),
        task_config=dict(params["task_config"]), eval_examples=int(params["eval_examples"]),
        max_train_examples=params.get("max_train_examples"), limited_fraction=float(params["limited_fraction"]),
        raw_files=[str(f) for f in raw_files],
    )
    write_real_data(
        data, eval_path=outputs["eval"], full_path=outputs["real_full"], limited_path=outputs["real_limited"],
        stats_path=outputs["stats"], metadata=metadata,
    )
    return data
