"""What a knockout or patching job depends on besides its files, spelled once.

The rules build :class:`KnockoutSettings` / :class:`PatchingSettings` from the config with
``from_config`` and pass ``as_params()`` as one params entry (a dict: any change re-runs the job);
the scripts rebuild it with ``from_params``; ``synthctx.causal.experiments`` takes the object.
Light on imports: the rules build it while Snakemake parses the workflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from synthctx.causal.eval_split import task_examples
from synthctx.settings import section_fields

# Head kind that ranks the heads of both experiments (SummHay head tables also hold insight heads).
HEAD_KIND = "retrieval"


@dataclass(frozen=True)
class CausalRunSettings:
    top_k: int  # size of the top-K head set(s)
    ranking_examples: int  # the first N eval examples, which ranked the heads (heads.examples)
    examples: int  # the causal part: the N after them (causal.examples)
    batch_size: int  # examples decoded together under each intervention
    max_new_tokens: int  # greedy decoding budget (evaluate.max_new_tokens of the task)
    head_kind: str
    positive_heads_only: bool  # top-K sets hold only heads with a positive score
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        return cls(**section_fields(cls, params, f"params of {cls.__name__}"))

    def as_params(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def _common(config: Mapping[str, Any], task: str) -> dict[str, Any]:
        causal = config["causal"]
        return {
            "ranking_examples": task_examples(config["heads"], task),
            "examples": task_examples(causal, task),
            "batch_size": causal["batch_size"],
            "max_new_tokens": config["evaluate"]["max_new_tokens"][task],
            "head_kind": HEAD_KIND,
            "positive_heads_only": causal["positive_heads_only"],
            "seed": config["study"]["seed"],
        }


@dataclass(frozen=True)
class KnockoutSettings(CausalRunSettings):
    random_exclude_top: int  # random heads come from outside the top N
    random_draws: int  # seeded random head sets, averaged
    operator: str  # uniform | zero | mean

    @classmethod
    def from_config(cls, config: Mapping[str, Any], task: str) -> "KnockoutSettings":
        causal = config["causal"]
        return cls(top_k=causal["knockout_top_k"], random_exclude_top=causal["random_exclude_top"],
                   random_draws=causal["random_draws"], operator=causal["knockout_operator"],
                   **cls._common(config, task))


@dataclass(frozen=True)
class PatchingSettings(CausalRunSettings):
    @classmethod
    def from_config(cls, config: Mapping[str, Any], task: str) -> "PatchingSettings":
        return cls(top_k=config["causal"]["patch_top_k"], **cls._common(config, task))
