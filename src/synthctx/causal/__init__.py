"""Causal tests of retrieval heads: knockout (Figure 4) and cross-model activation patching (Table 3).

Modules: ``interventions`` (per-head masking hooks), ``patching`` (donor -> recipient head
patching in lockstep), ``decoding`` (KV-cache greedy loop), ``head_sets`` (top-K, random and
patching sets), ``eval_split`` (the head-ranking and the causal part of the eval split),
``stats`` (paired bootstrap), ``experiments`` (the two runs end to end) and ``summary``
(Figure 4, Table 3).
"""
