"""Sweep the training recipe and the task difficulty for the embedded model (issue: positive control).

Question: can LoRA fine-tuning on *real* task data measurably teach SmolLM2-135M each task, and
with which recipe and at which difficulty? Every setting is scored on a **dev split carved from
the training examples** (the study's eval split is built first and left untouched, so nothing is
tuned on it), against the base model (Non-FT) and the task's trivial baseline
(``synthctx.evaluate.baselines``), with paired-bootstrap p-values.

Uses the study's own code end to end: ``build_real_data`` for examples (same prompts, budgets,
splits), ``train_condition`` for LoRA, ``greedy_decode_hf`` + ``score_prediction`` for scores.

    # 1. build the data sets of every difficulty (CPU is fine; tokenizer only)
    python benchmarks/sweep_recipe.py build --model-dir M --raw-dir ../shared/data --out sweep/data
    # 2. train + evaluate every (difficulty, recipe) job, N processes sharing one GPU
    python benchmarks/sweep_recipe.py run --model-dir M --data sweep/data --out sweep/runs --workers 8
    # 3. the table (also printed at the end of `run`)
    python benchmarks/sweep_recipe.py report --runs sweep/runs

Results are appended one JSON line per finished job (``results.jsonl``), so a run cut short by a
time limit still reports what finished; ``--deadline`` stops starting new jobs after N seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SEED = 1234
CONTEXT_TOKENS = 8192  # gpu-small's budget (the native window)
# The study's eval split sizes (gpu-small): built first so that dev examples never include them.
EVAL_EXAMPLES = {"mdqa": 100, "musique": 30, "summhay": None}  # SummHay: one held-out haystack
# MuSiQue has 59 three-hop questions in the samples: 30 eval, so dev 12 of the other 29.
DEV_EXAMPLES = {"mdqa": 80, "musique": 12, "summhay": 60}
MAX_TRAIN = {"mdqa": 200, "musique": 200, "summhay": 200}
MAX_NEW_TOKENS = {"mdqa": 32, "musique": 32, "summhay": 48}

# Difficulty settings per task: the data.<task> section (on top of config.yaml's) and a name.
DIFFICULTIES = {
    "mdqa": {
        "docs20": {"num_documents": 20, "gold_position": "uniform"},
        "docs10": {"num_documents": 10, "gold_position": "uniform"},
        "docs5": {"num_documents": 5, "gold_position": "uniform"},
    },
    "summhay": {
        "docs20": {"eval_haystacks": 1, "num_documents": 20, "max_gold_documents": 4, "excerpt_sentences": 12},
        "docs10": {"eval_haystacks": 1, "num_documents": 10, "max_gold_documents": 3, "excerpt_sentences": 6},
        # Round 2: fewer gold documents per example, so citing everything scores less (1 of 10: 0.18).
        "docs10_gold1": {"eval_haystacks": 1, "num_documents": 10, "max_gold_documents": 1, "excerpt_sentences": 6},
        "docs5_gold1": {"eval_haystacks": 1, "num_documents": 5, "max_gold_documents": 1, "excerpt_sentences": 6},
    },
    "musique": {
        # The paper's three-hop task; train and dev both three-hop.
        "hop3_par60": {"hops": [3], "num_paragraphs": 60},
        "hop3_par20": {"hops": [3], "num_paragraphs": 20},
        # Train on every hop count (real MuSiQue questions of 2-4 hops), dev on the same three-hop.
        "hops234_par20": {"hops": [2, 3, 4], "num_paragraphs": 20, "dev_hops": [3]},
        "hops234_par60": {"hops": [2, 3, 4], "num_paragraphs": 60, "dev_hops": [3]},
    },
}

# Difficulty keys that steer the sweep's split, not the task's data settings.
SWEEP_ONLY_KEYS = ("dev_hops", "dev_haystack")

# gpu-small's recipe (the baseline row) and the alternatives; effective batch 8 throughout.
BASE_RECIPE = {"method": "lora", "learning_rate": 2.0e-4, "epochs": 2, "batch_size": 8, "gradient_accumulation": 1,
               "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0, "checkpoint_every": 0,
               "gradient_checkpointing": "auto", "cpu_autocast": None, "lora": {"r": 16, "alpha": 32, "dropout": 0.05,
                                             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}
RECIPES = {
    "lr2e-4_ep2": {},
    "lr1e-3_ep2": {"learning_rate": 1.0e-3},
    "lr1e-3_ep4": {"learning_rate": 1.0e-3, "epochs": 4},
    "lr3e-3_ep2": {"learning_rate": 3.0e-3},
    "lr1e-3_ep2_r64": {"learning_rate": 1.0e-3, "lora": {"r": 64, "alpha": 128}},
    "lr1e-3_ep4_b4": {"learning_rate": 1.0e-3, "epochs": 4, "batch_size": 4},
    "lr1e-3_ep3": {"learning_rate": 1.0e-3, "epochs": 3},
    "lr3e-3_ep4": {"learning_rate": 3.0e-3, "epochs": 4},
}
# Which recipes run on which (task, difficulty): the full grid on the middle difficulty, the
# promising few elsewhere (the device session has minutes, not hours).
PLAN = {
    ("mdqa", "docs20"): ["lr2e-4_ep2", "lr1e-3_ep2", "lr1e-3_ep4", "lr3e-3_ep2"],
    ("mdqa", "docs10"): list(RECIPES),
    ("mdqa", "docs5"): ["lr2e-4_ep2", "lr1e-3_ep2", "lr1e-3_ep4"],
    ("summhay", "docs20"): ["lr2e-4_ep2", "lr1e-3_ep2", "lr1e-3_ep4", "lr3e-3_ep2"],
    ("summhay", "docs10"): list(RECIPES),
    ("musique", "hop3_par60"): ["lr2e-4_ep2", "lr1e-3_ep4"],
    ("musique", "hop3_par20"): ["lr2e-4_ep2", "lr1e-3_ep4", "lr3e-3_ep2"],
    ("musique", "hops234_par20"): ["lr2e-4_ep2", "lr1e-3_ep2", "lr1e-3_ep4"],
}
# Round 2 (after round 1's table, BENCHMARKS.md): SummHay with one gold document, MuSiQue's
# all-hop training at 60 paragraphs, and three epochs beside two for the chosen lr.
PLAN2 = {
    ("summhay", "docs10_gold1"): ["lr2e-4_ep2", "lr1e-3_ep2", "lr1e-3_ep4", "lr3e-3_ep4"],
    ("summhay", "docs5_gold1"): ["lr2e-4_ep2", "lr1e-3_ep2", "lr1e-3_ep4"],
    ("musique", "hops234_par60"): ["lr1e-3_ep2", "lr1e-3_ep3"],
    ("musique", "hops234_par20"): ["lr1e-3_ep3"],
    ("mdqa", "docs20"): ["lr1e-3_ep3"],
    ("mdqa", "docs10"): ["lr1e-3_ep3"],
}


# The CPU preset: the default study's scale (config.yaml: 640-token budget, 12 eval examples,
# batch 1, 10 training examples), for choosing its recipe and SummHay's gold count on this CPU.
CPU_PRESET = {
    "CONTEXT_TOKENS": 640,
    "EVAL_EXAMPLES": {"mdqa": 12, "musique": 12, "summhay": None},
    "DEV_EXAMPLES": {"mdqa": 24, "musique": 12, "summhay": 24},
    "MAX_TRAIN": {"mdqa": 20, "musique": 20, "summhay": 40},  # SummHay 40: session 8's n40 recipe
    "MAX_NEW_TOKENS": {"mdqa": 16, "musique": 16, "summhay": 16},
    "DIFFICULTIES": {
        "mdqa": {"cpu_docs3": {"num_documents": 3, "gold_position": "uniform"}},
        "summhay": {
            "cpu_docs4_gold2": {"eval_haystacks": 1, "num_documents": 4, "max_gold_documents": 2, "excerpt_sentences": 3},
            "cpu_docs4_gold1": {"eval_haystacks": 1, "num_documents": 4, "max_gold_documents": 1, "excerpt_sentences": 3},
            # Session 8: the same data with a leak-free dev split, one whole training haystack
            # (k-th by seeded hash of its topic id), trained on the other two: three folds.
            **{f"cpu_docs4_gold1_devhs{k}": {"eval_haystacks": 1, "num_documents": 4, "max_gold_documents": 1,
                                              "excerpt_sentences": 3, "dev_haystack": k} for k in range(3)},
        },
    },
    "BASE_RECIPE": {"method": "lora", "learning_rate": 3.0e-4, "epochs": 1, "batch_size": 1, "gradient_accumulation": 1,
                    "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0, "checkpoint_every": 0,
                    "gradient_checkpointing": "auto", "cpu_autocast": None, "lora": {"r": 16, "alpha": 32, "dropout": 0.05,
                                                  "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}},
    # "train_examples": the first N of the (seeded) train set; the CPU default trains on 10.
    "RECIPES": {
        "cpu_default": {"train_examples": 10},
        "cpu_lr1e-3_ep2": {"learning_rate": 1.0e-3, "epochs": 2, "train_examples": 10},
        "cpu_lr1e-3_ep2_n20": {"learning_rate": 1.0e-3, "epochs": 2, "train_examples": 20},
        # Round 2 on the CPU: the same lr at the default's cost (10 x 1) and at twice it (20 x 1).
        "cpu_lr1e-3_ep1": {"learning_rate": 1.0e-3, "epochs": 1, "train_examples": 10},
        "cpu_lr1e-3_ep1_n20": {"learning_rate": 1.0e-3, "epochs": 1, "train_examples": 20},
        # Session 7: the chosen recipe with its passes under bf16 autocast (train.cpu_autocast).
        "cpu_lr1e-3_ep2_n20_bf16": {"learning_rate": 1.0e-3, "epochs": 2, "train_examples": 20,
                                    "cpu_autocast": "bfloat16"},
        # Session 8, on the leak-free SummHay folds: twice the steps, as more examples or more epochs.
        "cpu_lr1e-3_ep2_n40_bf16": {"learning_rate": 1.0e-3, "epochs": 2, "train_examples": 40,
                                    "cpu_autocast": "bfloat16"},
        "cpu_lr1e-3_ep4_n20_bf16": {"learning_rate": 1.0e-3, "epochs": 4, "train_examples": 20,
                                    "cpu_autocast": "bfloat16"},
    },
    "PLAN": {
        ("mdqa", "cpu_docs3"): ["cpu_default", "cpu_lr1e-3_ep2", "cpu_lr1e-3_ep2_n20", "cpu_lr1e-3_ep1",
                                "cpu_lr1e-3_ep1_n20", "cpu_lr1e-3_ep2_n20_bf16"],
        ("summhay", "cpu_docs4_gold2"): ["cpu_default", "cpu_lr1e-3_ep2"],
        **{("summhay", f"cpu_docs4_gold1_devhs{k}"): ["cpu_lr1e-3_ep2_n20_bf16", "cpu_lr1e-3_ep2_n40_bf16",
                                                      "cpu_lr1e-3_ep4_n20_bf16"] for k in range(3)},
        ("summhay", "cpu_docs4_gold1"): ["cpu_default", "cpu_lr1e-3_ep2", "cpu_lr1e-3_ep2_n20", "cpu_lr1e-3_ep1",
                                         "cpu_lr1e-3_ep1_n20", "cpu_lr1e-3_ep2_n20_bf16"],
    },
}


def apply_preset(name: str | None) -> None:
    """Switch the module's sizes to a preset (in the parent and in every spawned worker)."""
    if name == "cpu":
        globals().update({k: v for k, v in CPU_PRESET.items()})


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


