"""MuSiQue-Ans (Trivedi et al. 2022): multi-hop questions (the paper's three-hop ones) over 20
paragraphs, composed of single-hop sub-questions. Table 1 metric: answer F1 (max over the
answer and its aliases)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from synthctx.tasks import register_task
from synthctx.tasks.qa import QATask

# The official release is a Google Drive zip (StonyBrookNLP/musique download_data.sh).
MUSIQUE_DRIVE_ID = "1tGdADlNjWFaHLeZZGShh2IRcpO6Lv24h"
HOP_COUNTS = [2, 3, 4]


def musique_hop_sets(task_config: Mapping[str, Any]) -> tuple[set[int], set[int]]:
    """(eval hop counts, training hop counts): ``hops`` and ``train_hops`` (absent/null: ``hops``)."""
    hops = {int(h) for h in task_config["hops"]}
    train_hops = task_config.get("train_hops")
    if train_hops is None:
        return hops, hops
    if not train_hops:
        raise ValueError("data.musique.train_hops is empty (null means: the same as data.musique.hops)")
    return hops, {int(h) for h in train_hops}


class MuSiQue(QATask):
    name = "musique"
    title = "MuSiQue"
    metric_description = "MuSiQue answer F1"
    instruction = (
        "Answer the question using only the provided documents. Finding the answer takes several steps "
        "across documents. Answer with a short phrase only."
    )
    closed_book_instruction = ("Answer the question. Finding the answer takes several steps. Answer with a short "
                               "phrase only.")
    synth_data_keys = ("num_paragraphs",)
    raw_schema = {"type": "object", "additionalProperties": False, "required": ["files"],
                  "properties": {"files": {"type": "array", "minItems": 1, "items": {"type": "string"}}}}
    data_schema = {
        "type": "object", "additionalProperties": False, "required": ["hops", "train_hops", "num_paragraphs"],
        "properties": {
            "eval_examples": {"type": "integer", "minimum": 1},
            "hops": {"type": "array", "minItems": 1, "items": {"type": "integer", "enum": HOP_COUNTS}},
            # Hop counts of the training questions; null: the same as hops.
            "train_hops": {"type": ["array", "null"], "minItems": 1,
                           "items": {"type": "integer", "enum": HOP_COUNTS}},
            "num_paragraphs": {"type": "integer", "minimum": 2},
        },
    }
    # Hops of the synthetic chained relations (pool chains, High/Low and Symbolic variants).
    synthetic_hops = 3

    @property
    def variant_builder(self):
        from synthctx.synth.variants import MuSiQueBuilder

        return MuSiQueBuilder

    def download_url(self, relative: str) -> str | None:
        return (f"https://drive.usercontent.google.com/download?id={MUSIQUE_DRIVE_ID}&export=download&confirm=t"
                if relative.endswith(".zip") else None)

    def load_candidates(self, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                        context_tokens: int, counts: Counter):
        from synthctx.data import context, loaders

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

    def split(self, candidates, hops_of, *, task_config, seed, eval_examples, max_train_examples, build, dropped,
              update, counts):
        """MuSiQue draws the eval split from the ``hops`` questions and trains on the ``train_hops``
        ones (the same set unless train_hops is set)."""
        import logging

        from synthctx.data.build import linked_split

        eval_hops, train_hops = musique_hop_sets(task_config)
        eval_set, train_set, info = linked_split(
            self.name, candidates, seed=seed, eval_examples=eval_examples, max_train_examples=max_train_examples,
            build=build, dropped=dropped, update=update, counts=counts,
            eval_keep=lambda c: hops_of[c.example_id] in eval_hops,
            train_keep=lambda c: hops_of[c.example_id] in train_hops)
        counts["train_linked_to_eval"] = sum(1 for i in info["linked"] if hops_of[i] in train_hops)
        counts["not_train_hops"] = sum(1 for c in info["rest"] if hops_of[c.example_id] not in train_hops)
        histogram = Counter(hops_of[ex["example_id"]] for ex in train_set)
        for h in sorted(eval_hops | train_hops):
            counts[f"real_full_hops_{h}"] = histogram.get(h, 0)
        logging.getLogger("synthctx.data").info(
            "musique: Real (Full) by hop count %s (eval hops %s, train_hops %s; %d training candidates left out "
            "as linked to the eval split)", dict(sorted(histogram.items())), sorted(eval_hops), sorted(train_hops),
            counts["train_linked_to_eval"])
        return eval_set, train_set

    def check_draft(self, draft, kinds: Counter) -> None:
        from synthctx.synth.variants import Reject

        super().check_draft(draft, kinds)
        if any(kinds[f"hop{h}"] == 0 for h in range(1, self.synthetic_hops)):
            raise Reject("hop_not_derivable")

    def plan_pool(self, gen, pool_size: int, haystack_documents: int | None) -> list[dict[str, Any]]:
        from synthctx.synth.pool import NEEDLE_SHARE, _needle_item

        n_needle = max(1, round(pool_size * NEEDLE_SHARE))
        hops = self.synthetic_hops
        items = []
        for c in range(max(1, n_needle // hops)):
            for hop, fact in enumerate(gen.chain(hops), start=1):
                items.append(_needle_item(self.name, f"{self.name}-chain{c:03d}-hop{hop}", fact, chain=c, hop=hop))
        return items + self.haystack_items(gen, pool_size - len(items))


register_task(MuSiQue())
