"""SummHay-style fictional topics: a news event, subtopic queries and insights.

An insight is a templated statement carrying a unique key (a fictional person's name) and
a number, so that whether a document contains it can be decided by string search, both for
the templated (Simplified) expression and for an LLM paraphrase that keeps key and number.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthctx.synth.entities import EntityGenerator

EVENTS = ["harbour strike", "river flood", "bridge collapse", "trade fair", "council election", "mine closure",
          "grain shortage", "festival fire"]

# (aspect, query template, insight template); {topic}, {key}, {number} are filled in.
ASPECTS = [
    ("costs", "What was reported about the costs of {topic}?",
     "{key} estimated that {topic} cost the town {number} thousand crowns."),
    ("public reaction", "How did residents react to {topic}?",
     "{key} said that {number} residents signed a petition about {topic}."),
    ("duration", "How long did {topic} last?",
     "{key} reported that {topic} lasted {number} days."),
    ("official response", "How did officials respond to {topic}?",
     "{key} announced that {number} workers were sent to deal with {topic}."),
]


@dataclass(frozen=True)
class Insight:
    insight_id: str
    topic: str
    aspect: str
    query: str
    key: str
    number: str

    def statement(self) -> str:
        """Simplified expression: the templated statement (also the insight the prompt gives)."""
        template = next(t for a, _, t in ASPECTS if a == self.aspect)
        return template.format(topic=self.topic, key=self.key, number=self.number)

    def to_dict(self) -> dict[str, str]:
        return {"insight_id": self.insight_id, "topic": self.topic, "aspect": self.aspect, "query": self.query,
                "key": self.key, "number": self.number}

    @classmethod
    def from_dict(cls, d) -> "Insight":
        return cls(d["insight_id"], d["topic"], d["aspect"], d["query"], d["key"], d["number"])


@dataclass(frozen=True)
class Topic:
    topic_id: str
    name: str  # "the Dranholt harbour strike"
    place: str
    insights: tuple[Insight, ...]


def make_topic(gen: EntityGenerator, topic_id: str, insights_per_aspect: int = 2) -> Topic:
    place = gen.place()
    name = f"the {place} {gen.rng.choice(EVENTS)}"
    numbers: set[str] = set()
    insights = []
    for aspect, query, _ in ASPECTS:
        for j in range(insights_per_aspect):
            number = str(gen.rng.randint(12, 989))
            while number in numbers:  # distinct numbers keep insights distinguishable
                number = str(gen.rng.randint(12, 989))
            numbers.add(number)
            insights.append(Insight(f"{topic_id}-{aspect.replace(' ', '_')}-{j}", name, aspect,
                                    query.format(topic=name), gen.person(), number))
    return Topic(topic_id, name, place, tuple(insights))
