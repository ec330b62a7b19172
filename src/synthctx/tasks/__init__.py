"""The task registry: a task is one module defining a :class:`synthctx.tasks.base.Task` and
registering it (``register_task``). The built-in tasks are imported on first look-up; other
modules (a researcher's own task) are imported by name (config ``study.task_modules``,
:func:`load_task_modules`). See docs/adding-a-task.md.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from synthctx.tasks.base import Task

# The registry's list of built-in tasks: name -> module defining it (the only place naming them).
BUILTIN_TASKS = {
    "mdqa": "synthctx.tasks.mdqa",
    "musique": "synthctx.tasks.musique",
    "summhay": "synthctx.tasks.summhay",
}

_REGISTRY: dict[str, "Task"] = {}
_builtins_loaded = False


def register_task(task: "Task", *, replace: bool = False) -> "Task":
    """Make ``task`` known under ``task.name`` (the name of its config sections and wildcards)."""
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_]*", task.name or ""):
        raise ValueError(f"task name {task.name!r}: use lower-case letters, digits and _ (it is a path part)")
    if task.name in _REGISTRY and not replace and _REGISTRY[task.name] is not task:
        raise ValueError(f"task {task.name!r} is already registered (by {type(_REGISTRY[task.name]).__module__})")
    _REGISTRY[task.name] = task
    return task


def unregister_task(name: str) -> None:
    _REGISTRY.pop(name, None)


# The study's task modules, for the jobs: Snakemake runs each job's script in a new Python process
# (on a cluster, on another machine) that never saw the config's study.task_modules. The workflow
# (rules/common.smk) puts them in this variable, with the directory each was imported from, and
# the registry's first look-up in a job imports them again.
TASK_MODULES_ENV = "SYNTHCTX_TASK_MODULES"


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_TASKS.values():
            importlib.import_module(module)
        for entry in json.loads(os.environ.get(TASK_MODULES_ENV) or "[]"):
            if entry["path"] not in sys.path:
                sys.path.append(entry["path"])
            importlib.import_module(entry["module"])


def load_task_modules(modules: Iterable[str]) -> None:
    """Import modules that register tasks (config ``study.task_modules``), from ``PYTHONPATH`` or
    the working directory (which ``snakemake``'s console script does not put on ``sys.path``)."""
    if modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules or ():
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"invalid config: study.task_modules: cannot import {module!r}: {error}") from error


def task_modules_environment(modules: Iterable[str]) -> str:
    """The value of ``TASK_MODULES_ENV`` for imported task modules: each module's name and the
    ``sys.path`` directory its top-level package was found in (JSON)."""
    entries = []
    for module in modules or ():
        top = sys.modules[module.split(".")[0]]
        location = Path(top.__path__[0]) if hasattr(top, "__path__") else Path(top.__file__)
        entries.append({"module": module, "path": str(location.resolve().parent)})
    return json.dumps(entries)


def get_task(name: str) -> "Task":
    """The registered task ``name``; a ValueError naming the known tasks otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: registered tasks are {sorted(_REGISTRY)} (a new task registers "
                         "itself in its module, listed in study.task_modules; docs/adding-a-task.md)") from None


def task_names() -> list[str]:
    """Every registered task, built-in ones first."""
    _load_builtins()
    return list(_REGISTRY)
