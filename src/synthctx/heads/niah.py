"""Needle-in-a-haystack retrieval heads (Wu et al. 2024's own setting), without downloads.

The haystack is essay-like filler generated procedurally from seeded templates; a needle
sentence is inserted at each depth (fraction of the haystack, at a sentence boundary) of
haystacks of each length (tokens of the haystack, with this model's tokenizer). The question
asks for the needle's fact. The scored span is the *answer part* of the needle (the value the
question asks for, e.g. "smoked paprika" of "The secret ingredient in Grandma Rosa's soup is
smoked paprika."), as in Wu et al., whose retrieval score counts the answer tokens a head
copies: the copy-paste score of :mod:`synthctx.heads.retrieval` over that span, so a head that
copies every answer token scores 1 (scored over the whole sentence, the same head would score
|answer| / |sentence| and Wu's 0.1 threshold would mean something else).
Success (the success-only rule): the fraction of the answer's words found in the prediction
(ROUGE-1 recall of the answer, Wu et al. use > 0.5 on the needle) >= ``success_threshold``.

Two disjoint needle sets give two independent head rankings; their top-K overlap says how
stable the detected heads are. Output rows: task ``niah``, condition ``set1``/``set2``,
head_kind ``niah``.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

log = logging.getLogger("synthctx.heads")

# (needle sentence, question, answer); the answer occurs verbatim in its sentence (the scored
# span). Facts are invented so the model cannot answer from memory.
NEEDLES: tuple[tuple[str, str, str], ...] = (
    ("The secret ingredient in Grandma Rosa's soup is smoked paprika.",
     "What is the secret ingredient in Grandma Rosa's soup?", "smoked paprika"),
    ("The best thing to do in Lisbon is to ride the yellow tram at sunrise.",
     "What is the best thing to do in Lisbon?", "ride the yellow tram at sunrise"),
    ("The password to the old lighthouse is silver falcon.",
     "What is the password to the old lighthouse?", "silver falcon"),
    ("Professor Okafor keeps her spare keys inside a blue teapot.",
     "Where does Professor Okafor keep her spare keys?", "inside a blue teapot"),
    ("The village of Marrowby elects its mayor by a pie baking contest.",
     "How does the village of Marrowby elect its mayor?", "by a pie baking contest"),
    ("The lost violin was hidden under the chapel organ.",
     "Where was the lost violin hidden?", "under the chapel organ"),
    ("Captain Ilsa named her ship the Quiet Comet.",
     "What did Captain Ilsa name her ship?", "the Quiet Comet"),
    ("The museum's rarest stamp was printed in Tonga in 1897.",
     "Where was the museum's rarest stamp printed?", "in Tonga in 1897"),
    ("The robot gardener waters the orchids every Thursday.",
     "When does the robot gardener water the orchids?", "every Thursday"),
    ("Uncle Bram's favourite board game is Kingdom of Tides.",
     "What is Uncle Bram's favourite board game?", "Kingdom of Tides"),
    ("The treasure map was drawn on the back of a train ticket.",
     "On what was the treasure map drawn?", "on the back of a train ticket"),
    ("The choir rehearses in the abandoned salt mine.",
     "Where does the choir rehearse?", "in the abandoned salt mine"),
    ("The bakery on Fenwick Lane sells bread shaped like owls.",
     "What shape is the bread sold by the bakery on Fenwick Lane?", "shaped like owls"),
    ("Doctor Hale trained her parrot to whistle the national anthem backwards.",
     "What did Doctor Hale train her parrot to do?", "whistle the national anthem backwards"),
    ("The annual kite race of Port Evering starts at the fish market.",
     "Where does the annual kite race of Port Evering start?", "at the fish market"),
    ("Mira's grandfather buried a brass compass beneath the apple tree.",
     "What did Mira's grandfather bury beneath the apple tree?", "a brass compass"),
    ("The moon festival of Tallow Ridge is lit by ten thousand paper lanterns.",
     "How is the moon festival of Tallow Ridge lit?", "by ten thousand paper lanterns"),
    ("The chess club meets in the basement of the fire station.",
     "Where does the chess club meet?", "in the basement of the fire station"),
    ("Inspector Vale solved the case with a single strand of green wool.",
     "With what did Inspector Vale solve the case?", "a single strand of green wool"),
    ("The royal gardener planted exactly forty-two lemon trees.",
     "How many lemon trees did the royal gardener plant?", "forty-two"),
)

_SUBJECTS = ("the committee", "a small town", "the old library", "every student", "the river", "the market",
             "a careful writer", "the northern farms", "the city council", "an early settler", "the museum",
             "our neighbours", "the orchestra", "a patient teacher", "the harbour", "the factory")
_VERBS = ("described", "remembered", "changed", "questioned", "admired", "measured", "ignored", "repaired",
          "celebrated", "studied", "planned", "discussed", "painted", "counted", "followed", "shared")
_OBJECTS = ("the long winter", "a forgotten road", "the price of bread", "the morning light", "an unusual map",
            "the local school", "the summer festival", "a narrow bridge", "the weather", "the new railway",
            "an empty warehouse", "the spring harvest", "a quiet garden", "the county records", "the clock tower")
_CLAUSES = ("after many years", "with some hesitation", "before the rain came", "as the season turned",
            "without much fuss", "during the long evenings", "for reasons nobody recalled", "in a hurry",
            "with great patience", "once the work was done", "while the bells rang", "at the end of the week")
_OPENERS = ("In those days", "Some people say that", "It is often noted that", "By most accounts", "Later on",
            "Everyone agreed that", "As it happened", "For a while", "Meanwhile", "Years later")


def filler_sentence(rng: random.Random) -> str:
    opener = rng.choice(_OPENERS)
    subject = rng.choice(_SUBJECTS)
    body = f"{subject} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_CLAUSES)}."
    return f"{opener} {body}" if opener.endswith("that") else f"{opener}, {body}"


def needle_sets(needles_per_set: int, seed: int) -> tuple[list[int], list[int]]:
    """Two disjoint, seeded sets of needle indices."""
    if 2 * needles_per_set > len(NEEDLES):
        raise ValueError(f"heads.niah.needles_per_set={needles_per_set}: at most {len(NEEDLES) // 2} (two disjoint sets)")
    order = list(range(len(NEEDLES)))
    random.Random(seed).shuffle(order)
    return order[:needles_per_set], order[needles_per_set: 2 * needles_per_set]


@dataclass
class NiahExample:
    example_id: str
    prompt_ids: list[int]
    needle_span: tuple[int, int]  # token span of the whole needle sentence in the prompt
    answer_span: tuple[int, int]  # token span of its answer part: the span the retrieval score uses
    answer: str
    length: int
    depth: float


def build_niah_example(tokenizer, needle_index: int, length: int, depth: float, seed: int) -> NiahExample:
    """Haystack of ~``length`` tokens with the needle at ``depth``, rendered with the chat template."""
    needle, question, answer = NEEDLES[needle_index]
    rng = random.Random(seed)
    sentences: list[str] = []
    while len(tokenizer(" ".join(sentences), add_special_tokens=False)["input_ids"]) < length:
        sentences.extend(filler_sentence(rng) for _ in range(8))
    # trim to the token budget at a sentence boundary
    while len(sentences) > 1 and len(tokenizer(" ".join(sentences), add_special_tokens=False)["input_ids"]) > length:
        sentences.pop()
    cut = round(depth * len(sentences))
    before, after = " ".join(sentences[:cut]), " ".join(sentences[cut:])
    content_head = "Read the text below and answer the question after it.\n\n"
    haystack = " ".join(part for part in (before, needle, after) if part)
    content = f"{content_head}{haystack}\n\nQuestion: {question} Answer in one sentence."
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    start = text.find(content) + len(content_head) + (len(before) + 1 if before else 0)
    end = start + len(needle)
    if text[start:end] != needle:
        raise ValueError(f"needle {needle_index}: chat template does not keep the user message verbatim")
    at = needle.find(answer)
    if at < 0:
        raise ValueError(f"needle {needle_index}: answer {answer!r} does not occur in {needle!r}")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]

    def token_span(first: int, last: int) -> tuple[int, int]:
        toks = [i for i, (a, b) in enumerate(offsets) if a < last and b > first and b > a]
        return toks[0], toks[-1] + 1

    return NiahExample(
        example_id=f"niah-{needle_index}-{length}-{depth}", prompt_ids=list(enc["input_ids"]),
        needle_span=token_span(start, end), answer_span=token_span(start + at, start + at + len(answer)),
        answer=answer, length=length, depth=depth,
    )


def answer_recall(prediction: str, answer: str) -> float:
    """Fraction of the answer's (lower-cased) words present in the prediction."""
    words = re.findall(r"\w+", answer.lower())
    found = set(re.findall(r"\w+", prediction.lower()))
    return sum(w in found for w in words) / len(words) if words else 0.0


