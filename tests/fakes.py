"""Test doubles: a deterministic stand-in LLM (no model, instant) for the synth stage's tests.

Not part of the library: no shipped config names it (generation.backend is vllm | hf).
"""

from __future__ import annotations

import json
import random
import re

from synthctx.provenance import derived_seed
from synthctx.synth.backends import Backend, as_messages, per_request_params

FILL = ["It is known for its quiet streets and old stone houses.", "Many visitors come in the summer.",
        "Its history goes back several centuries.", "Local records describe a long tradition of trade.",
        "The surrounding hills are covered with pine forest.", "People there value music and storytelling."]


class FakeBackend(Backend):
    """Writes prose that states what the prompt asks for, except every ``fail_every``-th request
    and every request for an item of ``fail_items`` (pool ids), which always fail validation."""

    name = "fake"

    def __init__(self, fail_every: int = 0, fail_items=()):
        self.fail_every = fail_every
        self.fail_items = set(fail_items)
        self.calls = 0

    def generate(self, prompts, params, request_ids=None):
        ids = list(request_ids) if request_ids is not None else [str(i) for i in range(len(prompts))]
        out = []
        for prompt, rid, p in zip(prompts, ids, per_request_params(params, len(prompts))):
            seed = derived_seed(p.seed, rid)
            self.calls += 1
            rng = random.Random(seed)
            content = as_messages(prompt)[-1]["content"]
            fail = (self.fail_every and self.calls % self.fail_every == 0) or rid.split("#")[0] in self.fail_items
            filler = " ".join(rng.sample(FILL, 4))
            if m := re.search(r'Keep the name "(.+?)" and the number (\d+)', content):
                sentence = "A spokesperson noted something." if fail else \
                    f"According to {m.group(1)}, the figure reached {m.group(2)} in the end."
                out.append(json.dumps({"sentence": sentence}))
            elif m := re.search(r"news report .*? about (.+?), a fictional event", content):
                out.append(json.dumps({"headline": f"News on {m.group(1)}", "body": f"Reports on {m.group(1)}. {filler}"}))
            elif m := re.search(r"about (.+?), a fictional .*?own words that (.+?) is (the .+?)\. Use the names", content):
                subject, obj = m.group(1), m.group(2)
                fact = "Nothing more is known." if fail else f"Records show that {obj} is {m.group(3)}."
                out.append(f"{subject} is a fictional figure. {filler} {fact} It remains a topic of study.")
            elif m := re.search(r"about (.+?), a fictional", content):
                out.append(f"{m.group(1)} is a fictional place or figure. {filler}")
            else:
                out.append("Hello.")
        self.last_output_tokens = sum(len(o.split()) for o in out)
        return out

    def info(self):
        return {"backend": self.name, "backend_version": "0", "generator_model_dir": "none", "engine": {}}
