"""Greedy decoding of task prompts with two interchangeable backends: HF generate and vLLM.

Both take token ids built by ``synthctx.data.prompts`` (so prompts are byte-identical across
backends, training and head detection), stop at the chat template's end-of-turn token and
return :class:`Generation` records (stripped text, generated-token count without the stop
token). ``greedy_decode_hf`` is reusable by any stage that needs plain greedy answers.

The vLLM backend must import under the vLLM environment's older transformers (5.16-5.19),
so it only uses ``vllm`` and the tokenizer here, nothing of this package's training code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from synthctx.models.loading import END_OF_TURN_TOKENS, pad_token_id, stop_token_ids  # noqa: F401 (re-exported)

log = logging.getLogger("synthctx.evaluate")

# End-of-turn markers of common chat templates (ChatML, Llama-3, Phi, Llama-2/Mistral, Gemma).


@dataclass
class Generation:
    text: str
    generated_tokens: int
    # The generated ids before the stop token (backend parity is checked on these).
    token_ids: tuple[int, ...] = ()


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn for ``tokenizer``'s chat template (EOS included)."""
    return sorted(stop_token_ids(tokenizer))


def prompt_token_ids(examples: Sequence[Mapping[str, Any]], tokenizer, documents: bool = True) -> list[list[int]]:
    """The chat-templated prompt ids of each example (generation prompt included, no target);
    ``documents=False``: the closed-book prompts (the question without the documents)."""
    from synthctx.data.prompts import encode_prompt, render_prompt

    return [encode_prompt(render_prompt(ex, tokenizer, documents), tokenizer)[0] for ex in examples]


def _finish(token_ids: Sequence[int], stop_ids: set[int], tokenizer) -> Generation:
    ids = list(token_ids)
    for i, t in enumerate(ids):
        if t in stop_ids:
            ids = ids[:i]
            break
    return Generation(tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids), tuple(ids))


def greedy_decode_hf(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 8,
                     stop_ids: Sequence[int] | None = None, progress=None) -> list[Generation]:
    """Greedy answers of ``model`` for token-id prompts: batched, left-padded, stopped at end-of-turn.

    Prompts are batched by length (less padding) and returned in input order.
    """
    import torch

    from synthctx.models.decoding import left_padded, length_sorted_groups  # imports torch

    stop = list(stop_ids) if stop_ids is not None else end_of_turn_ids(tokenizer)
    pad_id = pad_token_id(tokenizer, stop)
    device = next(model.parameters()).device
    results: list[Generation | None] = [None] * len(prompts)
    for chunk in length_sorted_groups(prompts, batch_size):
        ids, mask = left_padded([prompts[i] for i in chunk], pad_id)
        width = ids.shape[1]
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, eos_token_id=stop, pad_token_id=pad_id,
                temperature=None, top_p=None, top_k=None,
            )
        for row, i in enumerate(chunk):
            results[i] = _finish(out[row, width:].tolist(), set(stop), tokenizer)
        if progress is not None:
            progress.update(len(chunk))
    return results  # type: ignore[return-value]


def greedy_decode_vllm(llm, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, lora_request=None,
                       stop_ids: Sequence[int] | None = None) -> list[Generation]:
    """Greedy answers from a vLLM engine (optionally through one LoRA adapter)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    stop = list(stop_ids) if stop_ids is not None else end_of_turn_ids(tokenizer)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop, skip_special_tokens=True)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                           lora_request=lora_request, use_tqdm=False)
    return [_finish(o.outputs[0].token_ids, set(stop), tokenizer) for o in outputs]