def niah_examples(tokenizer, needle_indices: Sequence[int], lengths: Sequence[int], depths: Sequence[float], seed: int):
    from synthctx.provenance import derived_seed

    return [
        build_niah_example(tokenizer, n, int(length), float(depth), derived_seed(seed, "niah", n, length, depth))
        for n in needle_indices
        for length in lengths
        for depth in depths
    ]


def detect_niah_heads(model, tokenizer, examples: Sequence[NiahExample], *, max_new_tokens: int, success_only: bool,
                      success_threshold: float, token_match: str = "normalized", progress=None, batch_size: int = 1):
    """Retrieval scores over NIAH examples (a :class:`~synthctx.heads.retrieval.DetectionResult`)."""
    from synthctx.heads.retrieval import PreparedExample, detect_heads

    prepared = [
        PreparedExample(e.example_id, e.prompt_ids, {"niah": [e.answer_span]}, {"answer": e.answer}) for e in examples
    ]
    return detect_heads(
        model, tokenizer, prepared, max_new_tokens=max_new_tokens, success_only=success_only,
        success_threshold=success_threshold, token_match=token_match,
        scorer=lambda prediction, ex: answer_recall(prediction, ex["answer"]), progress=progress,
        batch_size=batch_size,
    )


def run_niah_heads(*, model_dir: str, outputs: Sequence[str], model_name: str, model_settings: Mapping[str, Any],
                   heads: Mapping[str, Any], seed: int, log_path: str | None = None) -> None:
    """Entry point of rule ``niah_heads``: head scores of the base model on both needle sets."""
    from synthctx.heads.retrieval import head_scores_frame
    from synthctx.logging_utils import progress_stream, setup_logging
    from synthctx.models.loading import load_model, load_tokenizer
    from synthctx.provenance import provenance
    from synthctx.schema import write_table

    logger = setup_logging(log_path)
    niah = heads["niah"]
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, **dict(model_settings))
    sets = needle_sets(int(niah["needles_per_set"]), seed)
    frames = []
    for name, indices in zip(("set1", "set2"), sets):
        examples = niah_examples(tokenizer, indices, niah["lengths"], niah["depths"], seed)
        logger.info("NIAH %s: needles %s, %d examples", name, indices, len(examples))
        result = detect_niah_heads(
            model, tokenizer, examples, max_new_tokens=int(heads["max_new_tokens"]),
            success_only=bool(heads["success_only"]), success_threshold=float(heads["success_threshold"]),
            token_match=str(heads["token_match"]), progress=progress_stream(log_path),
            batch_size=int(heads["batch_size"]),
        )
        meta = provenance(seed=seed, model=model_name, needle_set=name, needles=indices, heads=dict(heads),
                          n_counted=result.n_examples, n_seen=result.n_seen, scored_span="answer",
                          token_match=result.token_match, creditable_share=result.creditable_share,
                          predictions=[{k: r[k] for k in ("example_id", "prediction", "metric")} for r in result.per_example])
        frames.append((head_scores_frame(model_name, "niah", name, result), meta))
    for (frame, meta), path in zip(frames, outputs):
        write_table(frame, path, "head_scores", meta)
