"""The task interface: everything the stages need to know about one task.

A task is one module that subclasses :class:`Task`, fills in its attributes and methods, and
calls ``register_task(MyTask())`` at import time (built-in tasks: the modules of
``synthctx.tasks.BUILTIN_TASKS``; a researcher's own: any importable module named in config
``study.task_modules``). docs/adding-a-task.md walks through one.

What the stages take from a task:

- data (``build_real_data``): :meth:`raw_files` (from config ``raw_data.<task>``; with
  ``raw_data.local_dir`` null the files of ``raw_data.downloads.<task>``, whose pinned URLs are
  the only record of where a task's data comes from), :meth:`load_candidates` (the task's own
  raw-file loader and example builder: raw records -> buildable
  :class:`synthctx.data.context.Candidate` objects, each building one normalized example with
  its needle spans and kinds),
  :meth:`split` (eval / train; default: linked groups stay on one side), :meth:`real_counts`
  and :meth:`set_stats` (task-specific dataset stats); :meth:`locate_needles` (a user
  dataset's needles and gold documents, when its records give none; docs/user-datasets.md);
- prompts (every stage): :attr:`instruction` and :meth:`question_block`; the closed-book
  baseline's prompt (evaluation only): :attr:`closed_book_instruction`,
  :meth:`closed_book_content` and :attr:`closed_book_note`;
- evaluation (Table 1): :meth:`score` (the Table 1 score and auxiliary metrics),
  :meth:`trivial_predictions` and :attr:`trivial_description`;
- heads: :attr:`head_kinds` (head kind -> needle kinds scored) and the success metric, a
  metric name of :meth:`score` (config ``heads.success_metric``);
- analysis: :attr:`cross_task_rows` (Table 2 rows), :attr:`title`, :attr:`concept_labels`,
  :attr:`paper_numbers` (the paper's numbers beside the claims page's rows);
- synthetic data: :attr:`synthetic_variants` (which conditions the task supports),
  :meth:`plan_pool` (the LLM-written pool), :attr:`variant_builder`, :meth:`finalize_synthetic`,
  :meth:`check_draft`, :meth:`pool_settings`, :attr:`synth_data_keys`;
- config: :attr:`raw_schema` and :attr:`data_schema` (JSON Schema of ``raw_data.<task>`` and
  ``data.<task>``, checked before any job runs).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from synthctx.study import BUILTIN_SYNTHETIC


class RecordError(ValueError):
    """A user record (docs/user-datasets.md) that breaks a rule of its task, naming the field;
    the importer adds the file and line."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field!r}: {message}")
        self.field = field


