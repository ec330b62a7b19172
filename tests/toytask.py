"""A toy task defined entirely under tests/ (docs/adding-a-task.md follows it): answer a lookup
question from three short passages stored as one tab-separated line each
(tests/fixtures/raw/toy/lookup.tsv: id, topic, question, answer, gold passage, distractors).

Importing this module registers the task ``toy`` (config ``study.task_modules: [toytask]``)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from synthctx.data import context
from synthctx.data.examples import make_example
from synthctx.data.text import find_answer_spans
from synthctx.evaluate.metrics import normalize_answer
from synthctx.provenance import derived_seed
from synthctx.schema import ArtifactError
from synthctx.tasks import register_task
from synthctx.tasks.base import Task


def load_lookup(path: str) -> list[dict[str, Any]]:
    """The records of a lookup TSV; a clear error naming file, line and field otherwise."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 6:
            raise ArtifactError(f"{path}: line {number}: expected at least 6 tab-separated fields, got {len(fields)}")
        rid, topic, question, answer, gold, *distractors = fields
        if answer.lower() not in gold.lower():
            raise ArtifactError(f"{path}: line {number}: field 'answer' {answer!r} is not in the gold passage")
        records.append({"id": rid, "topic": topic, "question": question, "answer": answer, "gold": gold,
                        "distractors": distractors})
    return records


class ToyLookup(Task):
    name = "toy"
    title = "Toy lookup"
    metric_description = "toy exact match"
    instruction = "Answer the question using only the passages. Answer with a short phrase only."
    trivial_description = "always answering 'unknown'"
    synthetic_variants = ("symbolic",)  # no LLM pool needed: key-value lookups
    synth_data_keys = ("num_documents",)
    data_schema = {"type": "object", "additionalProperties": False, "required": ["num_documents"],
                   "properties": {"num_documents": {"type": "integer", "minimum": 1}}}

    @property
    def variant_builder(self):
        from synthctx.synth.variants import LookupBuilder  # single key -> value lookups

        return LookupBuilder

    def load_candidates(self, raw_files, tokenizer, task_config, seed, context_tokens, counts):
        records = [r for path in raw_files for r in load_lookup(path)]
        counts["raw_records"] = len(records)
        n = int(task_config["num_documents"])

        def build(r):
            rng = random.Random(derived_seed(seed, self.name, r["id"]))
            passages = [r["gold"], *r["distractors"]][:n]
            order = list(range(len(passages)))
            rng.shuffle(order)
            docs = [{"doc_id": str(k + 1), "title": "", "text": passages[i]} for k, i in enumerate(order)]
            gold_id = str(order.index(0) + 1)
            needles = [{"doc_id": gold_id, "start": a, "end": b, "kind": "answer"}
                       for a, b in find_answer_spans(r["gold"], [r["answer"]])]
            example = make_example(example_id=f"toy-{r['id']}", task=self.name, condition="real", split="eval",
                                   documents=docs, question=r["question"], answers=[r["answer"]],
                                   target=r["answer"], gold_doc_ids=[gold_id], needles=needles,
                                   meta={"topic": r["topic"], "gold_positions": [order.index(0)]})
            fitted, _ = context.fit_to_budget([example], tokenizer, context_tokens)
            return context.Built(fitted, "" if fitted else "budget")

        return [context.Candidate(f"toy-{r['id']}", r["topic"], lambda r=r: build(r), links=(r["topic"],))
                for r in records], {}

    def score(self, prediction, example):
        golds = [normalize_answer(a) for a in example["answers"]]
        exact = float(normalize_answer(prediction) in golds)
        contains = float(any(g and g in normalize_answer(prediction) for g in golds))
        return exact, {"exact": exact, "contains": contains}

    def trivial_predictions(self, eval_examples, train_examples):
        return ["unknown"] * len(eval_examples)


TOY = register_task(ToyLookup())
