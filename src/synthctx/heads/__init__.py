"""Retrieval-head detection (STUDY.md section 5).

capture   - greedy_decode(): prefill + KV-cache greedy decoding that records, per generated token,
            every (layer, head)'s argmax key position via a custom AttentionInterface function.
retrieval - Wu et al.'s copy-paste retrieval score, SummHay insight heads, success-only rule.
niah      - needle-in-a-haystack detection on procedurally generated haystacks.
"""