# --------------------------------------------------------------------------- build


def default_data_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def build(args) -> None:
    from synthctx.data.build import build_real_data
    from synthctx.data.examples import write_examples
    from synthctx.models.loading import load_tokenizer
    from synthctx.provenance import derived_seed

    cfg = default_data_config()
    tokenizer = load_tokenizer(args.model_dir)
    raw = Path(args.raw_dir)
    files = {"mdqa": [raw / "mdqa/nq-open-20_total_documents_gold_at_0.first441.jsonl.gz"],
             "musique": [raw / f for f in ("musique/musique_ans_train_sample100.hipporag.json",
                                           "musique/musique_ans_sample200.migres.jsonl")],
             "summhay": sorted(raw.glob("summhay/topic_news*.json"))}
    out = Path(args.out)
    for task, settings in DIFFICULTIES.items():
        if args.tasks and task not in args.tasks:
            continue
        for name, over in settings.items():
            if args.difficulties and name not in args.difficulties:
                continue
            started = time.perf_counter()
            task_config = merge(cfg["data"][task], {k: v for k, v in over.items() if k not in SWEEP_ONLY_KEYS})
            kwargs = dict(task_config=task_config, limited_fraction=0.25, seed=SEED, context_tokens=CONTEXT_TOKENS)
            # The study's eval split of this difficulty first (three-hop for MuSiQue), excluded below.
            eval_config = dict(task_config, hops=over.get("dev_hops", task_config.get("hops")))
            study = build_real_data(task, [str(f) for f in files[task]], tokenizer,
                                    **dict(kwargs, task_config=eval_config),
                                    eval_examples=EVAL_EXAMPLES[task] or 10_000, max_train_examples=None)
            held_out = {ex["example_id"] for ex in study.eval}
            # Dev: drawn from the train examples of the dev hop count (three-hop for MuSiQue).
            dev_pool = study.real_full
            if "dev_hops" in over:
                data = build_real_data(task, [str(f) for f in files[task]], tokenizer, **kwargs,
                                       eval_examples=1, max_train_examples=None)
                pool = [ex for ex in data.eval + data.real_full if ex["example_id"] not in held_out]
            else:
                pool = study.real_full
            if "dev_haystack" in over:
                # SummHay: the dev questions come from one whole training haystack, as the eval
                # questions come from a held-out one. Questions of a training haystack share its
                # documents, so a dev split of them scores memory of those documents too (the
                # session-6 split: dev 0.792, the study's eval haystack 0.250).
                topics = sorted({ex["meta"]["topic_id"] for ex in dev_pool},
                                key=lambda t: derived_seed(SEED, "dev-haystack", t))
                dev_topic = topics[over["dev_haystack"]]
                dev_pool = [ex for ex in dev_pool if ex["meta"]["topic_id"] == dev_topic]
                pool = [ex for ex in pool if ex["meta"]["topic_id"] != dev_topic]
            ranked = sorted(dev_pool, key=lambda ex: derived_seed(SEED, "dev", ex["example_id"]))
            dev = ranked[:DEV_EXAMPLES[task]]
            dev_ids = {ex["example_id"] for ex in dev}
            train = [ex for ex in pool if ex["example_id"] not in dev_ids]
            if task == "musique":
                # Composed questions share single-hop sub-questions (ids after "__"): a train
                # question sharing one with a dev or eval question would leak its answer.
                kept = {ex["example_id"] for ex in dev} | held_out
                blocked = {hop for eid in kept for hop in eid.split("__", 1)[-1].split("_")}
                train = [ex for ex in train if not blocked & set(ex["example_id"].split("__", 1)[-1].split("_"))]
            train = sorted(train, key=lambda ex: derived_seed(SEED, "sweep-train", ex["example_id"]))[:MAX_TRAIN[task]]
            target = out / task / name
            target.mkdir(parents=True, exist_ok=True)
            for split, examples in (("dev", dev), ("train", train)):
                for ex in examples:
                    ex["split"], ex["condition"] = ("eval", "real") if split == "dev" else ("train", "real_full")
                write_examples(examples, str(target / f"{split}.parquet"),
                               {"task": task, "difficulty": name, "settings": over, "seed": SEED})
            tokens = [ex["meta"]["prompt_tokens"] for ex in train + dev]
            print(f"{task}/{name}: train {len(train)}, dev {len(dev)}, held-out eval {len(held_out)}, "
                  f"prompt tokens {min(tokens)}-{max(tokens)} (mean {sum(tokens) / len(tokens):.0f}), "
                  f"{time.perf_counter() - started:.0f} s", flush=True)


