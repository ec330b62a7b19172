"""Measurements of the paper-scale rehearsal (config/paper-rehearsal.yaml) and the projection of the
whole paper study (config/paper.yaml) in GPU-hours, per model and per stage.

    python benchmarks/rehearsal_report.py targets [--configfile CONFIG...]   # the rehearsal's targets
    python benchmarks/rehearsal_report.py report --root DIR [--configfile ...] [--paper ...] [--json OUT]
    python benchmarks/rehearsal_report.py study-dir [--configfile CONFIG...]  # results/<study.name>

``targets`` prints the outputs of every GPU rule of the rehearsal (one per line, for snakemake's
command line): evaluations, head scores of the trained conditions, NIAH, knockout and patching,
whose inputs pull in the pools and trainings. ``report`` reads, under DIR (a rehearsal's working
directory or its collected copy), in the study's folder ``results/<study.name>/`` (``study-dir``):

- per GPU job, ``logs/<rule>/...benchmark.tsv`` (wall seconds ``s``, host ``max_rss``) and the job
  log's ``peak GPU memory: A GiB allocated, R GiB reserved`` line (synthctx.logging_utils);
- the job's output Parquet (row counts, provenance metadata: in-job seconds, examples, tokens).

Per job: *units* of work (what a paper job has more of), *work* seconds (the units' loop, without
process start and model load) and *overhead* = wall - work. Units per rule:

| rule | unit | work seconds from |
|---|---|---|
| synth_pool | generated token | pool metadata: total - engine seconds |
| train_adapter | example-epoch (paper: batch 1; per optimizer step = x batch x accumulation) | adapter metadata |
| evaluate_task | (example, condition) decode | predictions metadata (includes one model load per condition) |
| heads | example decoded with head capture | log: "N examples, adapter=" line to the peak-memory line |
| niah_heads | NIAH decode (scaled by mean haystack length) | log: "NIAH set1" line to the peak-memory line |
| knockout | (example, intervention run) decode | knockout metadata |
| patching | (example, intervention run) decode | patching metadata |

Projection of one paper job = overhead + paper units x seconds per unit (evaluate_task also: one
model load per condition, the load estimated from the same model's knockout/heads overheads;
patching: seconds per unit scaled from the measured share of lockstep runs to paper's 3 of 4,
a lockstep step counting as two single-model steps).
Seconds per unit of a (rule, model, task) is the largest over its rehearsal jobs (conservative:
e.g. symbolic examples are shorter than real ones); a paper task the rehearsal did not run takes
the rule's largest, scaled by prompt tokens (--task-tokens TASK=N, one tokenizer for all tasks)
for the rules whose unit is one prompt (linear in length: from a 32K task down to a shorter one an
upper bound, since attention grows faster than linearly). A (rule, model) the rehearsal did not
reach can be given as another rule's rate times a measured cost ratio, with its measured peak
(--estimate; the projection marks it), e.g. patching from knockout with the ratio of
benchmarks/probe_paper_memory.py's patching and knockout calls. Paper job counts and units follow config/paper.yaml: generation.examples_per_variant
per synthetic condition, Real (Full) = data.max_train_examples or, where that is null (all remaining
train examples), the count given with --real-full TASK=N (known only once the full data is built),
Real (Limited) = data.limited_fraction of it; eval/heads/causal example counts, 2 + draws
knockout runs, 4 patching runs, 2 NIAH sets x needles x lengths x depths, pool plan x max_new_tokens.
The pools and evaluations ran HF generate here; paper.yaml runs them on vLLM, so their projection
is an upper bound. Random weights decode until max_new_tokens (no early stop), also an upper bound.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
REHEARSAL_CONFIGS = ["config.yaml", "config/paper.yaml", "config/paper-rehearsal.yaml"]
PAPER_CONFIGS = ["config.yaml", "config/paper.yaml"]
GPU_RULES = ("synth_pool", "train_adapter", "evaluate_task", "heads", "niah_heads", "knockout", "patching")
STAGES = {"synth_pool": "synth", "train_adapter": "train", "evaluate_task": "evaluate", "heads": "heads",
          "niah_heads": "heads", "knockout": "causal", "patching": "causal"}
UNIT_NAMES = {"synth_pool": "token", "train_adapter": "example-epoch", "evaluate_task": "example x condition",
              "heads": "example", "niah_heads": "NIAH decode", "knockout": "example x run",
              "patching": "example x run"}
# PyTorch's reserved pool must fit an 80 GB card beside the CUDA context (~0.5-1 GiB): ours, 76 GiB.
FIT_80GB_GIB = 76.0
# Slurm runtime requests: projected longest job x this margin, rounded up to whole hours (ours).
RUNTIME_MARGIN = 1.5
PATCH_RUNS = 4  # none + intersection, complement, random (synthctx.causal.head_sets.PATCH_SETS)
# Share of a paper patching job's runs that step donor and recipient in lockstep: the three patch
# sets, all non-empty for trained models (the rehearsal's random models leave the complement
# empty, so fewer of its runs are lockstep). A lockstep step costs about two single-model steps.
PAPER_LOCKSTEP_FRACTION = 3 / PATCH_RUNS

PEAK_RE = re.compile(r"peak GPU memory: ([\d.]+) GiB allocated, ([\d.]+) GiB reserved")
STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)
HEADS_START_RE = re.compile(r"\d+ examples, adapter=")
NIAH_START_RE = re.compile(r"NIAH set1: needles")
PATCH_SETS_RE = re.compile(r"sets (\{[^}]*\})")


# ---------------------------------------------------------------- configs


def merge(base: dict, update: Mapping) -> dict:
    """Snakemake's --configfile semantics: nested mappings merge, everything else replaces."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = json.loads(json.dumps(value))
    return base


