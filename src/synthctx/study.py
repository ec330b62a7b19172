"""The study's vocabulary: its conditions (kind, order, display label) and access to its tasks.

Every table, figure and summary takes its condition labels and order from here, and the
config schema's condition enums and the Snakemake wildcard constraints are checked against
(or built from) it (tests/test_study.py fails when they drift). Tasks live in their own
registry, :mod:`synthctx.tasks` (one module per task); this module re-exports the look-ups.

A condition is one of four kinds:

- ``real``: trained on the task's real training examples (Real (Full), Real (Limited));
- ``synthetic``: trained on a synthetic variant; built-in ones name their two axes
  (concept expression x context diversity), e.g. ``high_low``;
- ``evaluation_only``: evaluated but never trained, never head-scored, knocked out or patched:
  ``nonft`` (the base model on the task's prompts) and ``closed_book`` (the base model given the
  question without the documents, :meth:`synthctx.tasks.base.Task.closed_book_content`), chosen by
  config ``study.evaluation_conditions``;
- ``user``: trained on a user-supplied dataset (registered from config).

A condition the config names and nobody registered gets its name as label, so a study can
add one by config alone (:func:`register_from_config`).

A training recipe (config ``training_recipes``: a second LoRA module set, e.g. every linear
layer) derives one condition per trained condition it names: ``<base>__<recipe>``
(:data:`RECIPE_SEPARATOR`), of the base condition's kind, trained on the base condition's data,
labelled "<base label>, <recipe label>". Everything that expands over trained conditions
(:func:`trained_conditions`) takes the derived ones too; its reference for head similarity and
the claims, and its patching donor, is the Real (Full) model of the same recipe
(:func:`recipe_reference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from synthctx.tasks import get_task, task_names  # noqa: F401  (re-exported: the task registry)

KINDS = ("real", "synthetic", "evaluation_only", "user")
# Display words of the synthetic axes (a task may rename one, e.g. SummHay's "Simplified").
AXIS_LABELS = {"high": "High", "low": "Low"}
TRIVIAL = "trivial"  # Table 1's trivial-baseline row (not a condition: nothing is trained or run)
NONFT = "nonft"
CLOSED_BOOK = "closed_book"


@dataclass(frozen=True)
class Condition:
    name: str
    kind: str
    label: str
    # (concept expression, context diversity) of an axis-named synthetic condition
    axes: tuple[str, str] | None = None
    # False: evaluated on the task's closed-book prompt (the question without the documents)
    with_documents: bool = True
    # A recipe condition (config training_recipes): the condition whose data it trains on, the
    # recipe's name and its display words (the label's suffix)
    base: str | None = None
    recipe: str | None = None
    recipe_label: str | None = None

    @property
    def trained(self) -> bool:
        return self.kind != "evaluation_only"


_CONDITIONS: dict[str, Condition] = {}


def register_condition(condition: Condition, *, replace: bool = False) -> Condition:
    """Add a condition to the vocabulary (order of registration = display order)."""
    if condition.kind not in KINDS:
        raise ValueError(f"condition {condition.name!r}: kind {condition.kind!r} is not one of {KINDS}")
    if condition.name in _CONDITIONS and not replace:
        if _CONDITIONS[condition.name] != condition:
            raise ValueError(f"condition {condition.name!r} is already registered as {_CONDITIONS[condition.name]}")
        return _CONDITIONS[condition.name]
    _CONDITIONS[condition.name] = condition
    return condition


def _axis_condition(concept: str, context: str) -> Condition:
    name = f"{concept}_{context}"
    return Condition(name, "synthetic", f"{AXIS_LABELS[concept]} / {AXIS_LABELS[context]}", (concept, context))


# The built-in vocabulary, in display order (heatmaps, Figure 4, Table 3).
for _condition in (
    Condition("real_full", "real", "Real Data (Full)"),
    Condition("real_limited", "real", "Real Data (Limited)"),
    _axis_condition("high", "high"),
    _axis_condition("high", "low"),
    _axis_condition("low", "high"),
    _axis_condition("low", "low"),
    Condition("symbolic", "synthetic", "Symbolic / Symbolic"),
    Condition(NONFT, "evaluation_only", "Non-FT"),
    # The paper's rebuttal baseline: can parametric memory answer without the documents?
    Condition(CLOSED_BOOK, "evaluation_only", "Closed book", with_documents=False),
):
    register_condition(_condition)

BUILTIN_SYNTHETIC = tuple(c.name for c in _CONDITIONS.values() if c.kind == "synthetic")
BUILTIN_REAL = tuple(c.name for c in _CONDITIONS.values() if c.kind == "real")
BUILTIN_EVALUATION_ONLY = tuple(c.name for c in _CONDITIONS.values() if c.kind == "evaluation_only")


def conditions(kind: str | None = None) -> list[Condition]:
    """Registered conditions (of one kind), in display order."""
    return [c for c in _CONDITIONS.values() if kind is None or c.kind == kind]


def condition_names(kind: str | None = None) -> list[str]:
    return [c.name for c in conditions(kind)]


def get_condition(name: str) -> Condition | None:
    return _CONDITIONS.get(name)


def condition_label(condition: str, task: str | None = None) -> str:
    """The display label of a condition (Table 1, Table 3, Figures 3/4, heatmaps).

    A task may rename a synthetic axis value (SummHay calls its low-expression needle
    "Simplified"); a name nobody registered is its own label.
    """
    if condition == TRIVIAL:
        return "Trivial baseline"
    found = _CONDITIONS.get(condition)
    if found is None:
        return condition
    if found.base is not None:  # a recipe condition: its base's label (task renames included), then the recipe's
        return f"{condition_label(found.base, task)}, {found.recipe_label}"
    if found.axes is not None and task is not None:
        renamed = _task_axis_labels(task)
        if renamed:
            concept, context = found.axes
            words = {**AXIS_LABELS, **renamed}
            return f"{words.get(concept, concept)} / {AXIS_LABELS.get(context, context)}"
    return found.label


def _task_axis_labels(task: str) -> Mapping[str, str]:
    try:
        return get_task(task).concept_labels
    except ValueError:  # an unregistered task name: default words
        return {}


def display_order(names: Iterable[str]) -> list[str]:
    """``names`` in the registry's order; unregistered names after them, in the order given."""
    order = list(_CONDITIONS)
    names = list(dict.fromkeys(names))
    return sorted(names, key=lambda c: (order.index(c) if c in order else len(order), names.index(c) if c not in order else 0))


