# Shared helpers: config checks that a JSON schema cannot express, wildcard constraints,
# path builders and the list of final targets. Functions only, no rules.

import json
import sys
import os
import re
from pathlib import Path

from synthctx import study as study_vocabulary
from synthctx.tasks import TASK_MODULES_ENV, get_task, task_modules_environment

# Registries first: tasks (built-in and study.task_modules) and conditions, then the checks of
# the task sections and per-task keys the JSON schema cannot make (synthctx.study.check_config).
study_vocabulary.check_config(config)
# Every job's process imports the same task modules (synthctx.tasks.TASK_MODULES_ENV).
os.environ[TASK_MODULES_ENV] = task_modules_environment(config["study"].get("task_modules") or [])

STUDY = config["study"]
MODELS = STUDY["models"]
TASKS = STUDY["tasks"]
SYNTHETIC = STUDY["synthetic_conditions"]
REAL = STUDY["real_conditions"]
TRAINED = REAL + SYNTHETIC
# The user's own training sets (config datasets:, kind "user"), each for the tasks it has a file for.
USER = study_vocabulary.user_condition_names(config)
# Conditions of the extra training recipes (config training_recipes), "<base>__<recipe>", each
# trained on its base condition's data; in task_trained / task_conditions like any other.
RECIPE = study_vocabulary.recipe_condition_names(config)
# Those of the synthetic conditions and user datasets: the points of their recipe's Figure 3.
RECIPE_POINTS = [c for c in RECIPE if study_vocabulary.base_condition(c) in SYNTHETIC + USER]
# Display labels of the user datasets and recipe conditions, a param of every rule that draws
# labels (study.job_labels; study.register_user_labels registers them in the job).
USER_LABELS = study_vocabulary.job_labels(config)


def task_trained(task):
    """The conditions trained for one task (built-in ones, then the user datasets covering it):
    every rule expanding over conditions asks this, so a (task, condition) without data is never requested."""
    return study_vocabulary.trained_conditions(config, task)


def task_conditions(task):
    """The conditions evaluated on one task: task_trained(task) plus the base model ("nonft")."""
    return study_vocabulary.evaluated_conditions(config, task)


def _config_error(key, message):
    raise ValueError(f"invalid config: {key}: {message}")


for _name in MODELS:
    if _name not in config["models"]:
        _config_error("study.models", f"unknown model {_name!r} (not under models:)")
if config["generation"]["generator_model"] not in config["models"]:
    _config_error("generation.generator_model", f"unknown model {config['generation']['generator_model']!r}")
for _name, _spec in config["models"].items():
    _kind = _spec["source"]["kind"]
    _needs = {
        "embedded_wheel": ["package", "version", "gguf_file", "sha256", "gguf_sha256"],
        "hub": ["hub_id", "revision"],
        "local": ["path"],
        "random_init": ["architecture", "config", "tokenizer_from", "seed"],
    }[_kind]
    for _field in _needs:
        if _field not in _spec["source"]:
            _config_error(f"models.{_name}.source.{_field}", f"required for source kind {_kind!r}")

from synthctx.heads.niah import NEEDLES as _NEEDLES

if 2 * int(config["heads"]["niah"]["needles_per_set"]) > len(_NEEDLES):
    _config_error(
        "heads.niah.needles_per_set",
        f"at most {len(_NEEDLES) // 2} (two disjoint sets of the " f"{len(_NEEDLES)} needles in synthctx.heads.niah)",
    )


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),
    task=study_vocabulary.wildcard_pattern(study_vocabulary.task_names()),
    condition="[a-z0-9_]+",
    synthetic=study_vocabulary.wildcard_pattern(study_vocabulary.condition_names("synthetic")),


# The study's folder: every output of its jobs (data, adapters, predictions, tables, figures,
# checkpoints, logs and benchmark files) lies under results/<study.name>/, so two studies with
# different names never overwrite each other. What does not depend on the study stays shared:
# prepared models and raw downloads under resources/, and their jobs' logs under logs/ (docs/DESIGN.md).
STUDY_DIR = f"results/{STUDY['name']}"


def study_path(relative):
    """``relative`` inside the study's folder, results/<study.name>/; {wildcards} stay in place."""
    return f"{STUDY_DIR}/{relative}"


def model_dir(model):
    """The prepared model directory (safetensors + tokenizer) a job loads (shared by every study)."""
    return f"resources/models/{model}"


def model_spec(model):
    return config["models"][model]


def load_settings(model):
    """load_model keyword arguments of a model (dtype, attention, RoPE theta, context budget);
    not its source: re-preparing the model is prepare_model's job."""
    from synthctx.models.loading import model_settings

    return model_settings(model_spec(model))


def raw_path(relative):
    """A raw dataset file: the user's local copy, or the download rule's output."""
    local = config["raw_data"]["local_dir"]
    if local:
        return str(Path(local) / relative)
    return f"resources/raw/{relative}"


def vllm_python():
    """Python of the vLLM environment (its own torch/transformers pins, see envs/vllm-cpu.yaml)."""
    return os.environ.get("SYNTHCTX_VLLM_PYTHON", ".venv-vllm/bin/python")


def train_data(model, task, condition):
    return study_path(f"data/{model}/{task}/train/{condition}.parquet")


def eval_data(model, task):
    return study_path(f"data/{model}/{task}/eval.parquet")


def adapter_dir(model, task, condition):
    return study_path(f"adapters/{model}/{task}/{condition}")


def all_targets():
    targets = []
    for model in MODELS:
        targets += evaluate_targets(model)
        targets += heads_targets(model)
        targets += analysis_targets(model)
        targets += causal_targets(model)
        targets += claims_targets(model)
        # the scorecard (probes reuse the study's jobs where their settings match) and its
        # comparison with Table 1: ~6 extra minutes on the CPU default (rules/scorecard.smk)
        targets += scorecard_targets(model) + scorecard_vs_study_targets(model)
    return targets


def on_gpu():
    """Whether the study's jobs run on GPUs (bfloat16 models); decides GPU resource requests."""
    return any(config["models"][m]["dtype"] != "float32" for m in MODELS)


def gpu_resources():
    """`gpu` resource of GPU rules: 1 when the study runs on GPUs, 0 on a CPU workstation."""
    return 1 if on_gpu() else 0


def use_vllm(backend):
    """Resolve a backend key (auto | vllm | hf): auto uses vLLM where its environment exists."""
    if backend == "auto":
        return Path(vllm_python()).exists() or vllm_python() == "python"
    return backend == "vllm"


def job_python(backend):
    """Interpreter of a job: the vLLM environment's for vLLM jobs, this one's otherwise."""
    return vllm_python() if use_vllm(backend) else sys.executable


# Scripts of shell: rules, by absolute path so that --directory and other working folders work.
SCRIPTS_DIR = str(Path(workflow.basedir) / "workflow" / "scripts")
