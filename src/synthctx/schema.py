"""One Parquet schema per artifact kind, written once here and checked on every read.

Every stage writes through :func:`write_table` and reads through :func:`read_table`, so a
file of the wrong kind, a missing column or a wrong type fails with the file and column
named instead of surfacing as a confusing error three stages later. Writes are atomic (a
temporary file in the same folder, renamed at the end), so a killed job never leaves a
Parquet file that Snakemake would take as complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DOCUMENT = pa.struct([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
# A needle is a character span [start, end) inside the text of document `doc_id`, except for
# kind == "citation", whose span lies inside that document's rendered header (the id a model
# cites); see synthctx.data.prompts.
NEEDLE = pa.struct(
    [("doc_id", pa.string()), ("start", pa.int32()), ("end", pa.int32()), ("kind", pa.string())]
)

SCHEMAS: dict[str, pa.Schema] = {
    # Normalized task example: real and synthetic data of all three tasks (STUDY.md section 2).
    "examples": pa.schema(
        [
            ("example_id", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("split", pa.string()),
            ("documents", pa.list_(DOCUMENT)),
            ("question", pa.string()),
            ("answers", pa.list_(pa.string())),
            ("target", pa.string()),
            ("gold_doc_ids", pa.list_(pa.string())),
            ("needles", pa.list_(NEEDLE)),
            ("meta", pa.string()),  # JSON object: source ids, token length, gold position...
        ]
    ),
    # Per-dataset generation report: one row per (statistic), so rejects are never silent.
    "dataset_stats": pa.schema(
        [
            ("task", pa.string()),
            ("condition", pa.string()),
            ("stat", pa.string()),
            ("value", pa.float64()),
        ]
    ),
    # LLM-written text pool shared by the synthetic variants of one task.
    "document_pool": pa.schema(
        [
            ("pool_id", pa.string()),
            ("task", pa.string()),
            ("kind", pa.string()),  # e.g. haystack_article, needle_article, news_document
            ("entity", pa.string()),
            ("prompt", pa.string()),
            ("text", pa.string()),
            ("fields", pa.string()),  # JSON of the structured facts the prompt asked for
            ("status", pa.string()),  # ok | reject:<reason>
        ]
    ),
    # Loss curve of one fine-tuning run.
    "train_curve": pa.schema(
        [
            ("step", pa.int32()),
            ("epoch", pa.float64()),
            ("loss", pa.float64()),
            ("learning_rate", pa.float64()),
            ("target_tokens", pa.int64()),
            ("seconds", pa.float64()),
        ]
    ),
    # Greedy predictions of one model (condition) on a task's real eval split, scored.
    "predictions": pa.schema(
        [
            ("example_id", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("prediction", pa.string()),
            ("score", pa.float64()),  # the task's Table 1 metric for this example
            ("metrics", pa.string()),  # JSON of every metric for this example
            ("prompt_tokens", pa.int32()),
            ("generated_tokens", pa.int32()),
        ]
    ),
    # Table 1: one row per (task, condition), significance against the best synthetic one.
    "table1": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("n", pa.int32()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("is_best_synthetic", pa.bool_()),
            ("p_vs_best_synthetic", pa.float64()),
            ("significantly_worse", pa.bool_()),
            # One-sided paired-bootstrap p that this condition beats Non-FT / the trivial baseline
            # (the positive control reads them on Real (Full)); null on those rows themselves.
            ("p_vs_nonft", pa.float64()),
            ("p_vs_trivial", pa.float64()),
            # Different predictions over the eval examples (1: a constant model).
            ("distinct_predictions", pa.int32()),
            # Trained conditions: training-set size and whether the training loss fell.
            ("train_examples", pa.int32()),
            ("loss_fell", pa.bool_()),
        ]
    ),
    # Retrieval score of every attention head of one model on one task.
    "head_scores": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("head_kind", pa.string()),  # retrieval | insight | niah
            ("layer", pa.int32()),
            ("head", pa.int32()),
            ("score", pa.float64()),
            ("n_examples", pa.int32()),  # examples that counted (success-only rule)
            ("n_seen", pa.int32()),  # examples decoded
        ]
    ),
    # Every decoded example's retrieval score of every head (the head_scores file beside it is the
    # mean over the examples with counted = true): bootstrap intervals of head counts and the
    # split-half agreement of the claims page. scores: layers x heads values, (layer, head) order.
    "head_example_scores": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("head_kind", pa.string()),
            ("example_id", pa.string()),
            ("counted", pa.bool_()),  # the example counts toward the head score (success-only rule)
            ("layers", pa.int32()),
            ("heads", pa.int32()),
            ("scores", pa.list_(pa.float64())),
        ]
    ),
    # Similarity of a synthetic-trained model's heads to the real-trained model's heads.
    "head_similarity": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("head_kind", pa.string()),
            ("cosine", pa.float64()),
            ("recall_topk", pa.float64()),
            ("recall_threshold", pa.float64()),
            ("positive_heads", pa.int32()),
            ("score", pa.float64()),  # downstream Table 1 score of the condition
        ]
    ),
    # Spearman correlation of a similarity measure with the downstream score (Figure 3).
    "correlations": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("measure", pa.string()),
            ("spearman_rho", pa.float64()),
            ("p_value", pa.float64()),  # two-sided permutation p (synthctx.analysis.similarity.spearman)
            ("n_conditions", pa.int32()),  # n: finite (similarity, score) pairs the rho uses
            ("p_method", pa.string()),  # exact | permutation | undefined
        ]
    ),
    # The synthetic-data scorecard (synthctx.analysis.scorecard): per task and head kind, every
    # candidate's cheap probe (and the Real (Full) reference probe) against the reference, with
    # percentile bootstrap intervals over the real examples (resampled jointly for both models).
    "scorecard": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("head_kind", pa.string()),
            ("condition", pa.string()),
            ("label", pa.string()),
            ("role", pa.string()),  # reference | candidate
            ("rank", pa.int32()),  # 1 = most similar to the reference (by scorecard.rank_by); null: reference
            ("cosine", pa.float64()),
            ("cosine_ci_low", pa.float64()),
            ("cosine_ci_high", pa.float64()),
            ("recall_topk", pa.float64()),
            ("recall_ci_low", pa.float64()),
            ("recall_ci_high", pa.float64()),
            ("positive_heads", pa.int32()),
            ("real_examples", pa.int32()),  # real eval examples decoded by both probes (resampled)
            ("counted_examples", pa.int32()),  # of them, those counting toward this probe's scores
            ("train_examples", pa.int32()),  # the probe's training-set size
            ("train_reused", pa.bool_()),  # the probe is the full study's adapter (same training)
            ("heads_reused", pa.bool_()),  # the probe's head scores are the full study's
            ("cost_train_s", pa.float64()),  # job-seconds of the training job (Snakemake benchmark)
            ("cost_heads_s", pa.float64()),  # job-seconds of the head-detection job
            ("cost_s", pa.float64()),
        ]
    ),
    # Stability of the reference probe's head ranking against the number of real examples: two
    # disjoint random subsets of n examples (bootstrap resamples where 2n exceeds the examples).
    "scorecard_stability": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("head_kind", pa.string()),
            ("n", pa.int32()),
            ("available", pa.int32()),  # the reference probe's decoded examples
            ("method", pa.string()),  # disjoint | bootstrap
            ("draws", pa.int32()),  # draws with both head vectors non-zero (the means below)
            ("cosine_mean", pa.float64()),
            ("cosine_low", pa.float64()),
            ("cosine_high", pa.float64()),
            ("overlap_mean", pa.float64()),  # |top-K(a) & top-K(b)| / max(|top-K(a)|, |top-K(b)|)
            ("overlap_low", pa.float64()),
            ("overlap_high", pa.float64()),
        ]
    ),
    # Does the scorecard predict the full study? Spearman of a scorecard measure with Table 1's
    # score over the candidates, and the scorecard's cost as a fraction of the study's.
    "scorecard_vs_study": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("head_kind", pa.string()),
            ("measure", pa.string()),  # cosine | recall_topk
            ("spearman_rho", pa.float64()),
            ("p_value", pa.float64()),  # two-sided permutation p (synthctx.analysis.similarity.spearman)
            ("n_conditions", pa.int32()),
            ("p_method", pa.string()),  # exact | permutation | undefined
            ("scorecard_seconds", pa.float64()),  # the task's probes (reference included): train + heads
            ("study_seconds", pa.float64()),  # the task's full-study trainings + its evaluation job
            ("cost_fraction", pa.float64()),
        ]
    ),
    # Cross-task cosine similarity of real-trained head vectors (Table 2).
    "cross_task": pa.schema(
        [
            ("model", pa.string()),
            ("row", pa.string()),
            ("column", pa.string()),
            ("cosine", pa.float64()),
        ]
    ),
    # Knockout (Figure 4) and activation patching (Tables 3/11): per example, per intervention.
    "intervention_predictions": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("intervention", pa.string()),  # none | knockout_topk | knockout_random | patch_*
            ("draw", pa.int32()),  # random draw index (0 for deterministic sets)
            ("heads", pa.string()),  # JSON list of [layer, head]
            ("example_id", pa.string()),
            ("prediction", pa.string()),
            ("score", pa.float64()),
        ]
    ),
    "intervention_summary": pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("condition", pa.string()),
            ("intervention", pa.string()),
            ("n_heads", pa.int32()),
            ("score", pa.float64()),
            ("baseline_score", pa.float64()),
            ("delta", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("p_value", pa.float64()),
        ]
    ),
    # The claims page (synthctx.analysis.claims): one row per claim of the paper and task (and
    # condition or measure where the claim has several), with the statistic, its uncertainty,
    # the paper's number, the verdict and the rule that decided it.
    "claims": pa.schema(
        [
            ("model", pa.string()),
            ("claim_id", pa.string()),  # C1..C8, CB (closed book)
            ("claim", pa.string()),
            ("task", pa.string()),  # a task, a Table 2 row (summhay_insight...), niah or all
            ("subject", pa.string()),  # the condition or measure of the row ("" when the claim has one)
            ("measured", pa.string()),
            ("statistic", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("p_holds", pa.float64()),  # one-sided p against the claim's direction (small: it holds)
            ("p_contradicts", pa.float64()),  # one-sided p against the opposite direction
            ("n", pa.int32()),
            ("paper", pa.string()),
            ("verdict", pa.string()),  # synthctx.analysis.claims.VERDICTS
            ("reason", pa.string()),  # why a row cannot be evaluated or is inconclusive by a flag
            ("rule", pa.string()),  # the rule that decided the verdict
        ]
    ),
}


class ArtifactError(ValueError):
    """A Parquet artifact or input record does not match what the workflow expects."""


def _check_frame(df: pd.DataFrame, kind: str, where: str) -> pa.Table:
    schema = SCHEMAS[kind]
    missing = [f.name for f in schema if f.name not in df.columns]
    extra = [c for c in df.columns if c not in schema.names]
    if missing or extra:
        raise ArtifactError(f"{where}: {kind} table has missing columns {missing} / unexpected columns {extra}")
    try:
        return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        for field in schema:
            try:
                pa.array(df[field.name], type=field.type, from_pandas=True)
            except Exception as col_err:  # noqa: BLE001 - we re-raise with the column named
                raise ArtifactError(f"{where}: column {field.name!r} is not {field.type}: {col_err}") from err
        raise ArtifactError(f"{where}: cannot convert to the {kind} schema: {err}") from err


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` under the process umask: what ``open()`` would give a new file. mkstemp/mkdtemp
    create 0600/0700 (private), which other users of a shared cluster folder could not read."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def write_table(df: pd.DataFrame, path: str | os.PathLike, kind: str, metadata: Mapping[str, Any] | None = None) -> None:
    """Validate ``df`` against the ``kind`` schema and write it atomically with provenance metadata."""
    path = Path(path)
    table = _check_frame(df, kind, str(path))
    meta = {"synthctx.kind": kind, "synthctx.meta": json.dumps(dict(metadata or {}), sort_keys=True, default=str)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, umask_mode())
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """Read a Parquet artifact, checking it is of ``kind`` and has exactly its schema."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such {kind} artifact")
    table = pq.read_table(path)
    found_kind = (table.schema.metadata or {}).get(b"synthctx.kind", b"").decode()
    if found_kind != kind:
        raise ArtifactError(f"{path}: expected a {kind} artifact, found {found_kind or 'no kind tag'}")
    expected = SCHEMAS[kind]
    for field in expected:
        if field.name not in table.schema.names:
            raise ArtifactError(f"{path}: column {field.name!r} missing from {kind} artifact")
        if not table.schema.field(field.name).type.equals(field.type):
            raise ArtifactError(
                f"{path}: column {field.name!r} is {table.schema.field(field.name).type}, expected {field.type}"
            )
    return table.select(expected.names).to_pandas()


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Provenance metadata (versions, seeds, model...) stored in an artifact's footer."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"synthctx.meta")
    return json.loads(raw) if raw else {}

