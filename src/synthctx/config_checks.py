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
    patching without the Real (Full) donor model: the main recipe's for a main-recipe recipient,
    the same recipe's (``real_full__<recipe>``, :func:`synthctx.study.recipe_reference`) for a
    recipe condition of a synthetic condition or user dataset."""
    study, causal = config["study"], config["causal"]
    # a user dataset (config datasets:) is trained like a synthetic variant, for its own tasks
    synthetic = list(study["synthetic_conditions"]) + list(config.get("datasets") or {})
    trained = list(study["real_conditions"]) + synthetic
    # recipe conditions (training_recipes) can be knocked out, and those of a synthetic condition or
    # user dataset patched: their donor is the same recipe's Real (Full) model
    from synthctx.study import base_condition, recipe_condition_names, recipe_of, recipe_reference

    recipes = recipe_condition_names(config)
    recipe_recipients = [c for c in recipes if base_condition(c) in synthetic]
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
    patch = chosen("patch_conditions", synthetic + recipe_recipients, builtin,
                   "synthetic conditions (or user datasets, or their training-recipe conditions)")
    if any(recipe_of(c) is None for c in patch) and "real_full" not in study["real_conditions"]:
        problems.append("causal.patch_conditions: patching moves the Real (Full) model's heads, but "
                        "study.real_conditions has no real_full")
    for recipient in patch:
        recipe, donor = recipe_of(recipient), recipe_reference(recipient)
        if recipe is not None and recipe in (config.get("training_recipes") or {}) and donor not in recipes:
            problems.append(f"causal.patch_conditions: {recipient!r} takes its heads from its recipe's Real (Full) "
                            f"model {donor!r}, which is not trained: add real_full to "
                            f"training_recipes.{recipe}.conditions (and study.real_conditions)")
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    return knockout, patch
