"""Knockout of one model's top-K retrieval heads vs random heads on the real eval examples
(the causal part of the eval split, after the examples that ranked the heads).

Inputs:  resources/models/{model}/config.json, results/{study}/data/{model}/{task}/eval.parquet,
         results/{study}/heads/{model}/{task}/{condition}.parquet,
         results/{study}/adapters/{model}/{task}/{condition}/adapter_model.safetensors (none for nonft).
Output:  results/{study}/causal/{model}/{task}/{condition}/knockout.parquet (intervention_predictions).
Feeds:   Figure 4 (rule knockout_figure; target figure4).
"""

from pathlib import Path

from synthctx.causal.experiments import run_knockout
from synthctx.causal.settings import KnockoutSettings
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
run_knockout(
    model_dir=str(Path(sm.input.model).parent),
    settings=dict(sm.params.settings),
    adapter_dir=str(Path(sm.input.adapter).parent) if sm.input.adapter else None,
    eval_path=sm.input.eval,
    head_scores_path=sm.input.heads,
    out_path=sm.output[0],
    model_name=sm.wildcards.model,
    task=sm.wildcards.task,
    condition=sm.wildcards.condition,
    knockout=KnockoutSettings.from_params(sm.params.knockout),
    log_path=sm.log[0],
    threads=sm.threads,
)
