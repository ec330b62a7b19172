"""SummHay Citation (Laban et al. 2024): given a haystack excerpt, a subtopic query and an
insight, cite every document that contains the insight. Table 1 metric: citation F1."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from synthctx.tasks import register_task
from synthctx.tasks.base import Task

SUMMHAY_RAW = "https://github.com/salesforce/summary-of-a-haystack/raw/HEAD/data"
# Fixed F1 bands of the insight-match shares in the stats, comparable across settings.
INSIGHT_MATCH_BANDS = (0.5, 0.75, 1.0)


class SummHay(Task):
    name = "summhay"
    title = "SummHay"
    metric_description = "SummHay citation F1"
    concept_labels = {"low": "Simplified"}  # the paper's name of the low-expression needle
    instruction = (
        "Below are documents, a query and an insight. Cite every document that contains the insight, "
        "as bracketed document numbers such as [1][4]. Answer with the citations only."
    )
    # Closed book: the query and the insight without the documents. The target stays the gold
    # citations, which name documents of the prompt: without them no answer can be right.
    closed_book_instruction = (
        "Below are a query and an insight. Cite every document that contains the insight, "
        "as bracketed document numbers such as [1][4]. Answer with the citations only."
    )
    closed_book_note = ("the gold citations are numbers of documents the closed-book prompt does not show, so no "
                        "answer can be right: any credit comes from guessing document numbers (the trivial "
                        "baseline measures that), not from memory")
    primary_needle = "insight"
    head_kinds = {"retrieval": ("citation",), "insight": ("insight",)}
    cross_task_rows = (("summhay_insight", "insight"), ("summhay_retrieval", "retrieval"))
    trivial_description = "citing every document of the prompt"
    synth_data_keys = ("num_documents", "max_gold_documents")
    raw_schema = {"type": "object", "additionalProperties": False, "required": ["files"],
                  "properties": {"files": {"type": "array", "minItems": 2, "items": {"type": "string"}}}}
    data_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["eval_haystacks", "num_documents", "max_gold_documents", "excerpt_sentences",
                     "min_insight_match"],
        "properties": {
            "eval_examples": {"type": "integer", "minimum": 1},
            "eval_haystacks": {"type": "integer", "minimum": 1},
            # topic ids of the eval haystacks; null: the eval_haystacks with the smallest seeded hash
            "eval_haystack_ids": {"type": ["array", "null"], "minItems": 1, "uniqueItems": True,
                                  "items": {"type": "string"}},
            "num_documents": {"type": "integer", "minimum": 2},
            "max_gold_documents": {"type": "integer", "minimum": 1},
            "excerpt_sentences": {"type": "integer", "minimum": 1},
            "min_insight_match": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }

    @property
    def variant_builder(self):
        from synthctx.synth.variants import SummHayBuilder

        return SummHayBuilder

    def download_url(self, relative: str) -> str | None:
        import re

        found = re.fullmatch(r"(?:.*/)?(topic_(?:news|conv)[0-9]+)\.json", relative)
        return f"{SUMMHAY_RAW}/{found.group(1)}.json" if found else None

    def load_candidates(self, raw_files: Sequence[str], tokenizer, task_config: Mapping[str, Any], seed: int,
                        context_tokens: int, counts: Counter):
        from synthctx.data import context, loaders

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
        return out, {"haystack_ids": [h.topic_id for h in haystacks], "files": list(raw_files)}

    def split(self, candidates, extra, *, task_config, seed, eval_examples, max_train_examples, build, dropped,
              update, counts):
        """Split by haystack (every candidate's group is its haystack): the haystacks of
        ``eval_haystack_ids``, or (null) the ``eval_haystacks`` with the smallest seeded hash."""
        from synthctx.data import splits
        from synthctx.data.build import heldout_group_split

        eval_groups = set(eval_haystack_ids(task_config, extra["haystack_ids"], extra["files"]) or
                          splits.heldout_groups([c.group for c in candidates], int(task_config["eval_haystacks"]),
                                                seed))
        counts["eval_haystacks"] = len(eval_groups)
        return heldout_group_split(candidates, eval_groups, seed=seed, eval_examples=eval_examples,
                                   max_train_examples=max_train_examples, build=build, dropped=dropped, update=update)

    def real_counts(self, counts, dropped, task_config, insight_matches) -> None:
        from synthctx.data.stats import describe

        minimum = float(task_config["min_insight_match"])
        counts["dropped_weak_insight_match"] = dropped.get("weak_insight_match", 0)
        counts["insight_documents_scored"] = len(insight_matches)
        counts["insight_documents_below_match"] = sum(1 for f in insight_matches if f < minimum)
        counts.update(describe(insight_matches, "insight_match_scored"))

    def set_stats(self, examples) -> dict[str, float]:
        """How well the insight needles state their insight (best-sentence unigram F1)."""
        from synthctx.data.stats import describe

        # Real examples only: a synthetic insight needle is the insight itself (no F1 to report).
        examples = [ex for ex in examples if "insight_f1" in ex["meta"]]
        if not examples:
            return {}
        stats: dict[str, float] = {}
        matches = [f for ex in examples for f in ex["meta"]["insight_f1"]]
        stats.update(describe(matches, "insight_match"))
        for threshold in INSIGHT_MATCH_BANDS:
            stats[f"insight_match_share_below_{threshold}"] = (
                sum(1 for f in matches if f < threshold) / len(matches) if matches else 0.0
            )
        return stats

    needle_data_keys = ("min_insight_match",)

    def locate_needles(self, example, task_config):
        """Gold documents from the record (or the citations of its target); per gold document an
        ``insight`` needle on its best-matching sentence of the insight (the question; unigram F1
        at least ``data.summhay.min_insight_match``, as for the real data) and a ``citation``
        needle on its header number."""
        import re

        from synthctx.data.prompts import citation_span_in_header, citation_target
        from synthctx.data.text import best_matching_sentence, split_sentences
        from synthctx.tasks.base import RecordError

        positions = {d["doc_id"]: i for i, d in enumerate(example["documents"], start=1)}
        gold = list(example.get("gold_doc_ids") or re.findall(r"\[(\d+)\]", example["target"]))
        if not gold:
            raise RecordError("target", f"{example['target']!r} cites no document (SummHay targets are citations "
                                        "such as [2][5]; or give gold_documents)")
        for g in gold:
            if g not in positions:
                raise RecordError("target", f"cites document {g}, but the record has {len(positions)} documents")
        if example["target"] != citation_target(gold):
            raise RecordError("target", f"{example['target']!r} is not the citation of the gold documents "
                                        f"{citation_target(gold)!r}")
        minimum = float(task_config["min_insight_match"])
        needles = []
        for g in sorted(set(gold), key=int):
            text = example["documents"][positions[g] - 1]["text"]
            index, f1 = best_matching_sentence(text, example["question"])
            if index < 0 or f1 < minimum:
                raise RecordError("question", f"gold document {g} has no sentence stating the insight (best unigram "
                                              f"F1 {f1:.2f} < data.summhay.min_insight_match {minimum})")
            a, b = split_sentences(text)[index]
            needles.append({"doc_id": g, "start": a, "end": b, "kind": "insight"})
            start, end = citation_span_in_header(positions[g])
            needles.append({"doc_id": g, "start": start, "end": end, "kind": "citation"})
        return sorted(set(gold), key=int), needles

    def question_block(self, example: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        return f"\nQuery: {meta.get('query', '')}\nInsight: {example['question']}\nCitations:"

    def score(self, prediction: str, example: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        from synthctx.evaluate.metrics import _as_list, citation_scores

        metrics = citation_scores(prediction, _as_list(example.get("gold_doc_ids")))
        return metrics["citation_f1"], metrics

    def trivial_predictions(self, eval_examples, train_examples) -> list[str]:
        from synthctx.evaluate.baselines import cite_all_prediction

        return [cite_all_prediction(ex) for ex in eval_examples]

    def pool_settings(self, config: Mapping[str, Any]) -> dict[str, Any]:
        # SummHay sizes its topics for one haystack of news; only it has insight paraphrases.
        return {"haystack_documents": config["data"][self.name]["num_documents"],
                "max_template_overlap": config["generation"]["max_template_overlap"]}

    def plan_pool(self, gen, pool_size: int, haystack_documents: int | None) -> list[dict[str, Any]]:
        from synthctx.synth.pool import summhay_topic_count, template
        from synthctx.synth.topics import ASPECTS, make_topic

        items: list[dict[str, Any]] = []
        topics = [make_topic(gen, f"topic{t}") for t in range(summhay_topic_count(pool_size, haystack_documents))]
        for topic in topics:
            for ins in topic.insights:
                prompt = template("insight_prose").format(key=ins.key, number=ins.number, statement=ins.statement())
                items.append({"pool_id": f"{self.name}-{ins.insight_id}", "kind": "insight_prose", "entity": ins.key,
                              "prompt": prompt, "fields": {"insight": ins.to_dict(), "topic_id": topic.topic_id}})
        n_news = max(len(topics), pool_size - len(items))
        for i in range(n_news):
            topic = topics[i % len(topics)]
            aspect = ASPECTS[(i // len(topics)) % len(ASPECTS)][0]
            prompt = template("news_document").format(topic=topic.name, place=topic.place, aspect=aspect)
            items.append({"pool_id": f"{self.name}-news{i:03d}", "kind": "news_document", "entity": topic.name,
                          "prompt": prompt,
                          "fields": {"topic_id": topic.topic_id, "topic": topic.name, "place": topic.place,
                                     "aspect": aspect,
                                     "insights": [ins.to_dict() for ins in topic.insights]}})
        return items

    def finalize_synthetic(self, draft, gold_ids, needles, answers, target):
        from synthctx.data.prompts import citation_span_in_header, citation_target

        target = citation_target(gold_ids)
        for g in sorted(draft.gold):
            a, b = citation_span_in_header(g + 1)
            needles.append({"doc_id": str(g + 1), "start": a, "end": b, "kind": "citation"})
        return [target], target

    def check_draft(self, draft, kinds: Counter) -> None:
        from synthctx.synth.variants import Reject

        key = draft.meta.get("insight_key") or " ".join(draft.meta.get("pattern", []))
        containing = {i for i, d in enumerate(draft.documents) if key in d["text"]}
        if containing != set(draft.gold) or kinds["insight"] != len(draft.gold):
            raise Reject("target_not_derivable")


def eval_haystack_ids(task_config: Mapping[str, Any], loaded: Sequence[str], files: Sequence[str]) -> list[str] | None:
    """The configured eval haystacks (``data.summhay.eval_haystack_ids``), checked against the
    topic ids of the loaded haystacks; None when the key is null or absent (the seeded-hash choice)."""
    from synthctx.schema import ArtifactError

    chosen = task_config.get("eval_haystack_ids")
    if chosen is None:
        return None
    unknown = [h for h in chosen if h not in set(loaded)]
    if unknown:
        raise ArtifactError(f"config data.summhay.eval_haystack_ids: {unknown} are not topic ids of the haystacks "
                            f"in {list(files)} (their topic_id fields: {sorted(loaded)})")
    if len(set(chosen)) >= len(set(loaded)):
        raise ArtifactError(f"config data.summhay.eval_haystack_ids names all {len(set(loaded))} haystacks of "
                            f"{list(files)}: no training haystack would remain")
    return sorted(chosen)


register_task(SummHay())
