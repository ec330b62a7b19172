"""A user's own training set joins the study as a condition of kind ``user`` (config ``datasets:``,
docs/user-datasets.md): the import's values and provenance, one named error per bad-record kind
with nothing written, the per-task condition lists, Table 1 labels, and the workflow scheduling
the condition only for the tasks it has a file for (dry-run; one real run, slow)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import FIXTURES, REPO
from synthctx import study
from synthctx.data.examples import make_example, read_examples, write_examples
from synthctx.data.user import import_user_dataset
from synthctx.schema import ArtifactError, read_metadata

FIXTURE = FIXTURES / "user" / "mdqa_lighthouses.jsonl"
GOOD = json.loads(FIXTURE.read_text().splitlines()[0])


def _import(source, output, tokenizer, *, task="mdqa", context_tokens=512, task_config=None, **kw):
    return import_user_dataset(source, output, task=task, condition="lighthouse",
                               model="smollm2-135m", tokenizer=tokenizer, context_tokens=context_tokens,
                               task_config=task_config or {}, **kw)


def test_fixture_imports_with_located_needles_and_the_source_hash(smollm_tokenizer, tmp_path):
    before = (FIXTURE.read_bytes(), FIXTURE.stat().st_mtime_ns)
    out = tmp_path / "train" / "lighthouse.parquet"
    _import(FIXTURE, out, smollm_tokenizer)
    examples = {ex["example_id"]: ex for ex in read_examples(str(out))}
    assert list(examples) == ["lh-1", "lh-2", "lh-3", "lh-4"]
    for ex in examples.values():
        assert (ex["task"], ex["condition"], ex["split"]) == ("mdqa", "lighthouse", "train")
        assert [d["doc_id"] for d in ex["documents"]] == [str(i) for i in range(1, len(ex["documents"]) + 1)]
        assert 0 < ex["meta"]["prompt_tokens"] <= 512
    first = examples["lh-1"]
    # located: the one document holding the answer becomes the gold one; the needle is its occurrence
    assert first["gold_doc_ids"] == ["2"] and first["target"] == "teal"
    text = first["documents"][1]["text"]
    assert [(text[n["start"]:n["end"]], n["kind"]) for n in first["needles"]] == [("teal", "answer")]
    assert first["documents"][1]["title"] == "Orrick Lighthouse"
    assert first["meta"]["source_record"] == "line 1"
    # both accepted answers of lh-3 are located inside its named gold document
    third = examples["lh-3"]
    spans = {third["documents"][1]["text"][n["start"]:n["end"]] for n in third["needles"]}
    assert third["gold_doc_ids"] == ["2"] and spans == {"every nine seconds", "nine seconds"}
    # given needles are kept as given (document 2 -> doc_id "2"), their document is the gold one
    assert examples["lh-4"]["needles"] == [{"doc_id": "2", "start": 39, "end": 49, "kind": "answer"}]
    assert examples["lh-4"]["gold_doc_ids"] == ["2"]
    meta = read_metadata(out)
    assert meta["source_sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert (meta["condition"], meta["kind"], meta["examples"], meta["source"]) == ("lighthouse", "user", 4,
                                                                                  str(FIXTURE))
    # read in place: the source is untouched and the artifact is a file of its own
    assert (FIXTURE.read_bytes(), FIXTURE.stat().st_mtime_ns) == before
    assert not out.is_symlink() and out.stat().st_ino != FIXTURE.stat().st_ino


def test_parquet_in_the_normalized_schema_imports_as_the_condition(smollm_tokenizer, tmp_path):
    docs = [{"doc_id": "1", "title": "", "text": "Rain fell on Tamsk all week."},
            {"doc_id": "2", "title": "Tamsk", "text": "The mayor of Tamsk is Odile Fenn."}]
    source = tmp_path / "mine.parquet"
    write_examples([make_example(example_id="p1", task="mdqa", condition="real_full", split="eval", documents=docs,
                                 question="Who is the mayor of Tamsk?", answers=["Odile Fenn"], target="Odile Fenn",
                                 gold_doc_ids=["2"], needles=[])], str(source))
    out = tmp_path / "out.parquet"
    _import(source, out, smollm_tokenizer)
    (ex,) = read_examples(str(out))
    assert (ex["condition"], ex["split"], ex["gold_doc_ids"]) == ("lighthouse", "train", ["2"])
    assert ex["needles"] == [{"doc_id": "2", "start": 22, "end": 32, "kind": "answer"}]
    assert read_metadata(out)["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def _bad_file(tmp_path, bad: dict) -> Path:
    path = tmp_path / "bad.jsonl"
    bad = {**bad, "id": "bad-1"} if "id" in bad else bad  # not a repeat of the good record's id
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    return path


LONG = " ".join(["The keeper counted the waves."] * 120)
BAD_RECORDS = {
    "missing_field": ({k: v for k, v in GOOD.items() if k != "question"}, "line 2: field 'question': missing"),
    "answer_not_found": ({**GOOD, "answers": ["ochre"], "target": "ochre"},
                         "line 2: field 'answers': no answer of ['ochre'] occurs"),
    "over_budget": ({**GOOD, "documents": GOOD["documents"] + [{"title": "Waves", "text": LONG}]},
                    "line 2: field 'documents': prompt + target is"),
    "unknown_task": ({**GOOD, "task": "hotpotqa"}, "line 2: field 'task': 'hotpotqa' is not this file's task"),
    "bad_needle": ({**GOOD, "needles": [{"document": 1, "start": 0, "end": 4, "kind": "answer"}]},
                   "line 2: example 'bad-1': field 'needles' answer span text 'Varn' is not one of the answers"),
    "unknown_field": ({**GOOD, "answer": "teal"}, "line 2: field 'answer': not a field of the format"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_each_bad_record_names_file_line_and_field_and_writes_nothing(kind, smollm_tokenizer, tmp_path):
    bad, message = BAD_RECORDS[kind]
    source = _bad_file(tmp_path, bad)
    out = tmp_path / "results" / "lighthouse.parquet"
    with pytest.raises(ArtifactError) as error:
        _import(source, out, smollm_tokenizer)
    assert f"{source}: {message}" in str(error.value)
    assert not out.parent.exists()  # nothing written, not even a temporary file


def test_unknown_task_and_changed_file_are_refused(smollm_tokenizer, tmp_path):
    out = tmp_path / "out.parquet"
    with pytest.raises(ArtifactError, match=r"datasets\.lighthouse\.files: unknown task 'hotpotqa'"):
        _import(FIXTURE, out, smollm_tokenizer, task="hotpotqa")
    with pytest.raises(ArtifactError, match="changed since the workflow was planned"):
        _import(FIXTURE, out, smollm_tokenizer, expected_sha256="0" * 64)
    # a later record with a bad field keeps the earlier, good artifact as it was (atomic, all or nothing)
    _import(FIXTURE, out, smollm_tokenizer)
    kept = out.read_bytes()
    with pytest.raises(ArtifactError):
        _import(_bad_file(tmp_path, {**GOOD, "answers": []}), out, smollm_tokenizer)
    assert out.read_bytes() == kept


def test_summhay_locates_insight_and_citation_needles():
    from synthctx.tasks import get_task
    from synthctx.tasks.base import RecordError

    docs = [{"doc_id": "1", "title": "", "text": "Crowds gathered at the pier. Nothing else happened."},
            {"doc_id": "2", "title": "", "text": "Rain delayed the ferry. The harbour fee rose to nine coins. "
                                                 "Gulls circled."}]
    example = {"documents": docs, "question": "The harbour fee rose to nine coins.", "answers": ["[2]"],
               "target": "[2]", "gold_doc_ids": [], "needles": []}
    gold, needles = get_task("summhay").locate_needles(example, {"min_insight_match": 0.5})
    assert gold == ["2"]
    insight = next(n for n in needles if n["kind"] == "insight")
    assert docs[1]["text"][insight["start"]:insight["end"]] == "The harbour fee rose to nine coins."
    assert {"doc_id": "2", "start": 10, "end": 11, "kind": "citation"} in needles
    with pytest.raises(RecordError, match="gold document 1 has no sentence stating the insight"):
        get_task("summhay").locate_needles({**example, "target": "[1]"}, {"min_insight_match": 0.5})
    with pytest.raises(RecordError, match="field 'target': '\\[2\\]\\[1\\]' is not the citation"):
        get_task("summhay").locate_needles({**example, "target": "[2][1]"}, {"min_insight_match": 0.5})


def _config(tasks=("mdqa", "musique")) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["study"]["tasks"] = list(tasks)
    config["datasets"] = {"myqa": {"label": "My QA set", "files": {"mdqa": "data/my.jsonl"}},
                          "my_qa_v2": {"label": "My QA set, v2", "files": {"mdqa": "a.jsonl", "summhay": "b.jsonl"}}}
    return config


def test_per_task_conditions_and_labels_from_config():
    config = _config()
    study.check_config(config)
    built_in = config["study"]["real_conditions"] + config["study"]["synthetic_conditions"]
    assert study.trained_conditions(config, "mdqa") == built_in + ["myqa", "my_qa_v2"]
    # summhay is outside the study: its file is ignored; musique has no user file
    assert study.trained_conditions(config, "musique") == built_in
    assert study.evaluated_conditions(config, "musique")[-1] == "nonft"
    assert study.user_condition_names(config) == ["myqa", "my_qa_v2"]
    assert study.get_condition("myqa").kind == "user"
    # names without the x_y shape, and with digits, keep their configured labels
    assert study.condition_label("myqa", "mdqa") == "My QA set"
    assert study.condition_label("my_qa_v2") == "My QA set, v2"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["datasets"]["myqa"]["files"].update(hotpotqa="h.jsonl"), "datasets.myqa.files.hotpotqa: unknown task"),
    (lambda c: c["datasets"].update(real_full={"label": "x", "files": {"mdqa": "x.jsonl"}}),
     "datasets.real_full: 'real_full' is a real condition"),
    (lambda c: c["datasets"].update(nonft={"label": "x", "files": {"mdqa": "x.jsonl"}}),
     "datasets.nonft: 'nonft' is reserved"),
])
def test_bad_dataset_entries_are_config_errors(change, message):
    config = _config()
    change(config)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        study.check_config(config)


def test_schema_checks_the_datasets_section():
    import jsonschema

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    config = _config()
    jsonschema.validate(config, schema)
    for bad in ({"My-QA": {"label": "x", "files": {"mdqa": "a.jsonl"}}}, {"myqa": {"files": {"mdqa": "a.jsonl"}}},
                {"myqa": {"label": "x", "files": {"mdqa": "a.csv"}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**config, "datasets": bad}, schema)
    assert yaml.safe_load((REPO / "config.yaml").read_text())["datasets"] == {}


def _predictions(task, conditions, scores):
    rows = [{"example_id": f"e{i}", "task": task, "condition": c, "prediction": f"{c}{i}", "score": s[i],
             "metrics": "{}", "prompt_tokens": 10, "generated_tokens": 2}
            for c, s in zip(conditions, scores) for i in range(len(s))]
    return pd.DataFrame(rows)


def test_table1_shows_a_user_condition_with_its_label_only_for_its_task():
    from synthctx.evaluate.table1 import build_table1, table1_markdown

    study.register_user_labels({"myqa": "My QA set"})
    n = 6
    mdqa = _predictions("mdqa", ["symbolic", "myqa", "real_full", "nonft"],
                        [[0.2] * n, [1.0] * n, [0.5] * n, [0.0] * n])
    musique = _predictions("musique", ["symbolic", "real_full", "nonft"], [[0.3] * n, [0.6] * n, [0.1] * n])
    table = build_table1({"mdqa": mdqa, "musique": musique}, "m", ["symbolic"], ["real_full"], 100, 0.05, 1,
                         user={"mdqa": ["myqa"]})
    mine = table[table["condition"] == "myqa"]
    assert list(mine["task"]) == ["mdqa"] and list(mine["label"]) == ["My QA set"]
    # the user dataset competes with the synthetic conditions for the column's best
    assert bool(mine["is_best_synthetic"].iloc[0])
    assert bool(table[(table["task"] == "musique") & (table["condition"] == "symbolic")]["is_best_synthetic"].iloc[0])
    markdown = table1_markdown(table, 0.05, 100)
    assert "| My QA set | **1.00** | - |" in markdown


def _tiny_one_task_config(source: Path) -> dict:
    from test_workflow_e2e import _tiny_config

    config = copy.deepcopy(_tiny_config())  # it shares its nested sections with the e2e test's OVERLAY
    config["study"].update(tasks=["mdqa"], synthetic_conditions=[], real_conditions=["real_full"])
    for section in ("raw_data", "data"):
        for task in ("musique", "summhay"):
            config[section].pop(task)
    config["evaluate"]["max_new_tokens"] = {"mdqa": 12}
    config["heads"]["task_examples"], config["causal"]["task_examples"] = {}, {}
    config["causal"].update(knockout_conditions=["real_full"], patch_conditions=["lighthouse"])
    config["datasets"] = {"lighthouse": {"label": "Lighthouse QA", "files": {"mdqa": str(source)}}}
    return config


def _workdir(tmp_path: Path, config: dict) -> Path:
    work = tmp_path / "study"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "report", "envs", "schemas", "profiles"):
        os.symlink(REPO / name, work / name)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def test_dry_run_schedules_the_user_condition_only_for_its_task(tmp_path):
    from slurm.workflow import dry_run_jobs, run_snakemake

    config = _tiny_one_task_config(FIXTURE)
    # two tasks; the dataset has a file for mdqa only
    two = copy.deepcopy(config)
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    from test_workflow_e2e import OVERLAY

    two["study"]["tasks"] = ["mdqa", "musique"]
    two["raw_data"]["musique"] = OVERLAY["raw_data"]["musique"]
    two["data"]["musique"] = {**base["data"]["musique"], "hops": [2, 3, 4], "num_paragraphs": 3, "eval_examples": 2}
    two["evaluate"]["max_new_tokens"]["musique"] = 12
    two["heads"]["task_examples"] = two["causal"]["task_examples"] = {"musique": 1}
    work = _workdir(tmp_path, two)
    study = f"results/{two['study']['name']}"
    proc = run_snakemake("-n", "all", cwd=work, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = dry_run_jobs(proc.stdout)
    mine = sorted((rule, out) for rule, out in jobs if "lighthouse" in out and not rule.startswith("scorecard"))
    # the scorecard (part of all) probes it too, for its own task only
    probes = [out for rule, out in jobs if "lighthouse" in out and rule.startswith("scorecard")]
    assert probes and all("/mdqa/lighthouse/" in out for out in probes)
    assert mine == [
        ("heads", f"{study}/heads/smollm2-135m/mdqa/lighthouse.parquet"),
        ("import_user_dataset", f"{study}/data/smollm2-135m/mdqa/train/lighthouse.parquet"),
        ("patching", f"{study}/causal/smollm2-135m/mdqa/lighthouse/patching.parquet"),
        ("train_adapter", f"{study}/adapters/smollm2-135m/mdqa/lighthouse/adapter_model.safetensors"),
    ]
    # results/<study>/adapters/<model>/<task>/<condition>/...
    trained = sorted(out.split("/")[4:6] for rule, out in jobs if rule == "train_adapter")
    assert trained == [["mdqa", "lighthouse"], ["mdqa", "real_full"], ["musique", "real_full"]]
    # the mdqa evaluation serves the user adapter; the musique one does not
    evaluate = {block.split("output: ")[1].split("/")[4]: block for block in proc.stdout.split("rule evaluate_task:")[1:]}
    assert f"--adapter lighthouse={study}/adapters/smollm2-135m/mdqa/lighthouse" in proc.stdout
    assert "mdqa/lighthouse/adapter_model" in evaluate["mdqa"].split("output:")[0]
    assert "lighthouse" not in evaluate["musique"].split("output:")[0]


@pytest.mark.slow
def test_user_condition_reaches_table1_figure3_and_heatmap(tmp_path, smollm_dir):
    """A real run: import, training, evaluation, Table 1, heads, similarity/Figure 3's table and the
    heatmap of a one-task study whose only synthetic-like candidate is the user's dataset."""
    from slurm.workflow import dry_run_jobs, link_model, run_snakemake

    from synthctx.schema import read_table

    source = tmp_path / "mine" / "lighthouses.jsonl"  # a copy: the test changes it below
    source.parent.mkdir()
    source.write_bytes(FIXTURE.read_bytes())
    config = _tiny_one_task_config(source)
    work = _workdir(tmp_path, config)
    link_model(Path(smollm_dir), work / "resources" / "models" / "smollm2-135m")
    study = f"results/{config['study']['name']}"
    env_target = f"{study}/tables/smollm2-135m/table1.parquet"
    analyses = [f"{study}/analysis/smollm2-135m/correlations.parquet", f"{study}/figures/smollm2-135m/heatmap_mdqa.png"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", env_target, *analyses], cwd=work,
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "SYNTHCTX_VLLM_PYTHON": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    table = read_table(work / env_target, "table1").set_index("condition")
    # closed_book: config.yaml's study.evaluation_conditions default
    assert set(table.index) == {"lighthouse", "real_full", "nonft", "closed_book", "trivial"}
    row = table.loc["lighthouse"]
    assert row["label"] == "Lighthouse QA" and row["task"] == "mdqa"
    assert row["train_examples"] == 4 and bool(row["is_best_synthetic"])
    assert 0.0 <= row["score"] <= 1.0 and row["n"] == table.loc["real_full", "n"]
    markdown = (work / study / "tables/smollm2-135m/table1.md").read_text()
    assert "| Lighthouse QA |" in markdown
    # the imported set records the fixture's hash; an unchanged fixture means nothing to do
    meta = read_metadata(work / study / "data/smollm2-135m/mdqa/train/lighthouse.parquet")
    assert meta["source_sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    # Figure 3: the user condition is a point, its score the Table 1 score; the heatmap has its panel
    similarity = read_table(work / study / "analysis/smollm2-135m/similarity.parquet", "head_similarity")
    mine = similarity[(similarity["condition"] == "lighthouse") & (similarity["head_kind"] == "retrieval")]
    assert list(mine["task"]) == ["mdqa"] and abs(mine["score"].iloc[0] - row["score"]) < 1e-12
    correlations = read_table(work / analyses[0], "correlations").set_index("measure")
    assert correlations.loc["cosine", "n_conditions"] == int(mine["cosine"].notna().iloc[0])
    assert (work / analyses[1]).stat().st_size > 5_000
    again = run_snakemake("-n", env_target, *analyses, cwd=work, timeout=240)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # a new label redraws Table 1 and the figures only; nothing is imported or trained again
    relabelled = copy.deepcopy(config)
    relabelled["datasets"]["lighthouse"]["label"] = "Lighthouses"
    (work / "config.yaml").write_text(yaml.safe_dump(relabelled))
    plan = run_snakemake("-n", env_target, *analyses, cwd=work, timeout=240)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert {rule for rule, _ in dry_run_jobs(plan.stdout)} == {"score_table", "correlations", "heatmap"}
    # a changed file re-runs the import and what depends on it, even with its old modification time
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    stat = source.stat()
    record = {**GOOD, "id": "lh-5", "question": "What colour is the Orrick Lighthouse?"}
    source.write_text(source.read_text() + json.dumps(record) + "\n")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    plan = run_snakemake("-n", env_target, *analyses, cwd=work, timeout=240)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = dry_run_jobs(plan.stdout)
    assert {"import_user_dataset", "train_adapter", "evaluate_task", "heads", "score_table"} <= {rule for rule, _ in jobs}
    assert ("train_adapter", f"{study}/adapters/smollm2-135m/mdqa/lighthouse/adapter_model.safetensors") in jobs


def test_figure3_counts_user_conditions_as_synthetic_points(tmp_path, monkeypatch):
    """The correlations rule passes the user datasets with the synthetic conditions: they are
    points of the Spearman (n counts them) and the figure annotates them with their label."""
    from synthctx.analysis.run import run_correlations
    from synthctx.schema import read_table, write_table

    rules = (REPO / "rules" / "analysis.smk").read_text()
    assert "synthetic=SYNTHETIC + USER" in rules
    study.register_user_labels({"myqa": "My QA set"})
    rows = [{"model": "m", "task": "mdqa", "condition": c, "head_kind": "retrieval", "cosine": cos, "recall_topk": cos,
             "recall_threshold": cos, "positive_heads": 3, "score": score}
            for c, cos, score in [("real_full", 1.0, 0.9), ("symbolic", 0.2, 0.1), ("low_low", 0.5, 0.4),
                                  ("myqa", 0.8, 0.7)]]
    write_table(pd.DataFrame(rows), tmp_path / "similarity.parquet", "head_similarity")
    labels = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate",
                        lambda self, text, *a, **k: labels.append(text) or original(self, text, *a, **k))
    run_correlations(similarity_path=str(tmp_path / "similarity.parquet"), synthetic=["low_low", "symbolic", "myqa"],
                     output=str(tmp_path / "correlations.parquet"), figure=str(tmp_path / "figure3.png"), seed=1)
    corr = read_table(tmp_path / "correlations.parquet", "correlations").set_index("measure")
    assert corr.loc["cosine", "n_conditions"] == 3 and corr.loc["cosine", "spearman_rho"] == pytest.approx(1.0)
    assert "My QA set" in labels
