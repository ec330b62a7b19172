"""Typed settings of config sections: the one step from a config mapping to a settings dataclass.

The settings dataclasses of the study (``synthctx.train.lora.TrainSettings``,
``synthctx.causal.settings.KnockoutSettings`` / ``PatchingSettings``,
``synthctx.synth.backends.GenerationParams``) have no defaults: the values live once, in
config.yaml and schemas/config.schema.yaml, and each class's ``from_config`` fills every field
from the config (tests/test_consolidation.py checks both).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping


def section_fields(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The keyword arguments of dataclass ``cls`` from ``values``: every field given, no other key.

    Raises ValueError naming ``where`` (the config section or params entry) and the keys."""
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"config {where}: unknown keys {unknown} (known: {names})")
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"config {where}: missing keys {missing}")
    return {name: values[name] for name in names}
