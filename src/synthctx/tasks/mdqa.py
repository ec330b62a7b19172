"""MDQA (Lost in the Middle, Liu et al. 2023): NaturalQuestions-Open questions over retrieved
Wikipedia passages, one of them gold; single-hop. Table 1 metric: token F1 (SQuAD
normalization, max over the accepted answers)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from synthctx.tasks import register_task
from synthctx.tasks.base import Task
from synthctx.tasks.qa import QATask

# Where the original files are published (used only when raw_data.local_dir is null).
LITM_RAW = "https://github.com/nelson-liu/lost-in-the-middle/raw/HEAD/qa_data"


class MDQA(QATask):
    name = "mdqa"
    title = "MDQA"
    metric_description = "MDQA token F1"
    # Lost in the Middle's instruction, plus a request for a short answer (ours: the
    # metric is token F1, and instruct models otherwise answer in full sentences).
    instruction = (
        "Write a high-quality answer for the given question using only the provided search results "
        "(some of which might be irrelevant). Answer with a short phrase only."
    )
    closed_book_instruction = "Write a high-quality answer for the given question. Answer with a short phrase only."
    synth_data_keys = ("num_documents",)
    raw_schema = {"type": "object", "additionalProperties": False, "required": ["documents_file"],
                  "properties": {"documents_file": {"type": "string"}}}
    data_schema = {
        "type": "object", "additionalProperties": False, "required": ["num_documents", "gold_position"],
        "properties": {
            "eval_examples": {"type": "integer", "minimum": 1},
            "num_documents": {"type": "integer", "minimum": 1, "maximum": 20},
            "gold_position": {"oneOf": [{"type": "string", "enum": ["uniform"]}, {"type": "integer", "minimum": 0}]},
        },
    }

    @property
    def variant_builder(self):
        from synthctx.synth.variants import MDQABuilder

        return MDQABuilder

    def raw_files(self, raw_spec: Mapping[str, Any]) -> list[str]:
        return [raw_spec["documents_file"]]

    def download_url(self, relative: str) -> str | None:
        # e.g. nq-open-20_total_documents_gold_at_0.jsonl.gz from qa_data/20_total_documents/
        import re

        found = re.fullmatch(r"(?:.*/)?nq-open-([0-9]+)_total_documents_(.+)\.jsonl\.gz", relative)
        if not found:
            return None
        n, setting = found.groups()
        return f"{LITM_RAW}/{n}_total_documents/nq-open-{n}_total_documents_{setting}.jsonl.gz"

    def load_candidates(self, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                        context_tokens: int, counts: Counter):
        from synthctx.data import context, loaders

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

    def score(self, prediction: str, example: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        from synthctx.evaluate.metrics import best_subspan_em

        f1, metrics = super().score(prediction, example)
        metrics["best_subspan_em"] = best_subspan_em(prediction, self.gold_answers(example))
        return f1, metrics

    def plan_pool(self, gen, pool_size: int, haystack_documents: int | None) -> list[dict[str, Any]]:
        from synthctx.synth.pool import NEEDLE_SHARE, _needle_item

        n_needle = max(1, round(pool_size * NEEDLE_SHARE))
        items = [_needle_item(self.name, f"{self.name}-needle{i:03d}", gen.fact()) for i in range(n_needle)]
        return items + self.haystack_items(gen, pool_size - len(items))


register_task(MDQA())