def load_config(paths: Sequence[str | Path], root: Path = REPO) -> dict:
    import yaml

    config: dict = {}
    for path in paths:
        path = Path(path)
        merge(config, yaml.safe_load((path if path.is_absolute() else root / path).read_text()) or {})
    return config


def study_dir(config: Mapping) -> str:
    """The study's folder, relative to the working directory (rules/common.smk study_path)."""
    return f"results/{config['study']['name']}"


def eval_count(config: Mapping, task: str) -> int:
    from synthctx.study import task_data_settings

    return task_data_settings(config, task)[1]


def conditions(config: Mapping, task: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """(trained, evaluated = trained + nonft, synthetic) conditions of a config for ``task`` (its
    first task when None), from the study's registry: real, synthetic, user datasets and the
    training recipes' conditions, as the rules expand them."""
    from synthctx import study as vocabulary

    task = task or config["study"]["tasks"][0]
    vocabulary.register_from_config(config)
    trained = vocabulary.trained_conditions(config, task)
    return trained, vocabulary.evaluated_conditions(config, task), list(config["study"]["synthetic_conditions"])


def causal_conditions(config: Mapping) -> tuple[list[str], list[str]]:
    """Knockout and patching conditions, as rules/causal.smk takes them (config_checks)."""
    from synthctx.config_checks import causal_conditions as checked

    return checked(config)


def rehearsal_targets(config: Mapping) -> list[str]:
    """Outputs of every GPU rule of a study (their inputs pull in pools, variants and trainings)."""
    knockout, patch = causal_conditions(config)
    study = study_dir(config)
    targets = []
    for model in config["study"]["models"]:
        for task in config["study"]["tasks"]:
            trained, _, _ = conditions(config, task)
            targets.append(f"{study}/eval/{model}/{task}/predictions.parquet")
            targets += [f"{study}/heads/{model}/{task}/{c}.parquet" for c in trained]
            targets += [f"{study}/causal/{model}/{task}/{c}/knockout.parquet" for c in knockout]
            targets += [f"{study}/causal/{model}/{task}/{c}/patching.parquet" for c in patch]
        targets += [f"{study}/heads/{model}/niah/set1.parquet", f"{study}/heads/{model}/niah/set2.parquet"]
    return targets


def paper_model_of(config: Mapping) -> dict[str, str]:
    """Rehearsal model -> the paper model whose shape it has (source.shape_of; itself otherwise)."""
    return {name: spec["source"].get("shape_of", name) for name, spec in config["models"].items()}


# ---------------------------------------------------------------- measurements


@dataclass
class Measure:
    rule: str
    model: str  # the paper model it stands for
    task: str  # "" for niah_heads
    condition: str  # "" for pools / evaluation / niah
    wall_s: float | None
    work_s: float | None
    units: float
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    max_rss_mb: float | None = None
    reloads: int = 0  # model loads inside work_s (evaluate_task: one per condition)
    mean_length: float | None = None  # niah_heads: mean haystack length of the decodes
    lockstep_fraction: float | None = None  # patching: share of its runs with the donor in lockstep
    notes: list[str] = field(default_factory=list)

    @property
    def per_unit_s(self) -> float | None:
        seconds = self.work_s if self.work_s is not None else self.wall_s
        return seconds / self.units if seconds is not None and self.units else None


def read_benchmark(path: Path) -> tuple[float | None, float | None]:
    """(wall seconds, max RSS MB) of a Snakemake benchmark TSV (last row: the last attempt)."""
    if not path.exists():
        return None, None
    lines = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2:
        return None, None
    header, row = lines[0], lines[-1]
    values = dict(zip(header, row))

    def number(key):
        try:
            return float(values[key])
        except (KeyError, ValueError):
            return None

    return number("s"), number("max_rss")


def parse_peak(log_text: str) -> tuple[float | None, float | None]:
    found = PEAK_RE.findall(log_text)
    if not found:
        return None, None
    allocated, reserved = found[-1]
    return float(allocated), float(reserved)


def seconds_between(log_text: str, start: re.Pattern) -> float | None:
    """Seconds from the first log line matching ``start`` to the peak-memory line (else the last
    timestamped line): a job's work without start-up and model load."""
    stamps = [(m.start(), datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")) for m in STAMP_RE.finditer(log_text)]
    match = start.search(log_text)
    if not stamps or not match:
        return None
    begin = [t for pos, t in stamps if pos <= match.start()]
    peak = PEAK_RE.search(log_text)
    end = [t for pos, t in stamps if peak and pos <= peak.start()] or [stamps[-1][1]]
    if not begin:
        return None
    return (end[-1] - begin[-1]).total_seconds()


def _meta(path: Path) -> dict[str, Any]:
    from synthctx.schema import read_metadata

    return read_metadata(path)


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _job(root: Path, rule: str, log: Path, model: str, task: str, condition: str) -> Measure:
    wall, rss = read_benchmark(log.with_suffix(".benchmark.tsv"))
    text = log.read_text(errors="replace") if log.exists() else ""
    allocated, reserved = parse_peak(text)
    m = Measure(rule, model, task, condition, wall, None, 0, allocated, reserved, rss)
    if log.exists() and allocated is None:
        m.notes.append("no peak GPU memory line")
    return m


def collect(root: str | Path, config: Mapping) -> list[Measure]:
    """Every GPU job of the rehearsal under ``root`` with its measures (models mapped to the
    paper models they stand for): logs and outputs in the study's folder, root/results/<study.name>/."""
    study = Path(root) / study_dir(config)
    paper = paper_model_of(config)
    out: list[Measure] = []
    generator = config["generation"]["generator_model"]
    for log in sorted((study / "logs" / "synth_pool").glob("*.log")):
        task = log.stem
        m = _job(study, "synth_pool", log, paper.get(generator, generator), task, "")
        pool = study / "synth" / task / "pool.parquet"
        if pool.exists():
            stats = _meta(pool).get("stats", {})
            m.units = float(stats.get("output_tokens", 0))
            if "total_seconds" in stats:
                m.work_s = float(stats["total_seconds"]) - float(stats.get("engine_seconds", 0.0))
        out.append(m)
    for log in sorted((study / "logs" / "train_adapter").glob("*/*/*.log")):
        model, task, condition = log.parts[-3], log.parts[-2], log.stem
        m = _job(study, "train_adapter", log, paper.get(model, model), task, condition)
        curve = study / "adapters" / model / task / condition / "train_curve.parquet"
        if curve.exists():
            meta = _meta(curve)
            summary, settings = meta.get("summary", {}), meta.get("settings", {})
            m.units = float(summary.get("examples", 0)) * float(settings.get("epochs", 1))
            m.work_s = summary.get("seconds")
        out.append(m)
    for log in sorted((study / "logs" / "evaluate_task").glob("*/*.log")):
        model, task = log.parts[-2], log.stem
        m = _job(study, "evaluate_task", log, paper.get(model, model), task, "")
        predictions = study / "eval" / model / task / "predictions.parquet"
        if predictions.exists():
            meta = _meta(predictions)
            m.units = float(_rows(predictions))
            m.work_s = meta.get("seconds")
            m.reloads = (len(meta.get("adapters", {})) + 1) if meta.get("backend") == "hf" else 0
        out.append(m)
    for log in sorted((study / "logs" / "heads").glob("*/*/*.log")):
        model, task, condition = log.parts[-3], log.parts[-2], log.stem
        m = _job(study, "heads", log, paper.get(model, model), task, condition)
        scores = study / "heads" / model / task / f"{condition}.parquet"
        if scores.exists():
            m.units = float(_meta(scores).get("n_seen", 0))
            m.work_s = seconds_between(log.read_text(errors="replace"), HEADS_START_RE)
        out.append(m)
    for log in sorted((study / "logs" / "heads").glob("*/niah.log")):
        model = log.parts[-2]
        m = _job(study, "niah_heads", log, paper.get(model, model), "", "")
        sets = [study / "heads" / model / "niah" / f"set{i}.parquet" for i in (1, 2)]
        if all(s.exists() for s in sets):
            metas = [_meta(s) for s in sets]
            m.units = float(sum(meta.get("n_seen", 0) for meta in metas))
            lengths = metas[0].get("heads", {}).get("niah", {}).get("lengths") or []
            m.mean_length = statistics.fmean(lengths) if lengths else None
            m.work_s = seconds_between(log.read_text(errors="replace"), NIAH_START_RE)
        out.append(m)
    for kind in ("knockout", "patching"):
        for log in sorted((study / "logs" / "causal" / kind).glob("*/*/*.log")):
            model, task, condition = log.parts[-3], log.parts[-2], log.stem
            m = _job(study, kind, log, paper.get(model, model), task, condition)
            table = study / "causal" / model / task / condition / f"{kind}.parquet"
            if table.exists():
                import pandas as pd

                frame = pd.read_parquet(table, columns=["intervention", "heads"])
                m.units = float(len(frame))
                m.work_s = _meta(table).get("seconds")
                hooked = (frame["intervention"] != "none") & frame["heads"].map(lambda h: len(json.loads(h)) > 0)
                if kind == "patching":
                    m.lockstep_fraction = float(hooked.mean()) if len(frame) else None
                    m.notes.append(f"donor in lockstep on {hooked.mean():.0%} of decodes")
                if len(frame) and not hooked.any():
                    m.notes.append("every head set empty (no head scored > 0): no hooks ran")
            out.append(m)
    return out


# ---------------------------------------------------------------- the paper study's jobs


@dataclass
class PaperJob:
    rule: str
    model: str
    task: str
    condition: str
    units: float
    reloads: int = 0
    mean_length: float | None = None


def train_examples(config: Mapping, task: str, condition: str, synthetic: Sequence[str],
                   real_full_examples: Mapping[str, int]) -> int:
    """Training examples of one paper condition (see the module docstring)."""
    data = config["data"]
    if condition in synthetic:
        return int(config["generation"]["examples_per_variant"])
    from synthctx.study import task_data_settings

    full = task_data_settings(config, task)[2]
    if full is None:
        if task not in real_full_examples:
            raise ValueError(f"max_train_examples is null for {task} (Real (Full) = every remaining train example): give "
                             f"its size for {task} with --real-full {task}=N")
        full = real_full_examples[task]
    if condition == "real_limited":
        return max(1, int(float(data["limited_fraction"]) * int(full) + 0.5))
    return int(full)


def paper_jobs(config: Mapping, real_full_examples: Mapping[str, int] | None = None) -> list[PaperJob]:
    """Every GPU job of a full study config, with its units of work (see the module docstring)."""
    from synthctx.synth.pool import plan_pool
    from synthctx.study import base_condition

    study, gen, train, heads, causal = (config[k] for k in ("study", "generation", "train", "heads", "causal"))
    tasks, models = list(study["tasks"]), list(study["models"])
    knockout, patch = causal_conditions(config)
    jobs: list[PaperJob] = []
    for task in tasks:
        haystack = config["data"]["summhay"]["num_documents"] if task == "summhay" else None
        items = len(plan_pool(task, int(gen["pool_size"]), int(study["seed"]), haystack))
        jobs.append(PaperJob("synth_pool", gen["generator_model"], task, "", items * int(gen["max_new_tokens"])))
    for model in models:
        for task in tasks:
            trained, evaluated, synthetic = conditions(config, task)
            n_eval = eval_count(config, task)
            for condition in trained:
                # a recipe condition trains on its base condition's set
                n = train_examples(config, task, base_condition(condition), synthetic, real_full_examples or {})
                jobs.append(PaperJob("train_adapter", model, task, condition, n * float(train["epochs"])))
            jobs.append(PaperJob("evaluate_task", model, task, "", n_eval * len(evaluated), reloads=len(evaluated)))
            for condition in evaluated:
                jobs.append(PaperJob("heads", model, task, condition, min(int(heads["examples"]), n_eval)))
            n_causal = min(int(causal["examples"]), n_eval)
            for condition in knockout:
                jobs.append(PaperJob("knockout", model, task, condition, n_causal * (2 + int(causal["random_draws"]))))
            for condition in patch:
                jobs.append(PaperJob("patching", model, task, condition, n_causal * PATCH_RUNS))
        niah = heads["niah"]
        decodes = 2 * int(niah["needles_per_set"]) * len(niah["lengths"]) * len(niah["depths"])
        jobs.append(PaperJob("niah_heads", model, "", "", decodes, mean_length=statistics.fmean(niah["lengths"])))
    return jobs


# ---------------------------------------------------------------- rates and projection


@dataclass
class Rate:
    rule: str
    model: str
    per_unit_s: dict[str, float]  # task -> seconds per unit (the largest of its jobs)
    overhead_s: float  # median wall - work
    load_s: float | None  # one model load (evaluate_task reloads), from the model's knockout/heads jobs
    mean_length: float | None = None
    peak_reserved_gib: float | None = None
    peak_allocated_gib: float | None = None
    max_rss_mb: float | None = None

    estimated_from: str | None = None  # set by --estimate: not measured, derived from another rule

    def unit_rate(self, task: str, task_tokens: Mapping[str, float] | None = None) -> tuple[float, str | None]:
        """(seconds per unit, basis) for a paper task: its own rate where the rehearsal ran it
        (basis None); otherwise the rule's largest rate, scaled by prompt tokens (task / that
        rate's task) when both are in task_tokens (linear in length: an upper bound going from 32K
        down, attention is super-linear)."""
        if task in self.per_unit_s:
            return self.per_unit_s[task], None
        base = max(self.per_unit_s, key=self.per_unit_s.get)
        if task_tokens and task in task_tokens and base in task_tokens:
            return self.per_unit_s[base] * task_tokens[task] / task_tokens[base], f"{task} from {base} x tokens"
        return self.per_unit_s[base], f"{task} from {base} (largest)"


def _median(values: Iterable[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rates(measures: Sequence[Measure]) -> dict[tuple[str, str], Rate]:
    """Seconds per unit per (rule, model, task), overheads and peaks, from complete measures."""
    done = [m for m in measures if m.units and (m.work_s is not None or m.wall_s is not None)]
    loads: dict[str, float] = {}
    for model in {m.model for m in done}:
        load = _median(m.wall_s - m.work_s for m in done if m.model == model and m.rule in ("knockout", "heads")
                       and m.wall_s is not None and m.work_s is not None)
        if load is not None:
            loads[model] = max(load, 0.0)
    out: dict[tuple[str, str], Rate] = {}
    for rule, model in sorted({(m.rule, m.model) for m in done}):
        jobs = [m for m in done if m.rule == rule and m.model == model]
        per_unit: dict[str, float] = {}
        for m in jobs:
            seconds = m.work_s if m.work_s is not None else m.wall_s
            if m.reloads and model in loads and seconds - m.reloads * loads[model] > 0:
                seconds -= m.reloads * loads[model]
            if m.lockstep_fraction is not None:  # to paper's share of lockstep runs
                seconds *= (1 + PAPER_LOCKSTEP_FRACTION) / (1 + m.lockstep_fraction)
            per_unit[m.task] = max(per_unit.get(m.task, 0.0), seconds / m.units)
        overhead = _median(m.wall_s - m.work_s for m in jobs if m.wall_s is not None and m.work_s is not None)
        peaks = [m for m in jobs if m.peak_reserved_gib is not None]
        out[(rule, model)] = Rate(
            rule, model, per_unit, max(overhead or 0.0, 0.0), loads.get(model),
            mean_length=_median(m.mean_length for m in jobs),
            peak_reserved_gib=max((m.peak_reserved_gib for m in peaks), default=None),
            peak_allocated_gib=max((m.peak_allocated_gib for m in peaks), default=None),
            max_rss_mb=max((m.max_rss_mb for m in jobs if m.max_rss_mb is not None), default=None))
    return out


# Rules whose unit is one prompt's prefill + decode (or training pass): their cost follows the
# prompt's length, so an unrun task scales by tokens. A pool's unit is a generated token.
TOKEN_SCALED_RULES = ("train_adapter", "evaluate_task", "heads", "knockout", "patching")


def job_rate(job: PaperJob, rate: Rate, task_tokens: Mapping[str, float] | None = None) -> tuple[float, str | None]:
    """(seconds per unit, basis) of one paper job: Rate.unit_rate, token scaling only for
    TOKEN_SCALED_RULES."""
    return rate.unit_rate(job.task, task_tokens if job.rule in TOKEN_SCALED_RULES else None)


def job_seconds(job: PaperJob, rate: Rate, task_tokens: Mapping[str, float] | None = None) -> float:
    per_unit = job_rate(job, rate, task_tokens)[0]
    if job.rule == "niah_heads" and job.mean_length and rate.mean_length:
        per_unit *= job.mean_length / rate.mean_length  # prefill-bound decodes: about linear in length
    seconds = rate.overhead_s + job.units * per_unit
    if job.reloads and rate.load_s:
        seconds += job.reloads * rate.load_s
    return seconds


def project(jobs: Sequence[PaperJob], table: Mapping[tuple[str, str], Rate],
            task_tokens: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Per (paper model, rule): jobs, units, GPU-hours and the longest job; rules without a
    measurement are listed with gpu_hours None. `basis` says where the rate came from: measured,
    scaled from another task by tokens, or estimated from another rule (--estimate)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        row = rows.setdefault((job.model, job.rule), {"model": job.model, "stage": STAGES[job.rule], "rule": job.rule,
                                                      "jobs": 0, "units": 0.0, "gpu_hours": 0.0, "max_job_hours": 0.0,
                                                      "basis": set()})
        row["jobs"] += 1
        row["units"] += job.units
        rate = table.get((job.rule, job.model))
        if rate is None:
            row["gpu_hours"] = row["max_job_hours"] = None
            continue
        basis = f"estimated: {rate.estimated_from}" if rate.estimated_from else job_rate(job, rate, task_tokens)[1]
        if basis:
            row["basis"].add(basis)
        hours = job_seconds(job, rate, task_tokens) / 3600
        if row["gpu_hours"] is not None:
            row["gpu_hours"] += hours
        row["max_job_hours"] = max(row["max_job_hours"], hours)
    for row in rows.values():
        row["basis"] = "; ".join(sorted(row["basis"])) or "measured"
    return sorted(rows.values(), key=lambda r: (r["model"], GPU_RULES.index(r["rule"])))


ESTIMATE_RE = re.compile(r"^(\w+):([\w.-]+)=(\w+):([\w.-]+)\*([\d.]+)(?:@([\d.]+))?$")


def add_estimates(table: dict[tuple[str, str], Rate], specs: Sequence[str],
                  model_names: Mapping[str, str]) -> dict[tuple[str, str], Rate]:
    """--estimate RULE:MODEL=FROM_RULE:FROM_MODEL*FACTOR[@PEAK_GIB]: a (rule, model) the rehearsal
    did not reach gets FROM's rate times FACTOR (e.g. a cost ratio measured by
    benchmarks/probe_paper_memory.py) and, if given, that peak reserved GiB. Models by the
    rehearsal's or the paper's name; a measured (rule, model) is never replaced."""
    out = dict(table)
    for spec in specs:
        match = ESTIMATE_RE.match(spec)
        if not match:
            raise ValueError(f"--estimate {spec!r}: expected RULE:MODEL=FROM_RULE:FROM_MODEL*FACTOR[@PEAK_GIB]")
        rule, model, src_rule, src_model, factor, peak = match.groups()
        model, src_model = model_names.get(model, model), model_names.get(src_model, src_model)
        for name in (rule, src_rule):
            if name not in GPU_RULES:
                raise ValueError(f"--estimate {spec!r}: {name!r} is not one of {', '.join(GPU_RULES)}")
        if (rule, model) in table:
            raise ValueError(f"--estimate {spec!r}: {rule} of {model} was measured; not replacing it")
        src = table.get((src_rule, src_model))
        if src is None:
            raise ValueError(f"--estimate {spec!r}: no measurement of {src_rule} for {src_model}")
        out[(rule, model)] = Rate(
            rule, model, {t: v * float(factor) for t, v in src.per_unit_s.items()}, src.overhead_s, src.load_s,
            mean_length=src.mean_length, peak_reserved_gib=float(peak) if peak else None,
            max_rss_mb=src.max_rss_mb, estimated_from=f"{src_rule} of {src_model} x {float(factor):g}")
    return out


def stage_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """model -> stage -> GPU-hours (None when a rule of the stage has no measurement), plus 'total'."""
    totals: dict[str, dict[str, float | None]] = {}
    for row in rows:
        per_model = totals.setdefault(row["model"], {})
        stage = row["stage"]
        if row["gpu_hours"] is None or per_model.get(stage, 0.0) is None:
            per_model[stage] = None
        else:
            per_model[stage] = per_model.get(stage, 0.0) + row["gpu_hours"]
    for per_model in totals.values():
        values = list(per_model.values())
        per_model["total"] = None if None in values else sum(values)
    return totals


def suggested_resources(rows: Sequence[Mapping[str, Any]], table: Mapping[tuple[str, str], Rate]) -> list[dict]:
    """Per rule: runtime (longest projected job x margin, whole hours), peak GPU memory over the
    models and whether it fits one 80 GB card, host memory (max RSS x margin)."""
    out = []
    for rule in GPU_RULES:
        mine = [r for r in rows if r["rule"] == rule and r["gpu_hours"] is not None]
        measured = [rate for (r, _), rate in table.items() if r == rule]
        if not mine or not measured:
            continue
        longest = max(r["max_job_hours"] for r in mine)
        peaked = [r for r in measured if r.peak_reserved_gib is not None]
        top = max(peaked, key=lambda r: r.peak_reserved_gib, default=None)
        peak = None if top is None else top.peak_reserved_gib
        rss = max((r.max_rss_mb for r in measured if r.max_rss_mb is not None), default=None)
        out.append({"rule": rule, "runtime_h": max(1, math.ceil(longest * RUNTIME_MARGIN)),
                    "peak_reserved_gib": peak, "fits_80gb": None if peak is None else peak <= FIT_80GB_GIB,
                    "peak_basis": None if top is None else ("given with --estimate" if top.estimated_from
                                                            else "measured"),
                    "mem_mb": None if rss is None else int(math.ceil(rss * RUNTIME_MARGIN / 1000) * 1000)})
    return out


# ---------------------------------------------------------------- output


def _f(value, digits=1):
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(measures: Sequence[Measure], table: Mapping, rows: Sequence[Mapping], paper_config: Mapping) -> str:
    train = paper_config["train"]
    step_examples = int(train["batch_size"]) * int(train["gradient_accumulation"])
    lines = ["## Rehearsal jobs", "",
             "| rule | model | task | condition | wall s | work s | units | s / unit | unit | peak alloc GiB | "
             "peak reserved GiB | fits 80 GB | notes |", "|" + "---|" * 13]
    for m in sorted(measures, key=lambda m: (GPU_RULES.index(m.rule), m.model, m.task, m.condition)):
        fits = "-" if m.peak_reserved_gib is None else ("yes" if m.peak_reserved_gib <= FIT_80GB_GIB else "**no**")
        lines.append(f"| {m.rule} | {m.model} | {m.task} | {m.condition} | {_f(m.wall_s)} | {_f(m.work_s)} | "
                     f"{_f(m.units, 0)} | {_f(m.per_unit_s, 3)} | {UNIT_NAMES[m.rule]} | {_f(m.peak_allocated_gib, 2)} | "
                     f"{_f(m.peak_reserved_gib, 2)} | {fits} | {'; '.join(m.notes)} |")
    lines += ["", f"Training: seconds per optimizer step = per example-epoch x {step_examples} "
              f"(paper: batch {train['batch_size']} x accumulation {train['gradient_accumulation']}).", "",
              "## Rates (largest per task)", "",
              "| rule | model | s / unit by task | overhead s | model load s | per optimizer step s |", "|---|---|---|---|---|---|"]
    for (rule, model), rate in sorted(table.items(), key=lambda kv: (GPU_RULES.index(kv[0][0]), kv[0][1])):
        by_task = ", ".join(f"{t or 'all'} {s:.3f}" for t, s in sorted(rate.per_unit_s.items()))
        step = _f(max(rate.per_unit_s.values()) * step_examples) if rule == "train_adapter" else "-"
        lines.append(f"| {rule} | {model} | {by_task} | {_f(rate.overhead_s)} | {_f(rate.load_s)} | {step} |")
    lines += ["", "## Projection of config/paper.yaml (GPU-hours, one GPU per job)", "",
              "| model | stage | rule | jobs | units | GPU-h | longest job h | rate basis |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['stage']} | {r['rule']} | {r['jobs']} | {_f(r['units'], 0)} | "
                     f"{_f(r['gpu_hours'], 2)} | {_f(r['max_job_hours'], 2)} | {r['basis']} |")
    totals = stage_totals(rows)
    stages = ["synth", "train", "evaluate", "heads", "causal"]
    lines += ["", "synth_pool and evaluate_task ran HF generate at the rehearsal's batch: upper bounds of "
              "paper.yaml's vLLM jobs.",
              "", "| model | " + " | ".join(stages) + " | total |", "|---|" + "---|" * (len(stages) + 1)]
    for model, per in totals.items():
        lines.append(f"| {model} | " + " | ".join(_f(per.get(s), 2) for s in stages) + f" | {_f(per['total'], 2)} |")
    lines += ["", "## Suggested per-rule resources (paper.yaml)", "",
              "| rule | runtime | peak reserved GiB | peak from | fits one 80 GB GPU | host mem_mb |",
              "|---|---|---|---|---|---|"]
    for s in suggested_resources(rows, table):
        fits = "-" if s["fits_80gb"] is None else ("yes" if s["fits_80gb"] else "**no**")
        lines.append(f"| {s['rule']} | {s['runtime_h']}h | {_f(s['peak_reserved_gib'], 2)} | {s['peak_basis'] or '-'} | "
                     f"{fits} | {_f(s['mem_mb'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    targets = sub.add_parser("targets", help="print the rehearsal's GPU-rule outputs")
    targets.add_argument("--configfile", nargs="+", default=REHEARSAL_CONFIGS,
                         help="config stack as snakemake gets it (config.yaml first)")
    report = sub.add_parser("report", help="measurements and the paper projection as markdown")
    report.add_argument("--root", default=".", help="the rehearsal's working directory (results/<study.name>/)")
    report.add_argument("--configfile", nargs="+", default=REHEARSAL_CONFIGS)
    report.add_argument("--paper", nargs="+", default=PAPER_CONFIGS, help="the config stack to project")
    report.add_argument("--json", help="also write the numbers as JSON here")
    report.add_argument("--real-full", nargs="*", default=[], metavar="TASK=N",
                        help="Real (Full) training examples per task where data.max_train_examples is null")
    report.add_argument("--task-tokens", nargs="*", default=[], metavar="TASK=N",
                        help="mean prompt tokens per example of each paper task (one tokenizer): a task the "
                             "rehearsal did not run is projected from the measured one scaled by this ratio")
    report.add_argument("--estimate", nargs="*", default=[], metavar="RULE:MODEL=FROM_RULE:FROM_MODEL*F[@GIB]",
                        help="a (rule, model) the rehearsal did not reach: FROM's rate x F (and peak GiB)")
    folder = sub.add_parser("study-dir", help="print the study's folder (results/<study.name>)")
    folder.add_argument("--configfile", nargs="+", default=REHEARSAL_CONFIGS)
    args = parser.parse_args(argv)
    if args.command == "targets":
        print("\n".join(rehearsal_targets(load_config(args.configfile, Path.cwd()))))
        return 0
    if args.command == "study-dir":
        print(study_dir(load_config(args.configfile, Path.cwd())))
        return 0
    config = load_config(args.configfile, Path.cwd())
    paper_config = load_config(args.paper, Path.cwd())
    measures = collect(args.root, config)
    table = add_estimates(rates(measures), args.estimate, paper_model_of(config))
    real_full = {k: int(v) for k, v in (item.split("=", 1) for item in args.real_full)}
    task_tokens = {k: float(v) for k, v in (item.split("=", 1) for item in args.task_tokens)}
    rows = project(paper_jobs(paper_config, real_full), table, task_tokens)
    sys.stdout.write(markdown(measures, table, rows, paper_config))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "measures": [asdict(m) for m in measures],
            "rates": {f"{r}|{m}": asdict(v) for (r, m), v in table.items()},
            "projection": rows, "totals": stage_totals(rows), "resources": suggested_resources(rows, table),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