# --------------------------------------------------------------------------- run


def run_job(job: dict) -> dict:
    """Train one recipe on one data set (or none: Non-FT) and score it on the dev split."""
    import tempfile

    import torch

    from synthctx.data.examples import read_examples
    from synthctx.evaluate.generate import end_of_turn_ids, greedy_decode_hf, prompt_token_ids
    from synthctx.evaluate.metrics import score_prediction
    from synthctx.models.loading import load_tokenizer
    from synthctx.models.loading import load_finetuned
    from synthctx.train.lora import TrainSettings, train_condition

    apply_preset(job.get("preset"))
    torch.set_num_threads(job.get("threads", 2))
    data = Path(job["data"]) / job["task"] / job["difficulty"]
    dev, train = read_examples(str(data / "dev.parquet")), read_examples(str(data / "train.parquet"))
    dev, train = dev[: job["max_dev"]], train[: job["max_train"]]  # None: all (a smoke test cuts them)
    tokenizer = load_tokenizer(job["model_dir"])
    spec = {"dtype": job["dtype"], "attn_implementation": "sdpa", "rope_theta": None, "context_tokens": CONTEXT_TOKENS}
    result = {k: job[k] for k in ("task", "difficulty", "recipe")}
    result.update(train_examples=len(train), dev_examples=len(dev))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = None
        if job["recipe"] != "nonft":
            fields = set(TrainSettings.__dataclass_fields__)
            recipe = merge(BASE_RECIPE, RECIPES[job["recipe"]])
            settings = TrainSettings(**{k: v for k, v in recipe.items() if k in fields})
            if recipe.get("train_examples"):
                train = train[: recipe["train_examples"]]
                result["train_examples"] = len(train)
            summary = train_condition(examples=train, model_dir=job["model_dir"], model_settings=spec,
                                      settings=settings, seed=SEED, out_dir=f"{tmp}/adapter",
                                      checkpoint_dir=f"{tmp}/ckpt", run_info={"task": job["task"]},
                                      progress_file=open(os.devnull, "w"))
            import pandas as pd

            curve = pd.read_parquet(f"{tmp}/adapter/train_curve.parquet")
            tail = max(1, len(curve) // 10)
            result.update(steps=int(summary["optimizer_steps"]), train_seconds=round(summary["seconds"], 1),
                          first_loss=float(curve["loss"].iloc[:tail].mean()),
                          final_loss=float(curve["loss"].iloc[-tail:].mean()),
                          peak_gib=round((summary["peak_memory_mb"] or 0) / 1024, 2))
            adapter = f"{tmp}/adapter"
        model = load_finetuned(job["model_dir"], adapter, spec, merge=True)
        eval_started = time.perf_counter()
        gens = greedy_decode_hf(model, tokenizer, prompt_token_ids(dev, tokenizer), MAX_NEW_TOKENS[job["task"]],
                                batch_size=16, stop_ids=end_of_turn_ids(tokenizer))
    result["eval_seconds"] = round(time.perf_counter() - eval_started, 1)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["example_ids"] = [ex["example_id"] for ex in dev]
    result["predictions"] = [g.text for g in gens]
    result["scores"] = [float(score_prediction(job["task"], g.text, ex)[0]) for g, ex in zip(gens, dev)]
    return result


def run(args) -> None:
    import multiprocessing

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = set()
    if results.exists():
        done = {(r["task"], r["difficulty"], r["recipe"]) for r in map(json.loads, results.read_text().splitlines())}
    jobs = []
    plan = PLAN2 if args.round == 2 else PLAN  # the CPU preset replaces PLAN
    for (task, difficulty), recipes in plan.items():
        if (args.tasks and task not in args.tasks) or (args.difficulties and difficulty not in args.difficulties):
            continue
        if not (Path(args.data) / task / difficulty / "train.parquet").exists():
            continue
        for recipe in ["nonft", *recipes]:
            if (task, difficulty, recipe) not in done and (not args.recipes or recipe in args.recipes + ["nonft"]):
                jobs.append({"task": task, "difficulty": difficulty, "recipe": recipe, "data": args.data,
                             "model_dir": args.model_dir, "dtype": args.dtype, "max_dev": args.max_dev,
                             "max_train": args.max_train, "preset": args.preset, "threads": args.threads})
    # Interleave tasks and put each setting's baseline recipe first: a cut-short run still answers
    # "does anything beat Non-FT" for every task.
    order = {r: i for i, r in enumerate(["nonft", *RECIPES])}
    jobs.sort(key=lambda j: (order[j["recipe"]], j["task"], j["difficulty"]))
    deadline = time.time() + args.deadline if args.deadline else None
    print(f"{len(jobs)} jobs, {args.workers} workers", flush=True)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        pending = {}
        queue = list(jobs)

        def submit_next():
            while queue and (deadline is None or time.time() < deadline):
                job = queue.pop(0)
                pending[pool.submit(run_job, job)] = job
                return

        for _ in range(args.workers):
            submit_next()
        while pending:
            future = next(as_completed(pending))
            job = pending.pop(future)
            try:
                result = future.result()
                with results.open("a") as fh:
                    fh.write(json.dumps(result) + "\n")
                mean = sum(result["scores"]) / len(result["scores"])
                print(f"done {job['task']}/{job['difficulty']}/{job['recipe']}: {mean:.3f} in {result['seconds']} s",
                      flush=True)
            except Exception as exc:  # a failed job is reported, the sweep goes on
                print(f"FAILED {job['task']}/{job['difficulty']}/{job['recipe']}: {exc!r}", flush=True)
            submit_next()
    print(report_text(results, args.data), flush=True)


# --------------------------------------------------------------------------- report


def report_text(results_path: Path, data_root: str | None = None, resamples: int = 10_000) -> str:
    import numpy as np

    from synthctx.data.examples import read_examples
    from synthctx.evaluate.baselines import distinct_predictions, trivial_predictions
    from synthctx.evaluate.metrics import score_prediction
    from synthctx.evaluate.table1 import bootstrap_ci, paired_bootstrap_pvalue
    from synthctx.provenance import derived_seed

    rows = [json.loads(line) for line in Path(results_path).read_text().splitlines() if line.strip()]
    data_root = Path(data_root) if data_root else Path(results_path).parent.parent / "data"
    lines = ["| task | difficulty | recipe | train n | dev n | steps | loss first -> last | dev score [95% CI] | "
             "distinct | p vs Non-FT | p vs trivial | train s |", "|" + "---|" * 12]
    for (task, difficulty) in sorted({(r["task"], r["difficulty"]) for r in rows}):
        group = {r["recipe"]: r for r in rows if (r["task"], r["difficulty"]) == (task, difficulty)}
        base = group.get("nonft")
        trivial_scores = None
        folder = data_root / task / difficulty
        if (folder / "dev.parquet").exists():
            dev = read_examples(str(folder / "dev.parquet"))
            train = read_examples(str(folder / "train.parquet"))
            by_id = {ex["example_id"]: ex for ex in dev}
            ids = (base or next(iter(group.values())))["example_ids"]
            preds = trivial_predictions(task, [by_id[i] for i in ids], train)
            trivial_scores = np.array([score_prediction(task, p, by_id[i])[0] for p, i in zip(preds, ids)])
            low, high = bootstrap_ci(trivial_scores, resamples, derived_seed(SEED, "sweep", task, difficulty, "trivial"))
            lines.append(f"| {task} | {difficulty} | trivial | {len(train)} | {len(ids)} | - | - | "
                         f"{trivial_scores.mean():.3f} [{low:.3f}, {high:.3f}] | {distinct_predictions(preds)} | - | - | - |")
        for recipe in ["nonft", *RECIPES]:
            r = group.get(recipe)
            if r is None:
                continue
            scores = np.array(r["scores"])
            low, high = bootstrap_ci(scores, resamples, derived_seed(SEED, "sweep", task, difficulty, recipe))
            seed = derived_seed(SEED, "sweep-test", task, difficulty)
            p_base = "-" if recipe == "nonft" or base is None else \
                f"{paired_bootstrap_pvalue(scores, np.array(base['scores']), resamples, seed):.4f}"
            p_triv = "-" if trivial_scores is None else f"{paired_bootstrap_pvalue(scores, trivial_scores, resamples, seed):.4f}"
            loss = f"{r['first_loss']:.2f} -> {r['final_loss']:.2f}" if "final_loss" in r else "-"
            lines.append(f"| {task} | {difficulty} | {recipe} | {r['train_examples'] if recipe != 'nonft' else 0} | "
                         f"{r['dev_examples']} | {r.get('steps', 0)} | {loss} | {scores.mean():.3f} [{low:.3f}, {high:.3f}] | "
                         f"{distinct_predictions(r['predictions'])} | {p_base} | {p_triv} | {r.get('train_seconds', '-')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--model-dir", required=True)
    b.add_argument("--preset", choices=["cpu"], default=None, help="the default study's CPU scale")
    b.add_argument("--raw-dir", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--tasks", nargs="*")
    b.add_argument("--difficulties", nargs="*", help="only these difficulty names")
    r = sub.add_parser("run")
    r.add_argument("--model-dir", required=True)
    r.add_argument("--preset", choices=["cpu"], default=None, help="the default study's CPU scale")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--workers", type=int, default=8)
    r.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    r.add_argument("--dtype", default="bfloat16")
    r.add_argument("--deadline", type=float, default=None, help="start no job after this many seconds")
    r.add_argument("--tasks", nargs="*")
    r.add_argument("--recipes", nargs="*")
    r.add_argument("--max-train", type=int, default=None, help="smoke test: first N train examples")
    r.add_argument("--max-dev", type=int, default=None, help="smoke test: first N dev examples")
    r.add_argument("--difficulties", nargs="*", help="only these difficulty names")
    r.add_argument("--round", type=int, default=1, choices=[1, 2], help="PLAN (1) or PLAN2 (2)")
    p = sub.add_parser("report")
    p.add_argument("--runs", required=True)
    p.add_argument("--preset", choices=["cpu"], default=None, help="the default study's CPU scale")
    p.add_argument("--data", default=None, help="the build's --out (default: RUNS/../data)")
    args = parser.parse_args()
    apply_preset(args.preset)
    if args.command == "build":
        build(args)
    elif args.command == "run":
        run(args)
    else:
        print(report_text(Path(args.runs) / "results.jsonl", args.data))


if __name__ == "__main__":
    main()
