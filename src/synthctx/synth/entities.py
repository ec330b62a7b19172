"""Seeded fictional entities and templated relations.

Names are built from syllables so that no fact about them can come from a model's
pretraining: the answer of every synthetic example is only derivable from its context.
The generator is a pure function of its seed (``random.Random``), so the same config seed
gives the same entities on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "t", "th", "v", "z",
          "qu", "sh", "st", "tr", "w"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "x", "nd", "lt", "rn"]
PLACE_SUFFIXES = ["holt", "mere", "wick", "dale", "stead", "ford", "vale", "moor", "haven", "burg"]
ORG_SUFFIXES = ["Guild", "Works", "Collective", "Trading Company", "Institute", "Foundry", "Society", "Consortium"]

KIND_DESCRIPTIONS = {
    "person": "person",
    "place": "town",
    "organisation": "organisation",
}


@dataclass(frozen=True)
class Relation:
    name: str  # e.g. "birthplace"
    subject_kind: str
    object_kind: str
    # The templated statement (Low concept expression) and the question asking for the object.
    sentence: str  # "The birthplace of {s} is {o}."
    question: str  # "What is the birthplace of {s}?"
    phrase: str  # noun phrase for composed questions: "the birthplace of {s}"


RELATIONS: tuple[Relation, ...] = (
    Relation("birthplace", "person", "place", "The birthplace of {s} is {o}.",
             "What is the birthplace of {s}?", "the birthplace of {s}"),
    Relation("employer", "person", "organisation", "The employer of {s} is {o}.",
             "What is the employer of {s}?", "the employer of {s}"),
    Relation("spouse", "person", "person", "The spouse of {s} is {o}.",
             "Who is the spouse of {s}?", "the spouse of {s}"),
    Relation("mentor", "person", "person", "The mentor of {s} is {o}.",
             "Who is the mentor of {s}?", "the mentor of {s}"),
    Relation("headquarters", "organisation", "place", "The headquarters of {s} is {o}.",
             "Where is the headquarters of {s}?", "the headquarters of {s}"),
    Relation("founder", "organisation", "person", "The founder of {s} is {o}.",
             "Who is the founder of {s}?", "the founder of {s}"),
    Relation("parent company", "organisation", "organisation", "The parent company of {s} is {o}.",
             "What is the parent company of {s}?", "the parent company of {s}"),
    Relation("mayor", "place", "person", "The mayor of {s} is {o}.",
             "Who is the mayor of {s}?", "the mayor of {s}"),
    Relation("largest employer", "place", "organisation", "The largest employer of {s} is {o}.",
             "What is the largest employer of {s}?", "the largest employer of {s}"),
    Relation("twin town", "place", "place", "The twin town of {s} is {o}.",
             "What is the twin town of {s}?", "the twin town of {s}"),
)


@dataclass(frozen=True)
class Fact:
    subject: str
    subject_kind: str
    relation: str
    object: str
    object_kind: str

    @property
    def rel(self) -> Relation:
        return relation_by_name(self.relation)

    def sentence(self) -> str:
        """Low concept expression: the templated statement of the fact."""
        return self.rel.sentence.format(s=self.subject, o=self.object)

    def question(self) -> str:
        return self.rel.question.format(s=self.subject)

    def to_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "subject_kind": self.subject_kind, "relation": self.relation,
                "object": self.object, "object_kind": self.object_kind}

    @classmethod
    def from_dict(cls, d) -> "Fact":
        return cls(d["subject"], d["subject_kind"], d["relation"], d["object"], d["object_kind"])


def relation_by_name(name: str) -> Relation:
    for rel in RELATIONS:
        if rel.name == name:
            return rel
    raise KeyError(f"unknown relation {name!r}")


def chain_question(facts: Iterable[Fact]) -> str:
    """Composed question over a chain e1 -r1-> e2 -r2-> e3 -r3-> e4, asking for e4."""
    facts = list(facts)
    phrase = facts[0].subject
    for fact in facts:
        phrase = fact.rel.phrase.format(s=phrase)
    wh = "Who" if facts[-1].object_kind == "person" else "What"
    return f"{wh} is {phrase}?"


class EntityGenerator:
    """Unique fictional names of people, places and organisations from one seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.used: set[str] = set()

    def _word(self, syllables: int) -> str:
        word = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables))
        return (word + self.rng.choice(CODAS)).capitalize()

    def _unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            # Reject names that contain (or are contained in) an earlier one, so that an answer
            # string never occurs by accident inside another entity's name.
            if name not in self.used and not any(name in u or u in name for u in self.used):
                self.used.add(name)
                return name
        raise RuntimeError("entity name space exhausted")

    def person(self) -> str:
        return self._unique(lambda: f"{self._word(self.rng.randint(2, 3))} {self._word(self.rng.randint(1, 2))}")

    def place(self) -> str:
        return self._unique(lambda: self._word(self.rng.randint(1, 2)) + self.rng.choice(PLACE_SUFFIXES))

    def organisation(self) -> str:
        return self._unique(lambda: f"{self._word(2)} {self.rng.choice(ORG_SUFFIXES)}")

    def entity(self, kind: str) -> str:
        return {"person": self.person, "place": self.place, "organisation": self.organisation}[kind]()

    def fact(self, subject_kind: str | None = None, subject: str | None = None) -> Fact:
        candidates = [r for r in RELATIONS if subject_kind is None or r.subject_kind == subject_kind]
        rel = self.rng.choice(candidates)
        subj = subject or self.entity(rel.subject_kind)
        return Fact(subj, rel.subject_kind, rel.name, self.entity(rel.object_kind), rel.object_kind)

    def chain(self, hops: int) -> list[Fact]:
        """A chain of ``hops`` facts, each one's object the next one's subject."""
        facts = [self.fact()]
        while len(facts) < hops:
            prev = facts[-1]
            facts.append(self.fact(subject_kind=prev.object_kind, subject=prev.object))
        return facts
