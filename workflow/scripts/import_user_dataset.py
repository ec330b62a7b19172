"""Check and import a user's own training set of one task (config datasets:, docs/user-datasets.md).

Input:  the user's file (config datasets.{condition}.files.{task}: JSON Lines or Parquet), read in
        place; resources/models/{model}/ (the tokenizer: each example must fit context_tokens).
Output: results/{study}/data/{model}/{task}/train/{condition}.parquet (examples, split train, condition
        = the dataset's name; metadata: source path and sha256).
Feeds:  training of the user condition, hence Table 1, heads, Figure 3, heatmaps, causal tests.
"""

from pathlib import Path

from synthctx.data.user import import_user_dataset
from synthctx.logging_utils import setup_logging
from synthctx.models.loading import load_tokenizer

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
settings = sm.params.settings
import_user_dataset(sm.input.source, sm.output.examples, task=settings["task"], condition=settings["condition"],
                    model=sm.wildcards.model,
                    tokenizer=load_tokenizer(str(Path(sm.input.model).parent)),
                    context_tokens=int(settings["context_tokens"]), task_config=settings["task_config"],
                    expected_sha256=settings["sha256"])
