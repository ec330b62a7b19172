"""A scorecard probe's training set: at most scorecard.train_examples of a condition's examples.

Input:  results/{study}/data/{model}/{task}/train/{condition}.parquet (examples).
Output: results/{study}/scorecard/{model}/{task}/{condition}/train.parquet (examples; a seeded choice,
        in the set's order, with the chosen example ids in its metadata).
Feeds:  rule scorecard_train (the probe's LoRA), then the scorecard of the task.
"""

from synthctx.analysis.scorecard import write_capped_set
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
write_capped_set(source=sm.input.data, output=sm.output[0], cap=sm.params.cap, seed=sm.params.seed,
                 model=sm.wildcards.model, task=sm.wildcards.task, condition=sm.wildcards.condition)
