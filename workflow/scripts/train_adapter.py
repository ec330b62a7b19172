"""Fine-tune one (model, task, condition): LoRA on q/k/v/o (or full fine-tuning), resumable.

Input:  results/{study}/data/{model}/{task}/train/{condition}.parquet (examples), the prepared model.
Output: results/{study}/adapters/{model}/{task}/{condition}/adapter_model.safetensors, adapter_config.json,
        train_curve.parquet (train_curve; written last). Checkpoints: params.checkpoint_dir.
Feeds:  evaluation (Table 1), retrieval heads, knockout and patching.
"""

from pathlib import Path

from synthctx.logging_utils import setup_logging
from synthctx.train.lora import train_from_files

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
settings = sm.params.settings
summary = train_from_files(
    train_path=sm.input.data,
    model_dir=str(Path(sm.input.model).parent),
    model_spec=settings["model_spec"],
    train_cfg=settings["train"],
    seed=settings["seed"],
    out_dir=str(Path(sm.output.adapter).parent),
    checkpoint_dir=sm.params.checkpoint_dir,
    run_info={"model": sm.wildcards.model, "task": sm.wildcards.task, "condition": sm.wildcards.condition},
    log_path=sm.log[0],
)
log.info("summary: %s", summary)
