"""Recipes: the installed models a run may train. An invite names a recipe; it never carries code.

A recipe is a :class:`Recipe` value (torch-free, so the tray and invite checks can read it) whose
``factory`` names, as ``"module:function"``, the code that builds the model and its data. Organizers
ship their own recipes as packages that register a :class:`Recipe` under the ``hiveling.recipes``
entry-point group (see docs/recipes.md).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "hiveling.recipes"

logger = logging.getLogger(__name__)


class RecipeError(Exception):
    """A recipe that is not installed, not compatible, or broken; the message says what to do."""


@dataclass(frozen=True)
class Needs:
    """What a recipe asks of a machine, for choosing the device and the local batch size."""

    parameters: int
    base_bytes: int  # weights, gradients and optimizer state on the device
    bytes_per_sample: int  # activations per sample of a batch
    default_batch_size: int
    min_batch_size: int = 1

    def memory_for(self, batch_size: int) -> int:
        return self.base_bytes + self.bytes_per_sample * batch_size


@dataclass
class Plan:
    """What a recipe's factory returns: a LightningModule and how to load this peer's data."""

    module: Any  # lightning.pytorch.LightningModule
    make_loader: Callable[[int], Any]  # local batch size -> torch DataLoader (endless or long)
    #: Held-out accuracy of the module (0 to 1), on data no peer trains on; None: no such measure.
    evaluate: Callable[[Any], float] | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str  # compatible when the major part (before the first dot) matches
    title: str
    description: str
    needs: Needs
    factory: str  # "package.module:function"; function(hparams, seed) -> Plan
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The low-communication mode suits this recipe, with about this many local steps between
    #: exchanges; None: the synchronous mode. The organizer may choose otherwise (``--mode``).
    local_steps: int | None = None
    #: The range each numeric hyperparameter may take, both ends included: an invite is input, and
    #: a value the model cannot be built with must be refused where the invite is read, not in a
    #: worker that crashes and restarts.
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def hyperparameters(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        merged = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in merged:
                raise RecipeError(
                    f"recipe {self.name} has no hyperparameter {key!r}; known: {', '.join(sorted(merged))}"
                )
            if not _same_kind(merged[key], value):
                raise RecipeError(
                    f"recipe {self.name}: hyperparameter {key} must be a {type(merged[key]).__name__} "
                    f"like its default {merged[key]!r}, not {value!r}"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise RecipeError(
                    f"recipe {self.name}: hyperparameter {key} must be a finite number, not {value}"
                )
            low, high = self.limits.get(key, (-math.inf, math.inf))
            if isinstance(value, int | float) and not isinstance(value, bool) and not low <= value <= high:
                raise RecipeError(
                    f"recipe {self.name}: hyperparameter {key} must be between {low:g} and {high:g}, "
                    f"not {value!r}"
                )
            merged[key] = value
        return merged

    def build(self, hparams: Mapping[str, Any], seed: int) -> Plan:
        """Imports the factory (and with it torch) and builds the model and this peer's data."""
        module_name, _, attribute = self.factory.partition(":")
        try:
            function: Callable[[Mapping[str, Any], int], Plan] = getattr(
                importlib.import_module(module_name), attribute
            )
        except (ImportError, AttributeError) as error:
            raise RecipeError(
                f"recipe {self.name} {self.version} is installed but its code is broken ({error}); "
                "reinstall the package that provides it"
            ) from error
        plan = function(dict(hparams), seed)
        if not isinstance(plan, Plan):
            raise RecipeError(
                f"recipe {self.name} {self.version} is broken: {self.factory} returned "
                f"{type(plan).__name__}, not a Plan; reinstall or update the package that provides it"
            )
        return plan


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` can stand in for ``default`` (an int may stand in for a float)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is type(value)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, int | str):
        return type(default) is type(value)
    return True


def is_compatible(installed: str, wanted: str) -> bool:
    return installed.split(".")[0] == wanted.split(".")[0]


def available_recipes() -> dict[str, Recipe]:
    """Built-in recipes and those installed as plugins, by name (a plugin cannot replace a built-in)."""
    from hiveling.core.recipes.catalog import BUILTIN

    recipes = {recipe.name: recipe for recipe in BUILTIN}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            recipe = point.load()
        except Exception as error:  # a broken plugin must not hide the others
            _report_skipped(point.name, f"{point.value} cannot be loaded ({error})")
            continue
        if not isinstance(recipe, Recipe):
            _report_skipped(point.name, f"{point.value} is not a hiveling Recipe")
        elif recipe.name in recipes:
            _report_skipped(point.name, f"a recipe named {recipe.name} is already installed")
        else:
            recipes[recipe.name] = recipe
    return recipes


_reported: set[tuple[str, str]] = set()


def _report_skipped(plugin: str, reason: str) -> None:
    """Warns once per process and plugin: the registry is read every time a recipe is looked up."""
    level = logging.DEBUG if (plugin, reason) in _reported else logging.WARNING
    _reported.add((plugin, reason))
    logger.log(
        level, "skipping recipe plugin %s: %s; reinstall or remove the package providing it", plugin, reason
    )


def find_recipe(name: str, version: str | None = None) -> Recipe:
    """The installed recipe ``name`` compatible with ``version``; a RecipeError says what to install."""
    recipes = available_recipes()
    recipe = recipes.get(name)
    if recipe is None:
        known = ", ".join(sorted(recipes)) or "none"
        raise RecipeError(
            f"recipe {name!r} is not installed (installed: {known}); install the package the organizer "
            f"names for it (pip install <package>) or update Hiveling"
        )
    if version is not None and not is_compatible(recipe.version, version):
        newer = _major(version) > _major(recipe.version)
        fix = "update Hiveling or the recipe package" if newer else "ask the organizer for a newer invite"
        raise RecipeError(
            f"this run needs recipe {name} version {version}, but {recipe.version} is installed; {fix}"
        )
    return recipe


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0
