"""Shared pieces of the short-answer QA tasks (MDQA, MuSiQue): answer-F1 scoring, the
most-frequent-answer trivial baseline and the pool's haystack articles."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from synthctx.tasks.base import Task


class QATask(Task):
    trivial_description = "the most frequent Real (Full) training answer"

    @staticmethod
    def gold_answers(example: Mapping[str, Any]) -> list[str]:
        from synthctx.evaluate.metrics import _answers

        return _answers(example)

    def score(self, prediction: str, example: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        """Answer token F1 (max over the accepted answers); also EM and the answer's token recall."""
        from synthctx.evaluate.metrics import exact_match, token_f1, token_recall

        golds = self.gold_answers(example)
        if not golds:
            raise ValueError(f"example {example.get('example_id')!r}: field 'answers' is empty, cannot score "
                             f"{self.name}")
        f1 = max(token_f1(prediction, g) for g in golds)
        em = max(exact_match(prediction, g) for g in golds)
        metrics = {"f1": f1, "em": em, "answer_recall": max(token_recall(prediction, g) for g in golds)}
        return f1, metrics

    def trivial_predictions(self, eval_examples: Sequence[Mapping[str, Any]],
                            train_examples: Sequence[Mapping[str, Any]]) -> list[str]:
        from synthctx.evaluate.baselines import most_frequent_answer

        answer = most_frequent_answer(train_examples)
        return [answer] * len(eval_examples)

    def haystack_items(self, gen, count: int) -> list[dict[str, Any]]:
        """``count`` haystack articles about fictional entities (the pool's distractor prose)."""
        from synthctx.synth.pool import KIND_DESCRIPTIONS, template

        items = []
        for i in range(max(0, count)):
            kind = gen.rng.choice(list(KIND_DESCRIPTIONS))
            entity = gen.entity(kind)
            prompt = template("haystack_article").format(entity=entity, kind=KIND_DESCRIPTIONS[kind])
            items.append({"pool_id": f"{self.name}-haystack{i:03d}", "kind": "haystack_article", "entity": entity,
                          "prompt": prompt, "fields": {"entity": entity, "entity_kind": kind}})
        return items
