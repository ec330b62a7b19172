"""LLM backends of the synth stage: JSON checks, HF generate, vLLM (mocked and real)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from synthctx.provenance import derived_seed
from synthctx.synth.backends import (GenerationParams, HFBackend, VLLMBackend, extract_json, field_budgets,
                                     make_backend, string_fields, string_value, validate_json)
from synthctx.synth.pool import INSIGHT_SCHEMA, NEWS_SCHEMA, build_pool_file, generate_pool, validate_output

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def test_json_validation():
    assert extract_json('Sure! ```json\n{"sentence": "a b"}\n```') == {"sentence": "a b"}
    assert validate_json('{"sentence": "Velmora said 12."}', INSIGHT_SCHEMA)[1] is None
    assert validate_json("no json here", INSIGHT_SCHEMA) == (None, "bad_json")
    cut = validate_json('{"headline": "Flood", "body": "Water rose. Then it', NEWS_SCHEMA)[0]  # token limit
    assert cut == {"headline": "Flood", "body": "Water rose. Then it"}
    assert validate_json('{"headline": "x"}', NEWS_SCHEMA) == (None, "json_missing_body")
    assert validate_json('{"headline": "x", "body": "  "}', NEWS_SCHEMA) == (None, "json_empty_body")


def test_validate_output_reasons():
    fact = {"subject": "Velmora Quist", "subject_kind": "person", "relation": "birthplace", "object": "Dranholt",
            "object_kind": "place"}
    item = {"pool_id": "x", "kind": "needle_article", "fields": {"fact": fact}}
    long = " It has a long history of trade and music, and many people from all over the region visit it every summer."
    assert validate_output(item, "Velmora Quist was born in Dranholt." + long)[2] is None
    assert validate_output(item, "Velmora Quist was born somewhere." + long)[2] == "missing_object"
    assert validate_output(item, "Somebody was born in Dranholt." + long)[2] == "missing_subject"
    assert validate_output(item, "Velmora Quist, Dranholt.")[2] == "too_short"
    copied = "The birthplace of Velmora Quist is Dranholt." + long
    assert validate_output(item, copied)[2] == "copies_template"  # a Low needle in a High variant
    assert validate_output(item, "Velmora Quist, Dranholt, exactly as written." + long)[2] == "prompt_echo"
    ins = {"pool_id": "y", "kind": "insight_prose",
           "fields": {"insight": {"insight_id": "t-duration-0", "topic": "the Dranholt strike", "aspect": "duration",
                                  "query": "How long did the Dranholt strike last?", "key": "Brae Tol",
                                  "number": "42"}}}
    assert validate_output(ins, '{"sentence": "Brae Tol counted 42 boats."}')[2] is None
    assert validate_output(ins, '{"sentence": "Brae Tol counted 420 boats."}')[2] == "missing_number"


class _FakeLLM:
    instances: list = []

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        _FakeLLM.instances.append(self)

    def chat(self, messages, sampling, use_tqdm=False):
        self.calls.append((messages, sampling))
        out = types.SimpleNamespace
        return [out(outputs=[out(text=f"reply {s.seed}", token_ids=[1, 2, 3])]) for s in sampling]


class _FakeSampling:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class _FakeStructured:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = _FakeLLM, _FakeSampling
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = _FakeStructured
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    _FakeLLM.instances.clear()
    return _FakeLLM


def test_vllm_backend_mocked(fake_vllm):
    backend = VLLMBackend("some/model", seed=7, gpu_memory_utilization=0.3, max_model_len=512)
    llm = fake_vllm.instances[0]
    assert llm.kwargs["gpu_memory_utilization"] == 0.3 and llm.kwargs["seed"] == 7
    params = GenerationParams(temperature=0.5, top_p=0.9, max_new_tokens=12, seed=7)
    out = backend.generate(["hi", [{"role": "user", "content": "yo"}]], params, request_ids=["a", "b"])
    messages, sampling = llm.calls[0]
    assert messages == [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]]
    # Per-request seeds derived from the config seed and the item id: batch-independent.
    assert [s.seed for s in sampling] == [derived_seed(7, "a"), derived_seed(7, "b")]
    assert out == [f"reply {derived_seed(7, 'a')}", f"reply {derived_seed(7, 'b')}"]
    assert all(s.max_tokens == 12 and s.temperature == 0.5 for s in sampling)
    assert not hasattr(sampling[0], "structured_outputs")
    backend.generate(["x"], params.with_schema(INSIGHT_SCHEMA), request_ids=["c"])
    structured = llm.calls[1][1][0].structured_outputs
    assert structured.kwargs["json"] == INSIGHT_SCHEMA
    assert backend.info()["backend"] == "vllm"


def test_pool_through_mocked_vllm_records_rejects(fake_vllm, tmp_path):
    # "reply N" satisfies nothing: every item is retried once, then kept as a counted reject.
    backend = VLLMBackend("m")
    frame, stats = generate_pool("mdqa", backend, GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=1), 6, tmp_path, "m", attempts=2)
    assert (frame["status"] == "reject:too_short").all() and stats["reject:too_short"] == 6
    assert len(fake_vllm.instances[0].calls) == 2  # one batch per attempt, both kinds together


def test_pool_mixed_kinds_one_batch(fake_vllm, tmp_path):
    backend = VLLMBackend("m")
    generate_pool("summhay", backend, GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=150, seed=1), 20, tmp_path, "m", attempts=1)
    (messages, sampling), = fake_vllm.instances[0].calls
    by_kind = {}
    for msg, s in zip(messages, sampling):
        kind = "insight" if "Rewrite the following statement" in msg[0]["content"] else "news"
        by_kind.setdefault(kind, []).append(s)
    assert {s.max_tokens for s in by_kind["insight"]} == {72} and {s.max_tokens for s in by_kind["news"]} == {150}
    assert {s.structured_outputs.kwargs["json"]["required"][0] for s in by_kind["news"]} == {"headline"}
    assert {s.structured_outputs.kwargs["json"]["required"][0] for s in by_kind["insight"]} == {"sentence"}


def test_pool_resumes_after_interruption(tmp_path):
    from fakes import FakeBackend

    class Interrupted(FakeBackend):
        def generate(self, prompts, params, request_ids=None):
            if self.calls >= 8:
                raise KeyboardInterrupt
            return super().generate(prompts, params, request_ids)

    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=2)
    reference, _ = generate_pool("mdqa", FakeBackend(), params, 20, tmp_path / "ref", "fake", batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        generate_pool("mdqa", Interrupted(), params, 20, tmp_path / "run", "fake", batch_size=4)
    shard = tmp_path / "run" / "pool.jsonl"
    finished = len(shard.read_text().splitlines()) - 1  # first line: the settings fingerprint
    assert 0 < finished < 20
    resumed_backend = FakeBackend()
    frame, stats = generate_pool("mdqa", resumed_backend, params, 20, tmp_path / "run", "fake", batch_size=4)
    assert stats["resumed"] == finished and resumed_backend.calls == 20 - finished
    assert frame.equals(reference)
    # Changed settings invalidate the shard instead of mixing two configurations.
    _, stats = generate_pool("mdqa", FakeBackend(), GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=3), 20, tmp_path / "run", "fake")
    assert stats["resumed"] == 0


def test_build_pool_file_provenance(tmp_path, smollm_dir, monkeypatch):
    from fakes import FakeBackend
    from synthctx.schema import read_metadata, read_table
    from synthctx.synth import backends

    monkeypatch.setattr(backends, "make_backend", lambda name, *a, **k: FakeBackend())

    out = tmp_path / "synth" / "summhay" / "pool.parquet"
    stats = build_pool_file("summhay", str(out), str(smollm_dir), "smollm2-135m", "fake", 5, 20, 0.8, 0.95, 64)
    frame = read_table(out, "document_pool")
    meta = read_metadata(out)
    assert len(frame) == stats["planned"] and set(frame["kind"]) == {"insight_prose", "news_document"}
    assert meta["backend"] == "fake" and meta["seed"] == 5 and meta["generator_model"] == "smollm2-135m"
    assert "versions" in meta and not (out.parent / ".partial").exists()


def test_hf_backend_embedded_model(smollm_dir):
    import torch

    torch.set_num_threads(1)
    backend = make_backend("hf", str(smollm_dir), batch_size=2)
    assert isinstance(backend, HFBackend)
    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=8, seed=11)
    prompts = ["Name a colour.", [{"role": "user", "content": "Say hello."}]]
    first = backend.generate(prompts, params, request_ids=["p1", "p2"])
    again = backend.generate(prompts, params, request_ids=["p1", "p2"])
    assert first == again and len(first) == 2 and all(isinstance(t, str) and t.strip() for t in first)
    assert 0 < backend.last_output_tokens <= 16
    greedy = backend.generate(["Name a colour."], GenerationParams(temperature=0, top_p=0.95, max_new_tokens=6, seed=0))
    assert greedy[0].strip()
    info = backend.info()
    assert info["backend"] == "hf" and info["backend_version"]


def test_json_value_helpers():
    assert string_fields(NEWS_SCHEMA) == ["headline", "body"] and string_fields(INSIGHT_SCHEMA) == ["sentence"]
    assert string_fields({"type": "object", "properties": {"n": {"type": "integer"}}}) == []
    assert string_fields(None) == []
    assert string_value('Fire in town" and more') == "Fire in town"
    assert string_value('a \\"quoted\\" word" rest') == 'a "quoted" word'
    assert string_value("cut off at the limit\\") == "cut off at the limit"
    assert string_value("bad \\q escape") == "bad q escape"
    assert field_budgets(["headline", "body"], 384) == {"headline": 32, "body": 352}
    assert field_budgets(["sentence"], 72) == {"sentence": 72}


def test_hf_backend_builds_json_for_string_schemas(smollm_dir):
    import torch

    torch.set_num_threads(1)
    backend = make_backend("hf", str(smollm_dir), batch_size=2)
    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=64, seed=5, json_schema=NEWS_SCHEMA)
    prompts = ['Write a short news report as JSON with the fields "headline" and "body": a fire in Oakville.',
               'Write a short news report as JSON with the fields "headline" and "body": a council election.']
    first = backend.generate(prompts, params, request_ids=["n1", "n2"])
    assert backend.generate(prompts, params, request_ids=["n1", "n2"]) == first
    for text in first:
        obj, reason = validate_json(text, NEWS_SCHEMA)
        assert reason is None and list(obj) == ["headline", "body"]
        # The body's first 48 tokens cannot close the string: a real paragraph, not a phrase.
        assert len(backend.tokenizer(obj["body"], add_special_tokens=False)["input_ids"]) >= 40
        assert len(obj["headline"]) < len(obj["body"])


VLLM_SCRIPT = r"""
import json, sys
from synthctx.synth.backends import GenerationParams, make_backend
from synthctx.synth.pool import INSIGHT_SCHEMA, validate_json