RESERVED_NAMES = (NONFT, TRIVIAL, "real")  # not condition names a user dataset may take ("real": eval examples)


def user_datasets(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The config's ``datasets`` section: condition name -> {label, files: {task: path}}."""
    return dict(config.get("datasets") or {})


def user_condition_names(config: Mapping[str, Any], task: str | None = None) -> list[str]:
    """User datasets of the config (those with a file for ``task``, when given), in config order.

    A file for a task outside ``study.tasks`` is ignored, so a study narrowed to fewer tasks
    keeps its ``datasets`` section valid."""
    tasks = set(config["study"]["tasks"])
    return [name for name, spec in user_datasets(config).items()
            if any(t in tasks for t in spec["files"]) and (task is None or task in spec["files"])]


def _base_trained(config: Mapping[str, Any], task: str) -> list[str]:
    study = config["study"]
    return list(study["real_conditions"]) + list(study["synthetic_conditions"]) + user_condition_names(config, task)


def trained_conditions(config: Mapping[str, Any], task: str) -> list[str]:
    """The conditions trained for ``task``: real, synthetic, the user datasets with a file for
    it, then the recipe conditions of those (:func:`recipe_condition_names`). Every rule that
    expands over conditions asks this (a user dataset may cover only some tasks, so (model,
    task, condition) exists only where it has a file)."""
    return _base_trained(config, task) + recipe_condition_names(config, task)


def evaluated_conditions(config: Mapping[str, Any], task: str) -> list[str]:
    """The conditions evaluated on ``task``: the trained ones plus the base model ``nonft``."""
    return trained_conditions(config, task) + [NONFT]


# ---------------------------------------------------------------- training recipes

# Joins a base condition and a recipe name: "real_full__allmod". Wildcard- and file-name-safe;
# no other condition name may contain it (user dataset names are refused), and recipe names
# have no underscore, so a name splits one way only.
RECIPE_SEPARATOR = "__"
REAL_FULL = "real_full"


def training_recipes(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The config's ``training_recipes``: name -> {label, target_modules, conditions}."""
    return dict(config.get("training_recipes") or {})


def recipe_condition(base: str, recipe: str) -> str:
    """The name of ``base`` trained under ``recipe``."""
    return f"{base}{RECIPE_SEPARATOR}{recipe}"


def split_recipe(condition: str) -> tuple[str, str | None]:
    """(base condition, recipe) of a condition name; (the name, None) for a main-recipe condition.
    Works from the name alone, so a job that never reads the config can tell them apart."""
    base, separator, recipe = condition.rpartition(RECIPE_SEPARATOR)
    return (base, recipe) if separator and base and recipe else (condition, None)


def base_condition(condition: str) -> str:
    """The condition whose training data ``condition`` trains on (itself unless a recipe condition)."""
    return split_recipe(condition)[0]


def recipe_of(condition: str) -> str | None:
    return split_recipe(condition)[1]


def recipes_of(conditions: Iterable[str]) -> list[str | None]:
    """The training recipes of ``conditions`` in order of appearance, the main one (None) first."""
    return list(dict.fromkeys([None, *(recipe_of(c) for c in conditions)]))


def recipe_suffix(recipe: str | None) -> str:
    """What a recipe appends to a name (a correlation measure: ``cosine__allmod``); "" for the main one."""
    return "" if recipe is None else f"{RECIPE_SEPARATOR}{recipe}"


def recipe_reference(condition: str) -> str:
    """The Real (Full) model a condition's heads are compared with (similarity, Figure 3, the
    claims) and patched from (rule ``patching``): the one trained under the same recipe (same
    modules adapted)."""
    recipe = recipe_of(condition)
    return REAL_FULL if recipe is None else recipe_condition(REAL_FULL, recipe)


def recipe_condition_names(config: Mapping[str, Any], task: str | None = None) -> list[str]:
    """The recipe conditions trained for ``task`` (every task of the study when None), recipe by
    recipe, each in the base conditions' trained order: a recipe condition exists where its base
    condition is trained."""
    tasks = [task] if task is not None else list(config["study"]["tasks"])
    base = list(dict.fromkeys(c for t in tasks for c in _base_trained(config, t)))
    return [recipe_condition(c, name) for name, spec in training_recipes(config).items()
            for c in base if c in spec["conditions"]]


def recipe_train_settings(config: Mapping[str, Any], condition: str) -> dict[str, Any]:
    """The ``train:`` section a condition trains with: the study's, with the recipe's LoRA
    target modules for a recipe condition (nothing else differs between recipes)."""
    train = dict(config["train"])
    recipe = recipe_of(condition)
    if recipe is not None:
        spec = training_recipes(config)[recipe]
        train["lora"] = {**train["lora"], "target_modules": list(spec["target_modules"])}
    return train


def job_labels(config: Mapping[str, Any]) -> dict[str, Any]:
    """The labels of the conditions the config defines, for a job's process (it never reads the
    config): user dataset -> label, recipe condition -> {base, recipe, label (the recipe's)}.
    ``USER_LABELS`` in rules/common.smk; :func:`register_user_labels` registers them."""
    datasets = user_datasets(config)
    labels: dict[str, Any] = {name: datasets[name]["label"] for name in user_condition_names(config)}
    recipes = training_recipes(config)
    for name in recipe_condition_names(config):
        base, recipe = split_recipe(name)
        labels[name] = {"base": base, "recipe": recipe, "label": str(recipes[recipe]["label"])}
    return labels


def _register_recipe_condition(name: str, base: str, recipe: str, label: str) -> None:
    found = _CONDITIONS.get(base)
    if found is None:
        raise ValueError(f"recipe condition {name!r}: base condition {base!r} is not registered")
    register_condition(Condition(name, found.kind, f"{found.label}, {label}", found.axes, base=base, recipe=recipe,
                                 recipe_label=label), replace=True)


def register_user_labels(labels: Mapping[str, Any]) -> None:
    """Register the config's own conditions in a job's process (:func:`job_labels`: user datasets,
    name -> label; recipe conditions, name -> {base, recipe, label}): the rules that draw labels
    pass them as a param (``USER_LABELS`` in rules/common.smk), since a job never reads the config."""
    labels = dict(labels or {})
    for name, label in labels.items():
        if not isinstance(label, Mapping):
            register_condition(Condition(name, "user", str(label)), replace=True)
    for name, spec in labels.items():  # after the user datasets: a recipe may derive from one
        if isinstance(spec, Mapping):
            _register_recipe_condition(name, str(spec["base"]), str(spec["recipe"]), str(spec["label"]))


def register_from_config(config: Mapping[str, Any]) -> None:
    """Register every condition the config's ``study`` section names but nobody registered
    (label = its name), with the kind of the list that names it; checks the kinds agree.
    Each ``datasets`` entry is a condition of kind ``user`` with its configured label."""
    for name, spec in user_datasets(config).items():
        if RECIPE_SEPARATOR in name:
            raise ValueError(f"invalid config: datasets.{name}: {RECIPE_SEPARATOR!r} joins a condition and a "
                             "training recipe (training_recipes) in a name; choose a name without it")
        if name in RESERVED_NAMES:
            raise ValueError(f"invalid config: datasets.{name}: {name!r} is reserved (the base model, the trivial "
                             "baseline or the eval examples); choose another condition name")
        known = _CONDITIONS.get(name)
        if known is not None and known.kind != "user":
            raise ValueError(f"invalid config: datasets.{name}: {name!r} is a {known.kind} condition of the study's "
                             "vocabulary; choose another name for your dataset")
        register_condition(Condition(name, "user", str(spec.get("label") or name)), replace=True)
    study = config.get("study", {})
    for key, kind in (("synthetic_conditions", "synthetic"), ("real_conditions", "real")):
        for name in study.get(key, []) or []:
            known = _CONDITIONS.get(name)
            if known is None:
                register_condition(Condition(name, kind, name))
            elif known.kind != kind:
                raise ValueError(f"invalid config: study.{key}: {name!r} is a {known.kind} condition, not {kind}")
    trained = {c for t in study.get("tasks") or [] for c in _base_trained(config, t)} if training_recipes(config) else set()
    for name, spec in training_recipes(config).items():
        for base in spec.get("conditions") or []:
            found = _CONDITIONS.get(base)
            if found is None or not found.trained or found.base is not None or base not in trained:
                raise ValueError(f"invalid config: training_recipes.{name}.conditions: {base!r} is not a trained "
                                 f"condition of the study (real, synthetic or a user dataset: {sorted(trained)})")
            _register_recipe_condition(recipe_condition(base, name), base, name, str(spec["label"]))


def evaluation_conditions(config: Mapping[str, Any]) -> list[str]:
    """The study's evaluation-only conditions (``study.evaluation_conditions``, which schema
    validation fills with its default when a config omits it), ``nonft`` first."""
    names = list(config["study"]["evaluation_conditions"])
    return [NONFT] + [n for n in names if n != NONFT]


def study_conditions(config: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(synthetic, real, every evaluated condition) of a config, evaluated = trained + the
    evaluation-only ones (``nonft`` first)."""
    register_from_config(config)
    synthetic = list(config["study"]["synthetic_conditions"])
    real = list(config["study"]["real_conditions"])
    return synthetic, real, synthetic + real + evaluation_conditions(config)


def wildcard_pattern(names: Sequence[str]) -> str:
    """A Snakemake wildcard constraint matching exactly ``names``."""
    import re

    if not names:
        return "(?!)"  # matches nothing
    return "|".join(re.escape(n) for n in names)


def task_title(task: str) -> str:
    """A task's display name (Table 1 column, Table 3 row, figure titles); unknown: its name."""
    try:
        return get_task(task).title or task
    except ValueError:
        return task


# The study-wide eval size (data.eval_examples) that a task's data section may override for that
# task: checked here, stripped before the task's own schema fragment (ours).
TASK_SIZE_OVERRIDES = {
    "eval_examples": {"type": "integer", "minimum": 1},
}


def _without_size_overrides(section: Mapping[str, Any]) -> dict[str, Any]:
    """A ``data.<task>`` section as its task's schema fragment and its data builder see it."""
    return {k: v for k, v in section.items() if k not in TASK_SIZE_OVERRIDES}


def task_data_settings(config: Mapping[str, Any], task: str) -> tuple[dict[str, Any], int, int | None]:
    """A task's data settings: (its ``data.<task>`` section without the size override, its eval
    examples, its Real (Full) cap). ``data.max_train_examples`` is one cap for every task or a
    mapping task -> cap naming every study task: an overlay config that sets one number (or
    null) replaces the mapping whole, so no task keeps a cap the overlay did not ask for."""
    data = config["data"]
    section = data[task]
    cap = data.get("max_train_examples")
    if isinstance(cap, Mapping):
        cap = cap[task]
    return _without_size_overrides(section), int(section.get("eval_examples", data["eval_examples"])), cap


# Config mappings keyed by task name (any subset of the study's tasks, unless required here).
PER_TASK_KEYS = {
    ("evaluate", "max_new_tokens"): True,  # required for every task of the study
    ("heads", "task_examples"): False,
    ("causal", "task_examples"): False,
    ("heads", "success_metric"): False,
    ("data", "max_train_examples"): True,  # when a mapping: a cap (or null) for every task
}


def check_config(config: Mapping[str, Any]) -> None:
    """What the JSON schema cannot check because it depends on the registries: the study's tasks
    are registered (after importing ``study.task_modules``), each has its ``raw_data.<task>`` and
    ``data.<task>`` sections valid against the task's own schema fragment, a section names a
    registered task, per-task mappings name study tasks, the study's conditions are known
    (unknown ones are registered with their name as label), and no model's ``context_tokens``
    exceeds its ``native_context`` without a ``rope_theta``. Raises ValueError naming the key."""
    import jsonschema

    from synthctx.tasks import load_task_modules

    def error(key: str, message: str) -> None:
        raise ValueError(f"invalid config: {key}: {message}")

    study = config["study"]
    load_task_modules(study.get("task_modules") or [])
    known = task_names()
    tasks = list(study["tasks"])
    for task in tasks:
        if task not in known:
            error("study.tasks", f"unknown task {task!r} (registered: {known}; a new task's module goes in "
                                 "study.task_modules)")
    for name in (config.get("raw_data") or {}).get("downloads") or {}:
        if name not in ("verify", "archives") and name not in known:
            error(f"raw_data.downloads.{name}", f"not a registered task (registered: {known})")
    for section, fixed in (("raw_data", {"local_dir", "downloads"}), ("data", {"eval_examples", "max_train_examples",
                                                                 "limited_fraction"})):
        block = config.get(section) or {}
        for name in block:
            if name not in fixed and name not in known:
                error(f"{section}.{name}", f"not a registered task (registered: {known})")
        for task in tasks:
            if task not in block:
                error(f"{section}.{task}", f"missing: task {task!r} is in study.tasks")
            schema = get_task(task).raw_schema if section == "raw_data" else get_task(task).data_schema
            settings = block[task]
            if section == "data" and isinstance(settings, Mapping):
                for key, fragment in TASK_SIZE_OVERRIDES.items():
                    if key in settings:
                        try:
                            jsonschema.validate(settings[key], fragment)
                        except jsonschema.ValidationError as err:
                            error(f"data.{task}.{key}", err.message)
                settings = _without_size_overrides(settings)
            try:
                jsonschema.validate(settings, schema)
            except jsonschema.ValidationError as err:
                where = ".".join(str(p) for p in err.absolute_path)
                error(f"{section}.{task}" + (f".{where}" if where else ""), err.message)
    for (section, key), required in PER_TASK_KEYS.items():
        value = (config.get(section) or {}).get(key)
        if not isinstance(value, Mapping):
            continue
        for name in value:
            if name not in known:
                error(f"{section}.{key}.{name}", f"not a registered task (registered: {known})")
        if required:
            for task in tasks:
                if task not in value:
                    error(f"{section}.{key}.{task}", f"missing: task {task!r} is in study.tasks")
    for name, spec in (config.get("models") or {}).items():
        # Positions beyond the trained window are only meaningful with a raised RoPE base (the
        # study's setting, STUDY.md); without one the model would silently run out of range.
        native, budget = spec.get("native_context"), spec.get("context_tokens")
        if native and budget and budget > native and not spec.get("rope_theta"):
            error(f"models.{name}.context_tokens", f"{budget} exceeds native_context {native}: set "
                                                   f"models.{name}.rope_theta (the raised RoPE base) or lower it")
    for name, spec in user_datasets(config).items():
        for task in spec["files"]:
            if task not in known:
                error(f"datasets.{name}.files.{task}", f"unknown task {task!r} (registered: {known})")
    register_from_config(config)
    for key in ("knockout_conditions", "patch_conditions"):
        for name in (config.get("causal") or {}).get(key) or []:
            if get_condition(name) is None:
                error(f"causal.{key}", f"unknown condition {name!r} (registered: {condition_names()})")
    for name in study.get("evaluation_conditions") or []:
        found = get_condition(name)
        if found is None or found.kind != "evaluation_only":
            error("study.evaluation_conditions", f"{name!r} is not an evaluation-only condition (registered: "
                                                 f"{condition_names('evaluation_only')})")
    if "evaluation_conditions" in study and NONFT not in study["evaluation_conditions"]:
        error("study.evaluation_conditions", f"must contain {NONFT!r} (Table 1's and the claims' reference)")
    for name in study["synthetic_conditions"]:
        for task in tasks:
            supported = get_task(task).synthetic_variants
            if name in BUILTIN_SYNTHETIC and name not in supported:
                error("study.synthetic_conditions", f"task {task!r} has no synthetic variant {name!r} "
                                                    f"(it supports {list(supported)})")
