"""Every backend runs the same model: HF and vLLM see the same RoPE base and window (issue 14).

Table 1 is scored with vLLM while training, heads, knockout and patching load the model with HF,
so each model setting the config can change (``synthctx.models.loading.model_settings``) must
change both alike. The fast tests check the shared config overrides; the slow one decodes the
embedded model greedily with both backends, per setting, and compares the tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from synthctx.data.examples import make_example
from synthctx.models.loading import config_overrides, model_settings, vllm_engine_kwargs

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("SYNTHCTX_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))

# SmolLM2-135M's native RoPE base is 1e5 and its window 8192. The raised case uses a base far
# from it (1e8, the direction the study raises it) and a budget beyond the window.
NATIVE = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 640}
RAISED = {"dtype": "float32", "attn_implementation": "eager", "rope_theta": 1e8, "context_tokens": 16384}
# The settings each case exercises; dtype is fixed to fp32 (other dtypes round differently).
COVERED = {"attn_implementation": {"sdpa", "eager"}, "rope_theta": {None, 1e8}, "context_tokens": {640, 16384}}
MAX_NEW_TOKENS = 8

DOCS = [
    ("Harbor Lights", "The Harbor Lights festival is held every August in the fishing town of Kessling. Boats are "
     "decorated with lanterns and sail past the old lighthouse at dusk, while bands play on the pier until midnight."),
    ("Kessling Lighthouse", "Built in 1874 from grey granite, the Kessling lighthouse stands forty metres tall. Its "
     "lamp was converted to electricity in 1931 and automated in 1988, when the last keeper, Anna Brandt, retired."),
    ("Moor Railway", "The Moor Railway once linked Kessling with the market town of Aldfield. Steam trains ran twice "
     "a day until the line closed in 1962; part of the track bed is now a cycle path across the heath."),
    ("Aldfield Market", "Aldfield's Thursday market dates back to a charter of 1389. Farmers sell cheese, wool and "
     "honey in the square beneath the clock tower, which was rebuilt after a fire in 1720."),
    ("Heath Birds", "The open heath between the two towns is home to skylarks, stonechats and the rare Dartford "
     "warbler. Rangers close some paths in spring so that ground-nesting birds are not disturbed."),
]
QUESTIONS = [
    ("Who was the last keeper of the Kessling lighthouse?", "Anna Brandt", "Kessling Lighthouse"),
    ("In which year did the Moor Railway close?", "1962", "Moor Railway"),
    ("On which day is the Aldfield market held?", "Thursday", "Aldfield Market"),
]


def parity_examples():
    """Three MDQA-style eval examples of ~365 prompt tokens (five documents each)."""
    out = []
    for i, (question, answer, gold_title) in enumerate(QUESTIONS):
        docs = [{"doc_id": f"d{j}", "title": title, "text": text} for j, (title, text) in enumerate(DOCS)]
        gold = next(d for d in docs if d["title"] == gold_title)
        start = gold["text"].index(answer)
        out.append(make_example(
            example_id=f"p{i}", task="mdqa", condition="real", split="eval", documents=docs, question=question,
            answers=[answer], target=answer, gold_doc_ids=[gold["doc_id"]],
            needles=[{"doc_id": gold["doc_id"], "start": start, "end": start + len(answer), "kind": "answer"}],
        ))
    return out


def smollm_config():
    from transformers import LlamaConfig

    return LlamaConfig(max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 1e5})


def test_config_overrides_carry_the_whole_rope_dict_and_only_grow_the_window():
    config = smollm_config()
    # The base goes where transformers 5.x and vLLM read it, with the rest of the dict kept.
    assert config_overrides(config, 4e6, 640) == {"rope_parameters": {"rope_type": "default", "rope_theta": 4e6}}
    assert config.rope_parameters["rope_theta"] == 1e5  # the caller's config is left alone
    assert config_overrides(config, None, 640) == {}
    assert config_overrides(config, None, 8192) == {}  # never shrinks (640 < 8192 was once written as the window)
    assert config_overrides(config, None, 16384) == {"max_position_embeddings": 16384}
    assert config_overrides(config, None, 8000, positions=8200) == {"max_position_embeddings": 8200}
    llama3 = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    from transformers import LlamaConfig

    scaled = LlamaConfig(max_position_embeddings=8192, rope_parameters=dict(llama3))
    assert config_overrides(scaled, 4e6, 32768) == {"rope_parameters": {**llama3, "rope_theta": 4e6},
                                                     "max_position_embeddings": 32768}


def test_config_overrides_refuse_what_would_change_the_model_silently():
    from transformers import LlamaConfig

    dynamic = LlamaConfig(max_position_embeddings=2048, rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4,
                                                                          "factor": 2.0})
    with pytest.raises(ValueError, match="m: rope_type 'dynamic' rescales"):
        config_overrides(dynamic, None, 4096, model_dir="m")
    nested = LlamaConfig()
    nested.rope_parameters = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    with pytest.raises(ValueError, match="one RoPE per layer type"):
        config_overrides(nested, 4e6, 640, model_dir="m")


def test_hf_model_and_vllm_kwargs_get_the_same_rope(smollm_dir):
    """load_model's rotary frequencies follow the override; vLLM gets the same fields as hf_overrides."""
    import torch

    from synthctx.models.loading import load_model

    model = load_model(str(smollm_dir), **RAISED)
    head_dim = model.config.head_dim
    expected = 1.0 / (1e8 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    torch.testing.assert_close(model.model.rotary_emb.inv_freq.cpu(), expected)
    assert model.config.max_position_embeddings == 16384
    kwargs = vllm_engine_kwargs(str(smollm_dir), RAISED, max_model_len=400, vllm_settings={"enforce_eager": True})
    assert kwargs["hf_overrides"] == {"rope_parameters": model.config.rope_parameters, "max_position_embeddings": 16384}
    assert kwargs["dtype"] == "float32" and kwargs["max_model_len"] == 400 and kwargs["enforce_eager"] is True
    # An engine beyond the window grows it too (vLLM refuses max_model_len > max_position_embeddings).
    assert vllm_engine_kwargs(str(smollm_dir), NATIVE, max_model_len=9000)["hf_overrides"] == {
        "max_position_embeddings": 9000}
    assert "hf_overrides" not in vllm_engine_kwargs(str(smollm_dir), NATIVE, max_model_len=1000)


def test_every_model_setting_has_a_parity_case():
    """A new key of model_settings needs a case in test_hf_and_vllm_greedy_tokens_agree_per_setting."""
    assert set(model_settings({})) == {"dtype", *COVERED}
    for key, values in COVERED.items():
        assert {NATIVE[key], RAISED[key]} == values


def make_lora_adapter(model_dir: Path, out: Path, seed: int = 0) -> Path:
    """A rank-8 LoRA on q/k/v/o with seeded non-zero B (a fresh adapter has B = 0: no effect; at
    std 0.02 the answers here did not change yet, at 0.05 they do)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from synthctx.models.loading import load_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(str(model_dir)), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(out)
    return out


VLLM_SCRIPT = """
import gc, json, sys
from synthctx.evaluate.run import generate_vllm
from synthctx.models.loading import load_tokenizer

job = json.loads(open(sys.argv[1]).read())
tokenizer = load_tokenizer(job["model_dir"])
result = {}
for case, spec in job["cases"].items():  # one engine per case, serving the base model and the adapter
    gens = generate_vllm(job["prompts"], tokenizer, job["model_dir"], spec["settings"], spec["adapters"],
                         job["max_new_tokens"], job["vllm"], seed=0)
    result[case] = {condition: [list(g.token_ids) for g in out] for condition, out in gens.items()}
    gc.collect()  # the engine of the previous case goes before the next one starts
open(sys.argv[2], "w").write(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="vLLM environment (.venv-vllm) not installed")
def test_hf_and_vllm_greedy_tokens_agree_per_setting(smollm_dir, tmp_path):
    """Greedy tokens of HF (merged adapter) and vLLM (LoRARequest) agree token for token, for the
    model as prepared and with a raised RoPE base and a grown window; and each of the override
    and the adapter changes the tokens, so a backend that dropped either would fail here."""
    import torch

    from synthctx.evaluate.generate import prompt_token_ids
    from synthctx.evaluate.run import NONFT, generate_hf
    from synthctx.models.loading import load_tokenizer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    adapter = make_lora_adapter(smollm_dir, tmp_path / "adapter")
    tokenizer = load_tokenizer(str(smollm_dir))
    examples = parity_examples()
    prompts = prompt_token_ids(examples, tokenizer)
    # The model as prepared, and with a raised RoPE base, a grown window and a LoRA adapter
    # (one vLLM engine each; the adapter is served as a LoRARequest, merged for HF).
    cases = {"native": (NATIVE, {}), "raised": (RAISED, {"lora": str(adapter)})}
    job = {"model_dir": str(smollm_dir), "prompts": prompts, "max_new_tokens": MAX_NEW_TOKENS,
           # An explicit small KV cache (46 KB a token): three prompts of ~370 tokens fit many times over.
           "vllm": {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20},
           "cases": {name: {"settings": s, "adapters": a} for name, (s, a) in cases.items()}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # vLLM decodes in its own environment while HF decodes here.
    with open(tmp_path / "vllm.log", "w") as log:
        proc = subprocess.Popen([str(VLLM_PYTHON), "-c", VLLM_SCRIPT, str(tmp_path / "job.json"),
                                 str(tmp_path / "out.json")], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            hf = {}
            for name, (settings, adapters) in cases.items():
                gens = generate_hf(examples, prompts, tokenizer, str(smollm_dir), settings, adapters, MAX_NEW_TOKENS,
                                   batch_size=len(prompts))
                hf[name] = {condition: [list(g.token_ids) for g in out] for condition, out in gens.items()}
            returncode = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert returncode == 0, (tmp_path / "vllm.log").read_text()[-4000:]
    vllm = json.loads((tmp_path / "out.json").read_text())

    for name, (_, adapters) in cases.items():
        for condition in (NONFT, *adapters):
            for i, (h, v) in enumerate(zip(hf[name][condition], vllm[name][condition], strict=True)):
                assert h == v, (f"{name}/{condition} prompt {i}: HF {tokenizer.decode(h)!r} "
                                f"vs vLLM {tokenizer.decode(v)!r}")
    # The checks can fail: the override and the adapter each change some prompt's answer.
    for backend in (hf, vllm):
        assert backend["raised"][NONFT] != backend["native"][NONFT]
        assert backend["raised"]["lora"] != backend["raised"][NONFT]
