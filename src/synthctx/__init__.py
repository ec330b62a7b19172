"""synthctx: synthetic long-context fine-tuning studied through retrieval heads.

Stages (sub-packages): data (real tasks to the normalized example schema, prompts),
models (the embedded model, loading), synth (synthetic variants), train (LoRA), evaluate
(metrics, generation, Table 1), heads (retrieval-score detection), analysis (similarity,
correlation, figures), causal (knockout, activation patching).
"""

__version__ = "0.1.0"
