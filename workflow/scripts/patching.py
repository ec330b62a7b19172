"""Cross-model activation patching: Real (Full) model's heads into one synthetic-data model, on
the causal part of the eval split (after the examples that ranked the heads).

Inputs:  resources/models/{model}/config.json, results/{study}/data/{model}/{task}/eval.parquet,
         adapters results/{study}/adapters/{model}/{task}/{real_full,synthetic}/adapter_model.safetensors,
         head scores results/{study}/heads/{model}/{task}/{real_full,synthetic}.parquet.
Output:  results/{study}/causal/{model}/{task}/{synthetic}/patching.parquet (intervention_predictions).
Feeds:   Table 3 (rule table3).
"""

from pathlib import Path

from synthctx.causal.experiments import run_patching
from synthctx.causal.settings import PatchingSettings
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
run_patching(
    model_dir=str(Path(sm.input.model).parent),
    settings=dict(sm.params.settings),
    donor_adapter=str(Path(sm.input.donor_adapter).parent),
    recipient_adapter=str(Path(sm.input.recipient_adapter).parent),
    eval_path=sm.input.eval,
    donor_scores_path=sm.input.donor_heads,
    recipient_scores_path=sm.input.recipient_heads,
    out_path=sm.output[0],
    model_name=sm.wildcards.model,
    task=sm.wildcards.task,
    recipient=sm.wildcards.synthetic,
    patching=PatchingSettings.from_params(sm.params.patching),
    log_path=sm.log[0],
    threads=sm.threads,
)
