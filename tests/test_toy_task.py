"""A task defined entirely under tests/ (tests/toytask.py, its own TSV fixture) runs through
data, one synthetic variant, training, evaluation and head scoring with no library edit."""

import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

FIXTURE = Path(__file__).parent / "fixtures" / "raw" / "toy" / "lookup.tsv"


@pytest.fixture(scope="module")
def toy():
    sys.path.insert(0, str(Path(__file__).parent))
    import toytask

    from synthctx.tasks import get_task, register_task, unregister_task

    register_task(toytask.TOY, replace=True)
    yield get_task("toy")
    unregister_task("toy")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("toy_model")
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=len(smollm_tokenizer),
                      max_position_embeddings=1024, eos_token_id=smollm_tokenizer.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(root)
    smollm_tokenizer.save_pretrained(root)
    return root


def test_toy_task_end_to_end(toy, tiny_model_dir, smollm_tokenizer, tmp_path):
    import torch

    from synthctx.data.build import build_real_data, write_real_data
    from synthctx.data.examples import read_examples, write_examples
    from synthctx.evaluate.run import evaluate_task
    from synthctx.heads.retrieval import run_task_heads
    from synthctx.schema import read_table
    from synthctx.synth.variants import build_variant
    from synthctx.train.lora import TrainSettings, train_condition

    torch.set_num_threads(1)
    settings = {"dtype": "float32", "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": 512}
    # data: the toy's loader, example builder and needles
    data = build_real_data("toy", [str(FIXTURE)], smollm_tokenizer, task_config={"num_documents": 3},
                           eval_examples=2, max_train_examples=None, limited_fraction=0.5, seed=7,
                           context_tokens=512)
    assert (len(data.eval), len(data.real_full), len(data.real_limited)) == (2, 4, 2)
    for ex in data.eval + data.real_full:
        assert ex["task"] == "toy"
        gold = next(d for d in ex["documents"] if d["doc_id"] == ex["gold_doc_ids"][0])
        assert [gold["text"][n["start"]:n["end"]].lower() for n in ex["needles"]] == [ex["target"].lower()]
    stats = data.stats.set_index(["condition", "stat"])["value"]
    assert stats[("all", "raw_records")] == 6 and stats[("real", "examples")] == 2
    paths = {k: str(tmp_path / f"{k}.parquet") for k in ("eval", "full", "limited", "stats")}
    write_real_data(data, eval_path=paths["eval"], full_path=paths["full"], limited_path=paths["limited"],
                    stats_path=paths["stats"], metadata={"seed": 7})

    # one synthetic variant the toy supports; a variant it does not support is refused
    empty_pool = pd.DataFrame(columns=["pool_id", "kind", "entity", "fields", "status", "text"])
    synthetic, _ = build_variant("toy", "symbolic", empty_pool, smollm_tokenizer, seed=7, examples=2,
                                 context_tokens=512, num_documents=3)
    assert [ex["condition"] for ex in synthetic] == ["symbolic", "symbolic"]
    for ex in synthetic:
        value = next(n for n in ex["needles"] if n["kind"] == "value")
        assert ex["documents"][int(value["doc_id"]) - 1]["text"][value["start"]:value["end"]] == ex["target"]
    with pytest.raises(ValueError, match="no synthetic variant 'high_high'"):
        build_variant("toy", "high_high", empty_pool, smollm_tokenizer, seed=7, examples=1, context_tokens=512,
                      num_documents=3)
    write_examples(synthetic, tmp_path / "symbolic.parquet", metadata={"seed": 7})

    # training on the synthetic set
    train = TrainSettings(method="lora", lora={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"]},
                          learning_rate=1e-3, epochs=1, batch_size=1, gradient_accumulation=1, warmup_ratio=0.0,
                          weight_decay=0.0, max_grad_norm=1.0, checkpoint_every=0, gradient_checkpointing=False,
                          cpu_autocast=None)
    summary = train_condition(examples=read_examples(tmp_path / "symbolic.parquet"), model_dir=str(tiny_model_dir),
                              model_settings=settings, settings=train, seed=7, out_dir=tmp_path / "adapter",
                              checkpoint_dir=tmp_path / "ckpt", run_info={"task": "toy", "condition": "symbolic"})
    assert summary["examples"] == 2
    assert len(read_table(tmp_path / "adapter" / "train_curve.parquet", "train_curve")) == 2

    # evaluation with the toy's own metric
    predictions = evaluate_task(eval_path=paths["eval"], model_dir=str(tiny_model_dir), model_settings=settings,
                                adapters={"symbolic": str(tmp_path / "adapter")}, max_new_tokens=8, backend="hf",
                                out_path=str(tmp_path / "predictions.parquet"), seed=7, batch_size=2)
    assert sorted(set(predictions["condition"])) == ["nonft", "symbolic"]
    assert set(predictions["task"]) == {"toy"}
    eval_examples = {ex["example_id"]: ex for ex in read_examples(paths["eval"])}
    for row in predictions.itertuples():
        assert row.score == toy.score(row.prediction.strip(), eval_examples[row.example_id])[0]

    # head scoring: the toy's needles ("answer") for its retrieval heads
    run_task_heads(model_dir=str(tiny_model_dir), eval_path=paths["eval"], output=str(tmp_path / "heads.parquet"),
                   model_name="tiny", task="toy", condition="nonft", model_settings=settings,
                   heads={"examples": 2, "max_new_tokens": 4, "success_only": False, "success_threshold": 0.5,
                          "token_match": "normalized", "success_metric": "contains", "batch_size": 1}, seed=7)
    heads = read_table(tmp_path / "heads.parquet", "head_scores")
    assert len(heads) == 2 * 4 and set(heads["head_kind"]) == {"retrieval"} and set(heads["task"]) == {"toy"}
    assert ((heads["score"] >= 0) & (heads["score"] <= 1)).all()


@pytest.mark.slow
def test_toy_task_through_the_workflow(tmp_path, smollm_dir):
    """The same toy task as a researcher adds it: its module in the study's working directory, named
    in study.task_modules, and one config section per key; Snakemake's own jobs (each a new Python
    process, which never parsed the config) build its data, its symbolic variant, train on it,
    evaluate and score heads. Before the jobs imported study.task_modules, the first job failed
    with "unknown task 'toy'"."""
    import shutil

    import yaml
    from slurm.workflow import run_snakemake

    from synthctx.data.examples import read_examples
    from synthctx.schema import read_table

    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    shutil.copy(Path(__file__).parent / "toytask.py", tmp_path / "mytasks" / "toy.py")
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    overlay = {
        "study": {"name": "toy-study", "tasks": ["toy"], "task_modules": ["mytasks.toy"],
                  "synthetic_conditions": ["symbolic"], "real_conditions": ["real_full"]},
        "models": {"smollm2-135m": {"source": {"kind": "local", "path": str(smollm_dir)}}},
        "raw_data": {"local_dir": str(FIXTURE.parents[1]), "toy": {"files": ["toy/lookup.tsv"]}},
        "data": {"eval_examples": 2, "toy": {"num_documents": 3}},
        "evaluate": {"max_new_tokens": {"toy": 8}},
        # the fixture's 6 records: 2 eval examples, one ranks heads, the other is the causal part
        "heads": {"success_metric": {"toy": "score"}, "examples": 1},
        "causal": {"patch_conditions": ["symbolic"], "examples": 1},
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    study = "results/toy-study"
    targets = [f"{study}/eval/smollm2-135m/toy/predictions.parquet", f"{study}/heads/smollm2-135m/toy/symbolic.parquet"]
    proc = run_snakemake(*targets, "-s", str(REPO / "Snakefile"), "--workflow-profile", "none", "--cores", "2",
                         "--configfile", str(REPO / "tests/configs/tiny.yaml"), str(tmp_path / "overlay.yaml"),
                         cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    # this process reads the outputs with the same module registered (the jobs had their own)
    from synthctx.tasks import unregister_task

    unregister_task("toy")
    sys.path.insert(0, str(tmp_path))
    try:
        from mytasks.toy import TOY

        eval_examples = read_examples(tmp_path / study / "data/smollm2-135m/toy/eval.parquet")
        assert [ex["task"] for ex in eval_examples] == ["toy", "toy"]
        symbolic = read_examples(tmp_path / study / "data/smollm2-135m/toy/train/symbolic.parquet")
        assert len(symbolic) == 4 and {ex["condition"] for ex in symbolic} == {"symbolic"}
        predictions = read_table(tmp_path / study / "eval/smollm2-135m/toy/predictions.parquet", "predictions")
        # config.yaml's evaluation-only conditions beside the two trained ones
        assert set(predictions["condition"]) == {"nonft", "closed_book", "real_full", "symbolic"}
        assert len(predictions) == 4 * 2 and set(predictions["task"]) == {"toy"}
        heads = read_table(tmp_path / study / "heads/smollm2-135m/toy/symbolic.parquet", "head_scores")
        assert len(heads) == 30 * 9 and set(heads["task"]) == {"toy"}
        assert ((heads["score"] >= 0) & (heads["score"] <= 1)).all()
        # the toy's own metric scored every prediction (the job imported the module)
        by_id = {ex["example_id"]: ex for ex in eval_examples}
        for row in predictions.itertuples():
            assert row.score == TOY.score(row.prediction.strip(), by_id[row.example_id])[0]
        # no pool job for a task that writes none
        assert not (tmp_path / study / "synth" / "toy").exists()
    finally:
        unregister_task("toy")
        sys.path.remove(str(tmp_path))
        for name in ("mytasks.toy", "mytasks"):
            sys.modules.pop(name, None)
