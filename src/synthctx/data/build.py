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

from synthctx.data import context, splits
from synthctx.data.examples import examples_to_frame, validate_example
from synthctx.data.stats import dataset_stats as stats_frame
from synthctx.data.stats import needle_depth  # noqa: F401 - also the stage's public name for it
from synthctx.schema import ArtifactError, write_table
from synthctx.tasks import get_task

log = logging.getLogger("synthctx.data")



@dataclass
class RealData:
    task: str
    eval: list[dict[str, Any]]
    real_full: list[dict[str, Any]]
    real_limited: list[dict[str, Any]]
    counts: dict[str, float] = field(default_factory=dict)  # raw/candidate/dropped counts
    stats: pd.DataFrame | None = None


def linked_split(task: str, candidates: Sequence[context.Candidate], *, seed: int, eval_examples: int,
                 max_train_examples: int | None, build, dropped: Counter, update, counts: Counter,
                 eval_keep=None, train_keep=None) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Eval and training examples of candidates linked into groups that stay on one side.

    ``eval_keep`` / ``train_keep`` (candidate -> bool; None: all) restrict which candidates the
    eval split / the training set draw from (MuSiQue's hop counts). Returns (eval, train, info)
    with info ``linked`` (ids kept out of training as linked to the eval split).
    """
    # Records sharing a sub-question, a supporting paragraph or a gold passage stay together.
    example_id, links = (lambda c: c.example_id), (lambda c: c.links)
    groups = splits.linked_groups(candidates, seed, example_id, links)
    counts["split_groups"] = len(groups)
    counts["split_group_max"] = max(len(g) for g in groups)
    eval_pool = [c for c in candidates if eval_keep is None or eval_keep(c)]
    eval_groups = groups if len(eval_pool) == len(candidates) else splits.linked_groups(
        eval_pool, seed, example_id, links)
    eval_set, rest = splits.take_eval_groups(eval_groups, eval_examples, build, dropped, update)
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
    info: dict[str, Any] = {"linked": linked, "rest": rest}
    if train_keep is not None:
        rest = [c for c in rest if train_keep(c)]
    rest = splits.order_by_hash(rest, seed, example_id)
    train_set, _ = splits.take_buildable(rest, max_train_examples, build, dropped, update)
    return eval_set, train_set, info


def heldout_group_split(candidates: Sequence[context.Candidate], eval_groups: set[str], *, seed: int,
                        eval_examples: int, max_train_examples: int | None, build, dropped: Counter,
                        update) -> tuple[list[dict], list[dict]]:
    """Eval examples from the candidates of ``eval_groups``, training examples from the others."""
    eval_pool = [c for c in candidates if c.group in eval_groups]
    train_pool = [c for c in candidates if c.group not in eval_groups]
    eval_set, _ = splits.take_buildable(
        splits.order_by_hash(eval_pool, seed, lambda c: c.example_id), eval_examples, build, dropped, update
    )
    train_set, _ = splits.take_buildable(
        splits.order_by_hash(train_pool, seed, lambda c: c.example_id), max_train_examples, build, dropped,
        update,
    )
    return eval_set, train_set


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

    spec = get_task(task)
    counts: Counter = Counter()
    candidates, extra = spec.load_candidates(raw_files, tokenizer, task_config, seed, context_tokens, counts)
    counts["candidates"] = len(candidates)
    dropped: Counter = Counter()
    total = eval_examples + (max_train_examples if max_train_examples is not None else len(candidates))
    bar = tqdm(total=min(total, len(candidates)), desc=f"build {task}", file=progress_file, mininterval=5)
    insight_matches: list[float] = []  # SummHay: every gold document the build scored

    def build(cand: context.Candidate) -> context.Built:
        result = cand.build()
        insight_matches.extend(result.insight_matches)
        return result

    eval_set, train_set = spec.split(
        candidates, extra, task_config=task_config, seed=seed, eval_examples=eval_examples,
        max_train_examples=max_train_examples, build=build, dropped=dropped, update=bar.update, counts=counts)
    bar.close()
    for reason, n in dropped.items():
        counts[f"dropped_{reason}"] = n
    counts["dropped_budget"] = dropped.get("budget", 0)
    spec.real_counts(counts, dropped, task_config, insight_matches)
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


def dataset_stats(data: RealData) -> pd.DataFrame:
    """Rows (task, condition, stat, value) of the eval and training sets, then the build counts
    (condition ``all``): :func:`synthctx.data.stats.dataset_stats`, shared with the synthetic sets."""
    return stats_frame(data.task, {"real": data.eval, "real_full": data.real_full, "real_limited": data.real_limited},
                       dict(sorted(data.counts.items())), "all")


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