def main():
    backend = make_backend("vllm", sys.argv[1], seed=3,
                           vllm_settings={"gpu_memory_utilization": 0.3, "max_model_len": 1024, "enforce_eager": True})
    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=24, seed=3)
    prose = backend.generate(["Describe a small town in one sentence.", "Name a fruit."], params, ["a", "b"])
    again = backend.generate(["Name a fruit."], params, ["b"])
    structured = backend.generate(['Answer in JSON with the field "sentence": say hello.'],
                                  GenerationParams(0.8, 0.95, 48, 3, INSIGHT_SCHEMA), ["c"])
    # vLLM logs to stdout too: the result goes to a file.
    with open(sys.argv[2], "w") as fh:
        json.dump({"prose": prose, "again": again, "structured": structured,
                   "parsed": validate_json(structured[0], INSIGHT_SCHEMA)[0], "info": backend.info()}, fh)

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_backend_real(smollm_dir, tmp_path):
    if not VLLM_PYTHON.exists():
        pytest.skip(".venv-vllm not present")
    script = tmp_path / "run_vllm.py"
    script.write_text(VLLM_SCRIPT)
    result_file = tmp_path / "result.json"
    proc = subprocess.run([str(VLLM_PYTHON), str(script), str(smollm_dir), str(result_file)], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert len(result["prose"]) == 2 and all(t.strip() for t in result["prose"])
    # Per-request seed: the same item gives the same text alone or in a batch.
    assert result["again"][0] == result["prose"][1]
    assert result["parsed"] is not None and result["parsed"]["sentence"].strip()
    assert result["info"]["backend"] == "vllm" and result["info"]["backend_version"]


def test_vllm_cpu_environment_only_on_cpu_builds_and_never_overrides(monkeypatch):
    import importlib.metadata
    import os

    from synthctx.models.loading import prepare_vllm_cpu_environment

    keys = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_OMP_THREADS_BIND")
    real_version = importlib.metadata.version

    def version(installed):
        def lookup(name):
            if name == "vllm-cpu" and not installed:
                raise importlib.metadata.PackageNotFoundError(name)
            return "0.32.0" if name == "vllm-cpu" else real_version(name)
        return lookup

    for key in keys:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(importlib.metadata, "version", version(False))
    assert prepare_vllm_cpu_environment() == {}  # a GPU build keeps vLLM's defaults
    assert not any(key in os.environ for key in keys)
    monkeypatch.setattr(importlib.metadata, "version", version(True))
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")  # the user's binding wins
    assert prepare_vllm_cpu_environment() == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
