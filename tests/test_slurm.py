"""The Slurm profiles, and real workflow jobs through a real one-node Slurm cluster.

The cluster is started outside pytest (`bash tests/slurm/start.sh`, see docs/cluster.md and
`.ci/run`); the tests marked `slurm` skip when it is not up. Set SYNTHCTX_SLURM_START=1 to
let the first such test start it. Snakemake always runs under `timeout`: a wrong status
command makes the plugin wait forever (../shared/reference/slurm-local.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import MODEL_CACHE, REPO, SHARED_DATA
from slurm.workflow import link_model, snakemake_cmd, stub_stages

STATE = Path(os.environ.get("SYNTHCTX_SLURM_STATE", "/var/spool/synthctx-slurm"))
SLURM_PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"
LOCAL_PROFILE = REPO / "profiles" / "slurm-local" / "profile.yaml"
# Rules that need a GPU on a GPU study; every other rule is CPU work.
GPU_RULES = {"synth_pool", "train_adapter", "evaluate_task", "heads", "niah_heads", "knockout", "patching",
             "scorecard_train", "scorecard_heads"}


def eval_resource(value, attempt: int):
    """A profile resource value as Snakemake evaluates it (expressions of `attempt`)."""
    if not isinstance(value, str):
        return value
    try:
        return eval(value, {"attempt": attempt})  # noqa: S307 - our own profile
    except (NameError, SyntaxError):
        return value


# ---- the cluster profile itself (no cluster needed) --------------------------------------


@pytest.fixture(scope="module")
def slurm_profile() -> dict:
    return yaml.safe_load(SLURM_PROFILE.read_text())


def test_slurm_profile_top_level(slurm_profile):
    assert slurm_profile["executor"] == "slurm"
    assert slurm_profile["jobs"] >= 1
    assert slurm_profile["latency-wait"] >= 30
    assert slurm_profile["retries"] >= 1
    assert slurm_profile["rerun-incomplete"] is True
    assert slurm_profile["keep-going"] is True
    defaults = slurm_profile["default-resources"]
    assert defaults["slurm_partition"]
    assert "gpu" not in defaults and "gpu_model" not in defaults, "CPU rules must not ask for GPUs"
    assert eval_resource(defaults["mem_mb"], 2) > eval_resource(defaults["mem_mb"], 1)


@pytest.mark.parametrize("rule", sorted(GPU_RULES))
def test_slurm_profile_gpu_rules(slurm_profile, rule):
    res = slurm_profile["set-resources"][rule]
    assert res["gpu"] == 1
    assert res["cpus_per_gpu"] >= 1
    assert res["slurm_partition"] and res["slurm_partition"] != slurm_profile["default-resources"]["slurm_partition"]
    # Runtime with a unit (profile numbers were read as seconds in Snakemake 9.16-9.19).
    assert re.fullmatch(r"\d+(m|h|d)", res["runtime"]), res["runtime"]
    # Memory grows with the attempt, so a retry after an OOM kill gets more.
    mem1, mem2 = eval_resource(res["mem_mb"], 1), eval_resource(res["mem_mb"], 2)
    assert isinstance(mem1, int) and mem2 > mem1 >= 16000


def test_slurm_profile_only_known_rules(slurm_profile):
    assert set(slurm_profile["set-resources"]) <= GPU_RULES
    local = yaml.safe_load(LOCAL_PROFILE.read_text())
    assert set(local["set-resources"]) == set(slurm_profile["set-resources"])
    assert all(local["set-resources"][r]["gpu"] == 1 for r in GPU_RULES)


def test_slurm_profile_dry_run(tmp_path):
    """Snakemake parses the profile and gives GPU rules that exist their GPU request."""
    proc = subprocess.run(
        snakemake_cmd("-n", "--workflow-profile", str(REPO / "profiles" / "slurm"),
                      "--configfile", str(REPO / "config" / "paper.yaml"), timeout=240),
        cwd=REPO, capture_output=True, text=True,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "Missing input files" in out and stub_stages():
        pytest.skip(f"stages still stubs: {stub_stages()}")
    assert proc.returncode == 0, out[-5000:]
    assert "profiles/slurm" in out
    blocks = re.split(r"\n(?=\[.*\]\n(?:local)?rule )", out)
    seen = set()
    for block in blocks:
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        res = re.search(r"resources: (.*)", block)
        if not m or not res:
            continue
        rule, resources = m.group(1), res.group(1)
        seen.add(rule)
        if rule in GPU_RULES:
            assert "gpu=1" in resources and "cpus_per_gpu=8" in resources, (rule, resources)
            assert "slurm_partition=gpu" in resources, (rule, resources)
        else:
            assert "gpu=1" not in resources, (rule, resources)
    assert seen, "the dry-run listed no jobs"


# ---- a real cluster ----------------------------------------------------------------------


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def cluster():
    """The local cluster of tests/slurm/start.sh; skip when it is not up."""
    if os.environ.get("SYNTHCTX_SLURM_START") == "1":
        subprocess.run(["bash", str(REPO / "tests" / "slurm" / "start.sh")], check=True, timeout=600)
    if shutil.which("scontrol") is None or not (STATE / "etc" / "slurm.conf").exists():
        pytest.skip("no local Slurm cluster (run: bash tests/slurm/start.sh)")
    ping = _run(["scontrol", "ping"])
    if "UP" not in ping.stdout:
        pytest.skip(f"slurmctld is not up: {ping.stdout.strip()} {ping.stderr.strip()}")
    # sacct only works with slurmdbd (SLURM_LOCAL_DBD=1); otherwise the plugin must use squeue.
    has_sacct = _run(["sacct", "-n", "-X", "-S", "now-1minutes"]).returncode == 0
    status_args = [] if has_sacct else ["--slurm-status-command", "squeue"]
    return SimpleNamespace(has_sacct=has_sacct, status_args=status_args)


def slurm_job_ids(workdir: Path) -> dict[str, list[str]]:
    """rule -> Slurm job ids, from the plugin's kept logs (rule_<rule>/<wildcards>/<jobid>.log)."""
    jobs: dict[str, list[str]] = {}
    for log in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule = next(p for p in log.relative_to(workdir / ".snakemake" / "slurm_logs").parts if p.startswith("rule_"))
        jobs.setdefault(rule.removeprefix("rule_"), []).append(log.stem)
    return jobs


