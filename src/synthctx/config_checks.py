"""Config checks that a JSON schema cannot express, as plain functions of the config dict (the
rule files call them while parsing, so a study that could not build its targets stops at once)."""

from __future__ import annotations

from typing import Any, Mapping


def causal_conditions(config: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The knockout and patching conditions of ``config`` (``causal.knockout_conditions`` /
    ``causal.patch_conditions``; defaults: Real (Full) and every synthetic condition of the study).

    A named condition the study does not train would leave Figure 4 or Table 3 without that
    input (formerly dropped in silence, so the build failed hours later with no tables to
    summarise): ValueError naming the key and the values. So does a list left empty, and
    patching without the Real (Full) donor model."""
    study, causal = config["study"], config["causal"]
    # a user dataset (config datasets:) is trained like a synthetic variant, for its own tasks
    synthetic = list(study["synthetic_conditions"]) + list(config.get("datasets") or {})
    trained = list(study["real_conditions"]) + synthetic
    # recipe conditions (training_recipes) can be knocked out; not patched: the donor would be the
    # attention-only Real (Full) model, not the recipe's
    from synthctx.study import recipe_condition_names

    recipes = recipe_condition_names(config)
    problems = []

    def chosen(key: str, allowed: list[str], default: list[str], what: str) -> list[str]:
        if key not in causal:
            values = [c for c in default if c in allowed]
        else:
            values = list(causal[key])
            outside = [c for c in values if c not in allowed]
            if outside:
                problems.append(f"causal.{key}: {outside} are not {what} of this study ({allowed}); "
                                f"add them to study.*_conditions or remove them from causal.{key}")
        if not values and not problems:
            problems.append(f"causal.{key}: no condition left ({what}: {allowed}); the causal targets "
                            "would have no inputs")
        return values

    builtin = list(study["synthetic_conditions"])
    knockout = chosen("knockout_conditions", trained + recipes + ["nonft"], ["real_full"] + builtin,
                      "trained conditions (or nonft)")
    patch = chosen("patch_conditions", synthetic, builtin, "synthetic conditions (or user datasets)")
    if patch and "real_full" not in study["real_conditions"]:
        problems.append("causal.patch_conditions: patching moves the Real (Full) model's heads, but "
                        "study.real_conditions has no real_full")
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    return knockout, patch
