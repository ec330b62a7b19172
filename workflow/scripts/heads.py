"""Retrieval (and, for SummHay, insight) scores of every attention head of one model.

Inputs:  resources/models/{model}/ (prepared model), results/{study}/data/{model}/{task}/eval.parquet
         (real eval examples), results/{study}/adapters/{model}/{task}/{condition}/ (LoRA adapter; none
         for condition ``nonft``).
Output:  results/{study}/heads/{model}/{task}/{condition}.parquet (kind head_scores);
         results/{study}/heads/{model}/{task}/per_example/{condition}.parquet (kind head_example_scores:
         each decoded example's score of every head).
Feeds:   similarity / Figure 3, Table 2, the heatmaps, the causal tests' head sets; the claims
         page (C3's bootstrap of positive heads, C7's split-half agreement) reads the per-example file.
"""

from synthctx.heads.retrieval import run_task_heads

sm = snakemake  # noqa: F821 - injected by Snakemake
run_task_heads(
    model_dir=sm.params.model_dir,
    eval_path=sm.input.eval,
    output=sm.output.scores,
    examples_output=sm.output.examples,
    model_name=sm.wildcards.model,
    task=sm.wildcards.task,
    condition=sm.wildcards.condition,
    model_settings=sm.params.settings,
    heads=sm.params.heads,
    adapter_dir=sm.params.adapter_dir or None,
    seed=sm.params.seed,
    log_path=sm.log[0],
)