def accounting(cluster, job_ids: list[str]) -> dict[str, dict[str, str]]:
    """job id -> state and allocated TRES, from sacct (slurmdbd) or scontrol (recent jobs)."""
    rows = {}
    if cluster.has_sacct:
        out = _run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                    "-o", "JobID,State,Partition,AllocTRES,Comment"]).stdout
        for line in out.splitlines():
            jid, state, partition, tres, comment = line.split("|")
            rows[jid] = {"state": state, "partition": partition, "tres": tres, "comment": comment}
    else:
        for jid in job_ids:
            out = _run(["scontrol", "-d", "show", "job", jid]).stdout
            state = re.search(r"JobState=(\S+)", out)
            tres = re.search(r"\bTRES=(\S+)", out)
            part = re.search(r"Partition=(\S+)", out)
            row = {"state": state.group(1) if state else "?", "tres": tres.group(1) if tres else "",
                   "partition": part.group(1) if part else "", "comment": ""}
            # Without accounting, TRES omits GRES; the allocated GPUs are in JOB_GRES.
            gres = re.search(r"JOB_GRES=gpu(?::[^:\s]+)?:(\d+)", out)
            if gres:
                row["tres"] += f",gres/gpu={gres.group(1)}"
            rows[jid] = row
    return rows


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_canary(cluster, tmp_path):
    """The cluster and profiles/slurm-local alone: a CPU job, then a GPU job on a fake GPU."""
    proc = subprocess.run(
        snakemake_cmd("-s", str(REPO / "tests" / "slurm" / "canary.smk"), "--workflow-profile",
                      str(REPO / "profiles" / "slurm-local"), *cluster.status_args, timeout=300),
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    cpu = (tmp_path / "canary" / "cpu.txt").read_text()
    gpu = (tmp_path / "canary" / "gpu.txt").read_text()
    assert re.match(r"job=\d+ gpus=none", cpu), cpu
    # Slurm bound the fake GPU 0 to the job (CUDA_VISIBLE_DEVICES set by the GRES plugin).
    assert re.match(r"job=\d+ gpus=0\b", gpu), gpu
    jobs = slurm_job_ids(tmp_path)
    assert set(jobs) == {"cpu_step", "train_adapter"}
    acct = accounting(cluster, jobs["cpu_step"] + jobs["train_adapter"])
    assert all(row["state"] == "COMPLETED" for row in acct.values()), acct
    assert "gres/gpu=1" in acct[jobs["train_adapter"][0]]["tres"], acct
    assert "gres/gpu" not in acct[jobs["cpu_step"][0]]["tres"], acct
    if cluster.has_sacct:  # the plugin's --comment names the rule (AccountingStoreFlags=job_comment)
        assert acct[jobs["train_adapter"][0]]["comment"] == "rule_train_adapter", acct


def _study_rules() -> set[str]:
    out = subprocess.run(snakemake_cmd("--list-rules", timeout=120), cwd=REPO, capture_output=True, text=True)
    return set(out.stdout.split())


def scratch_study(tmp_path: Path) -> dict:
    """A scratch study directory: config.yaml + tests/configs/tiny.yaml (with an absolute raw
    data path) and the prepared embedded model, hard-linked in (never symlinked: Snakemake
    deletes a job's outputs before it runs and after it fails, and through a symlink that
    would hit the shared copy), so prepare_model (a local rule) has nothing to do."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    if not (MODEL_CACHE / "config.json").exists():
        pytest.skip(f"prepared model missing at {MODEL_CACHE}")
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    tiny = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    tiny.setdefault("raw_data", {})["local_dir"] = str(SHARED_DATA)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    link_model(MODEL_CACHE, tmp_path / "resources" / "models" / "smollm2-135m")
    # `shell:` rules that call workflow/scripts/*.py by a relative path need it in the
    # working directory (read-only here).
    (tmp_path / "workflow").symlink_to(REPO / "workflow", target_is_directory=True)
    return tiny


def run_through_slurm(cluster, workdir: Path, targets: list[str], *extra: str, timeout: int = 500):
    proc = subprocess.run(
        snakemake_cmd(*targets, "-s", str(REPO / "Snakefile"), "--workflow-profile",
                      str(REPO / "profiles" / "slurm-local"), *cluster.status_args,
                      "--configfile", str(workdir / "tiny.yaml"), *extra, timeout=timeout),
        cwd=workdir, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    # Ran through Slurm: every job has a kept Slurm log and a COMPLETED Slurm job.
    jobs = slurm_job_ids(workdir)
    acct = accounting(cluster, [j for ids in jobs.values() for j in ids])
    assert acct and all(row["state"] == "COMPLETED" for row in acct.values()), acct
    return jobs, acct


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.shared_data
def test_slurm_real_data_rule(cluster, tmp_path):
    """The study's real-data rule for one task through Slurm, scheduled on the fake GPU (a
    `--set-resources` request, exactly as a GPU rule gets from the profile); then its outputs."""
    import pandas as pd

    if "build_real_data" not in _study_rules():
        pytest.skip("rule build_real_data not written yet")
    tiny = scratch_study(tmp_path)
    model, task = "smollm2-135m", "mdqa"
    study = f"results/{tiny['study']['name']}"
    targets = [f"{study}/data/{model}/{task}/eval.parquet", f"{study}/data/{model}/{task}/train/real_full.parquet"]
    jobs, acct = run_through_slurm(cluster, tmp_path, targets, "--set-resources",
                                   "build_real_data:gpu=1", "build_real_data:gpu_model=fake")
    assert set(jobs) == {"build_real_data"}, jobs
    assert "gres/gpu=1" in acct[jobs["build_real_data"][-1]]["tres"], acct
    # Outputs are right: the configured eval size, a capped train set, one task, disjoint splits.
    eval_df = pd.read_parquet(tmp_path / targets[0])
    train_df = pd.read_parquet(tmp_path / targets[1])
    assert len(eval_df) == tiny["data"]["eval_examples"]
    assert 0 < len(train_df) <= tiny["data"]["max_train_examples"]
    assert set(eval_df["task"]) == {task} and set(eval_df["split"]) == {"eval"}
    assert set(train_df["split"]) == {"train"}
    assert not set(eval_df["example_id"]) & set(train_df["example_id"])


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.shared_data
def test_slurm_gpu_rule(cluster, tmp_path):
    """A GPU rule of the study (synth_pool) gets its GPU from profiles/slurm-local's
    set-resources (`--gpus=fake:1`) and writes its pool. Slow on a busy 2-core machine."""
    import pandas as pd

    if "synth_pool" not in _study_rules():
        pytest.skip("rule synth_pool not written yet")
    tiny = scratch_study(tmp_path)
    target = f"results/{tiny['study']['name']}/synth/mdqa/pool.parquet"
    jobs, acct = run_through_slurm(cluster, tmp_path, [target], timeout=590)
    assert set(jobs) == {"synth_pool"}, jobs
    assert "gres/gpu=1" in acct[jobs["synth_pool"][-1]]["tres"], acct
    pool = pd.read_parquet(tmp_path / target)
    # One row per planned document (rejects are kept with their status, never dropped).
    assert len(pool) == tiny["generation"]["pool_size"]
    assert set(pool["task"]) == {"mdqa"}