class Task:
    # --- identity and display
    name: str = ""
    title: str = ""  # Table 1 column, Table 3 row, figure titles
    metric_description: str = ""  # Table 1 caption, e.g. "token F1"
    # synthetic-axis words this task renames (SummHay: {"low": "Simplified"})
    concept_labels: Mapping[str, str] = {}

    # --- prompts
    instruction: str = ""
    # The instruction of the closed-book prompt (the question without the documents): the
    # instruction minus what it says about the documents. None: :attr:`instruction` unchanged.
    closed_book_instruction: str | None = None
    # Why the task's closed-book score does not measure parametric memory (None: it does).
    # Table 1 notes it; the claims page then marks the closed-book claim not applicable.
    closed_book_note: str | None = None

    # --- needles
    primary_needle: str = "answer"  # the kind whose position is the example's needle depth
    head_kinds: Mapping[str, tuple[str, ...]] = {"retrieval": ("answer",)}  # head kind -> needle kinds
    cross_task_rows: tuple[tuple[str, str], ...] | None = None  # Table 2 (row name, head kind); None: (name, retrieval)
    # The paper's numbers shown beside the claims page's rows (claim id or "claim:subject" -> text).
    paper_numbers: dict[str, str] = {}
    # The metric the paper's closed-book number is in, where it is not the Table 1 score.
    paper_closed_book_metric: str | None = None

    # --- evaluation
    trivial_description: str = ""

    # --- synthetic data
    # default: every synthetic condition of the study vocabulary (the built-in builders make all five)
    synthetic_variants: tuple[str, ...] = BUILTIN_SYNTHETIC
    # data.<task> keys the synthetic examples follow; the first is the number of documents per example
    synth_data_keys: tuple[str, ...] = ()
    variant_builder: Any = None  # a synthctx.synth.variants.Builder subclass

    # data.<task> keys that locating the needles of a user's dataset reads (SummHay: min_insight_match)
    needle_data_keys: tuple[str, ...] = ()

    # --- config
    raw_schema: Mapping[str, Any] = {"type": "object", "required": ["files"],
                                     "properties": {"files": {"type": "array", "minItems": 1,
                                                              "items": {"type": "string"}}}}
    data_schema: Mapping[str, Any] = {"type": "object"}

    # ------------------------------------------------------------------ data
    def raw_files(self, raw_spec: Mapping[str, Any]) -> list[str]:
        """The raw files of the task, relative to ``raw_data.local_dir``."""
        return list(raw_spec["files"])

    def load_candidates(self, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                        context_tokens: int, counts: Counter) -> tuple[list, Any]:
        """(buildable candidates, extra state handed to :meth:`split`); counts raw records."""
        raise NotImplementedError

    def split(self, candidates: list, extra: Any, *, task_config: Mapping[str, Any], seed: int, eval_examples: int,
              max_train_examples: int | None, build: Callable, dropped: Counter, update: Callable,
              counts: Counter) -> tuple[list[dict], list[dict]]:
        """(eval examples, training examples). Default: linked candidates stay on one side."""
        from synthctx.data.build import linked_split

        eval_set, train_set, _ = linked_split(
            self.name, candidates, seed=seed, eval_examples=eval_examples, max_train_examples=max_train_examples,
            build=build, dropped=dropped, update=update, counts=counts)
        return eval_set, train_set

    def real_counts(self, counts: Counter, dropped: Counter, task_config: Mapping[str, Any],
                    insight_matches: Sequence[float]) -> None:
        """Task-specific counts of the real-data build (added to the stats' ``all`` rows)."""

    def set_stats(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Task-specific statistics of one set of examples (dataset_stats rows)."""
        return {}

    def locate_needles(self, example: Mapping[str, Any], task_config: Mapping[str, Any]) -> tuple[list[str], list[dict]]:
        """(gold_doc_ids, needles) of a user's example that gives no needle spans (the import
        of ``datasets:``, docs/user-datasets.md); raise :class:`RecordError` naming the field
        when they cannot be located.

        Default (short-answer tasks): ``answer`` needles at every whole-word, case-insensitive
        occurrence of an answer in the gold documents, or, when the record names none, in every
        document (those holding an answer become the gold documents), as for real MDQA."""
        from synthctx.data.text import find_answer_spans

        gold = list(example.get("gold_doc_ids") or [])
        documents = [d for d in example["documents"] if not gold or d["doc_id"] in gold]
        needles = [{"doc_id": d["doc_id"], "start": a, "end": b, "kind": "answer"}
                   for d in documents for a, b in find_answer_spans(d["text"], example["answers"])]
        if not needles:
            where = f"the gold documents {gold}" if gold else "any document"
            raise RecordError("answers", f"no answer of {list(example['answers'])} occurs (whole words, any case) in "
                                         f"{where}")
        return gold or list(dict.fromkeys(n["doc_id"] for n in needles)), needles

    # ------------------------------------------------------------------ prompts
    def question_block(self, example: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        """The text after the documents in the user message."""
        return f"\nQuestion: {example['question']}\nAnswer:"

    def closed_book_content(self, example: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        """The user message of the closed-book prompt: the with-documents message
        (``instruction``, a blank line, the documents, :meth:`question_block`) without the
        documents, and with :attr:`closed_book_instruction`. The chat template, decoding and
        target are the task's own."""
        instruction = self.instruction if self.closed_book_instruction is None else self.closed_book_instruction
        return instruction + "\n" + self.question_block(example, meta)

    # ------------------------------------------------------------------ evaluation
    def score(self, prediction: str, example: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        """(Table 1 score, every metric of the task) of a stripped prediction."""
        raise NotImplementedError

    def trivial_predictions(self, eval_examples: Sequence[Mapping[str, Any]],
                            train_examples: Sequence[Mapping[str, Any]]) -> list[str]:
        raise NotImplementedError

    # ------------------------------------------------------------------ synthetic data
    def pool_settings(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Pool settings that depend on this task's config (SummHay: haystack size, overlap bound)."""
        return {"haystack_documents": 0, "max_template_overlap": 1.0}

    def plan_pool(self, gen, pool_size: int, haystack_documents: int | None) -> list[dict[str, Any]]:
        """The items (id, kind, prompt, fields) of the task's LLM-written pool; no ``task`` key needed.
        A task that does not define it writes no pool (its variants need no LLM prose, e.g. only
        ``symbolic``): the workflow schedules no pool job for it."""
        raise NotImplementedError

    @property
    def writes_pool(self) -> bool:
        """Whether the task has an LLM-written pool (it defines :meth:`plan_pool`)."""
        return type(self).plan_pool is not Task.plan_pool

    def finalize_synthetic(self, draft, gold_ids: list[str], needles: list[dict[str, Any]], answers: list[str],
                           target: str) -> tuple[list[str], str]:
        """(answers, target) of a synthetic example; may add needles (SummHay: citations)."""
        return answers, target

    def check_draft(self, draft, kinds: Counter) -> None:
        """Raise synthctx.synth.variants.Reject when the draft's target is not derivable."""
        from synthctx.synth.variants import Reject

        answer_kind = "value" if "value" in kinds else "answer"
        if kinds[answer_kind] == 0:
            raise Reject("target_not_derivable")

    # ------------------------------------------------------------------ helpers
    def rows_of_table2(self) -> tuple[tuple[str, str], ...]:
        return self.cross_task_rows or ((self.name, "retrieval"),)

    def __repr__(self) -> str:
        return f"<task {self.name}>"
