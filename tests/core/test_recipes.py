"""The recipe registry and the built-in recipes: they learn, every peer starts from the same weights
but reads its own data, their catalog figures match the code, and plugins are found.

Training runs a real Lightning Trainer on CPU for a few dozen steps; plugins are installed with pip into
a temporary folder and listed by a subprocess, which also proves the registry never imports torch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from PIL import ImageFont
from torch.nn import functional as F

from hiveling.core.recipes import (
    Needs,
    Plan,
    Recipe,
    RecipeError,
    available_recipes,
    charlm,
    find_recipe,
    glyphs,
    is_compatible,
)
from hiveling.core.recipes.catalog import BUILTIN, CHARLM, DEFAULT, GLYPHS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "recipe-plugin"
IDS = [recipe.name for recipe in BUILTIN]


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def train(plan: Plan, batch_size: int, steps: int) -> list[float]:
    """The training losses of ``steps`` steps with a real Trainer on CPU."""
    recorder = LossRecorder()
    torch.manual_seed(0)  # dropout's draws, so that a failure can be reproduced
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(plan.module, plan.make_loader(batch_size))
    assert len(recorder.losses) == steps
    return recorder.losses


def first_batch(plan: Plan, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    batch: tuple[torch.Tensor, torch.Tensor] = next(iter(plan.make_loader(batch_size)))
    return batch


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def toy_recipe(**changes: Any) -> Recipe:
    fields: dict[str, Any] = {
        "name": "toy",
        "version": "2.3",
        "title": "Toy",
        "description": "A recipe for registry tests.",
        "needs": Needs(parameters=1, base_bytes=16, bytes_per_sample=4, default_batch_size=2),
        "factory": "hiveling.core.recipes.glyphs:build",
        "defaults": {"lr": 1e-3, "width": 32, "name": "x", "flag": False},
    }
    return Recipe(**(fields | changes))


def not_a_plan(hparams: Mapping[str, Any], seed: int) -> str:
    return "a string"


# The registry.


def test_builtin_recipes_are_listed_by_name_and_glyphs_is_the_default() -> None:
    recipes = available_recipes()
    assert recipes["glyphs"] is GLYPHS
    assert recipes["charlm"] is CHARLM
    assert DEFAULT is GLYPHS
    assert find_recipe("charlm", "1.7") is CHARLM


def test_unknown_recipe_names_the_installed_ones() -> None:
    with pytest.raises(RecipeError, match=r"'nope' is not installed \(installed: charlm, glyphs") as caught:
        find_recipe("nope")
    assert "pip install" in str(caught.value)


def test_older_installed_major_version_asks_for_an_update() -> None:
    with pytest.raises(RecipeError, match="needs recipe glyphs version 3.0, but 2.0 is installed; update"):
        find_recipe("glyphs", "3.0")


def test_newer_installed_major_version_asks_for_a_newer_invite() -> None:
    with pytest.raises(RecipeError, match="ask the organizer for a newer invite"):
        find_recipe("glyphs", "1.0")


def test_compatibility_is_decided_by_the_major_part() -> None:
    assert is_compatible("1.0", "1.9")
    assert is_compatible("2", "2.1.4")
    assert not is_compatible("1.0", "10.0")


def test_hyperparameter_overrides_merge_with_defaults() -> None:
    merged = toy_recipe().hyperparameters({"width": 64, "lr": 1})
    assert merged == {"lr": 1, "width": 64, "name": "x", "flag": False}
    assert toy_recipe().defaults["width"] == 32


def test_unknown_hyperparameter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(RecipeError, match=r"no hyperparameter 'depth'; known: flag, lr, name, width"):
        toy_recipe().hyperparameters({"depth": 3})


@pytest.mark.parametrize(
    ("key", "value"), [("width", 2.5), ("width", "64"), ("lr", "fast"), ("flag", 1), ("width", True)]
)
def test_hyperparameter_of_the_wrong_type_is_refused(key: str, value: Any) -> None:
    with pytest.raises(RecipeError, match=f"hyperparameter {key} must be a"):
        toy_recipe().hyperparameters({key: value})


def test_missing_factory_is_a_recipe_error_that_says_to_reinstall() -> None:
    recipe = toy_recipe(factory="hiveling_no_such_package.model:build")
    with pytest.raises(RecipeError, match="toy 2.3 is installed but its code is broken .* reinstall"):
        recipe.build(recipe.hyperparameters(), 0)
    with pytest.raises(RecipeError, match="code is broken"):
        toy_recipe(factory="hiveling.core.recipes.glyphs:no_such_function").build({}, 0)


def test_factory_that_returns_no_plan_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="returned str, not a Plan"):
        toy_recipe(factory=f"{__name__}:not_a_plan").build({}, 0)


@pytest.mark.parametrize(
    ("recipe", "overrides", "message"),
    [
        (CHARLM, {"width": 100, "heads": 3}, "width 100 must be a multiple of heads 3; try width=102"),
        (CHARLM, {"layers": 0}, "recipe charlm: hyperparameter layers must be between 1 and 64, not 0"),
        (GLYPHS, {"width": -1}, "recipe glyphs: hyperparameter width must be between 1 and 256, not -1"),
        (GLYPHS, {"dropout": 2}, "recipe glyphs: hyperparameter dropout must be between 0 and 0.9, not 2"),
        (GLYPHS, {"lr": float("nan")}, "recipe glyphs: hyperparameter lr must be a finite number, not nan"),
    ],
)
def test_bad_model_sizes_are_refused_before_building(
    recipe: Recipe, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(RecipeError, match=message):
        recipe.build(recipe.hyperparameters(overrides), 0)


# The built-in recipes.


@pytest.fixture(scope="module")
def plans() -> dict[tuple[str, int], Plan]:
    """Each built-in built for seeds 1 and 2, each after a different global torch seed."""
    built = {}
    for recipe in BUILTIN:
        for seed in (1, 2):
            torch.manual_seed(random.randrange(1 << 30))
            built[recipe.name, seed] = recipe.build(recipe.hyperparameters(), seed)
    return built


@pytest.mark.parametrize("recipe", BUILTIN, ids=IDS)
def test_catalog_parameter_count_and_base_memory_match_the_module(
    recipe: Recipe, plans: dict[tuple[str, int], Plan]
) -> None:
    parameters = sum(p.numel() for p in plans[recipe.name, 1].module.parameters())
    assert recipe.needs.parameters == parameters
    assert recipe.needs.base_bytes == 16 * parameters
    assert recipe.needs.min_batch_size <= recipe.needs.default_batch_size


def saved_bytes(module: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of one training step."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        inputs, targets = batch
        logits = module(inputs)
        F.cross_entropy(logits.flatten(0, -2), targets.flatten())
    return sum(storages.values())


@pytest.mark.parametrize("recipe", BUILTIN, ids=IDS)
def test_catalog_bytes_per_sample_covers_the_measured_activations(
    recipe: Recipe, plans: dict[tuple[str, int], Plan]
) -> None:
    plan = plans[recipe.name, 1]
    per_sample = (
        saved_bytes(plan.module, first_batch(plan, 16)) - saved_bytes(plan.module, first_batch(plan, 8))
    ) / 8
    assert per_sample <= recipe.needs.bytes_per_sample <= 2 * per_sample


@pytest.mark.parametrize("recipe", BUILTIN, ids=IDS)
def test_peers_start_from_identical_weights_but_read_different_data(
    recipe: Recipe, plans: dict[tuple[str, int], Plan]
) -> None:
    one, two = plans[recipe.name, 1], plans[recipe.name, 2]
    weights_one, weights_two = one.module.state_dict(), two.module.state_dict()
    assert weights_one.keys() == weights_two.keys()
    assert all(torch.equal(weights_one[key], weights_two[key]) for key in weights_one)
    inputs_one, _ = first_batch(one)
    inputs_two, _ = first_batch(two)
    assert not torch.equal(inputs_one, inputs_two)
    again = recipe.build(recipe.hyperparameters(), 1)
    assert torch.equal(first_batch(again)[0], inputs_one), "the same seed must give the same data"


@pytest.mark.parametrize("recipe", BUILTIN, ids=IDS)
def test_building_leaves_the_global_random_state_alone(recipe: Recipe) -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state()
    recipe.build(recipe.hyperparameters(), 5)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("recipe", BUILTIN, ids=IDS)
def test_loader_lasts_thousands_of_steps_and_reshuffles_every_epoch(
    recipe: Recipe, plans: dict[tuple[str, int], Plan]
) -> None:
    loader = plans[recipe.name, 1].make_loader(recipe.needs.default_batch_size)
    assert len(loader) >= 10_000
    assert loader.num_workers == 0
    first_epoch, second_epoch = next(iter(loader)), next(iter(loader))
    assert first_epoch[0].shape[0] == recipe.needs.default_batch_size
    assert not torch.equal(first_epoch[0], second_epoch[0])


def test_glyphs_learns_to_read_glyphs_it_has_never_seen(plans: dict[tuple[str, int], Plan]) -> None:
    plan = plans["glyphs", 1]
    losses = train(plan, GLYPHS.needs.default_batch_size, steps=150)
    # Chance is ln(34) = 3.53; after 150 steps this reaches 1.7 to 2.2 depending on the seed.
    assert mean(losses[:5]) > 3.3
    assert mean(losses[-10:]) < mean(losses[:5]) - 0.8
    images, labels = first_batch(plans["glyphs", 2], 256)  # another peer's glyphs
    plan.module.eval()
    with torch.no_grad():
        unseen = F.cross_entropy(plan.module(images), labels).item()
    assert unseen < mean(losses[:5]) - 0.8


def test_charlm_learns_the_shape_of_the_text(plans: dict[tuple[str, int], Plan]) -> None:
    losses = train(plans["charlm", 1], 16, steps=40)
    # Chance is ln(256) = 5.55; after 40 steps this reaches 3.0 to 3.2 depending on the seed.
    assert mean(losses[:3]) > 4.5
    assert mean(losses[-5:]) < mean(losses[:3]) - 1.5


def test_charlm_generates_bytes_after_a_prompt(plans: dict[tuple[str, int], Plan]) -> None:
    text = plans["charlm", 2].module.generate(b"The ", 20)
    assert len(text) == 20


def test_charlm_reads_python_documentation_or_docstrings() -> None:
    text = charlm.documentation_text()
    assert len(text) > 200_000
    assert b"for" in text
    fallback = charlm.docstring_text()
    assert len(fallback) > 100_000
    assert fallback == charlm.docstring_text()


def test_glyphs_draws_with_the_bitmap_font_where_freetype_is_missing() -> None:
    image = glyphs.draw_stamp("K", ImageFont.load_default_imagefont(), stroke=1)
    assert image.shape == (glyphs.IMAGE_SIZE, glyphs.IMAGE_SIZE)
    assert 10 < (image > 100).sum() < 300


def test_glyph_pools_depend_only_on_the_seed() -> None:
    images, labels = glyphs.render_pool(1, glyphs.POOL_SIZE)
    assert images.shape == (glyphs.POOL_SIZE, glyphs.IMAGE_SIZE, glyphs.IMAGE_SIZE)
    assert images.dtype == torch.uint8
    assert set(labels.tolist()) == set(range(len(glyphs.CHARACTERS)))
    small_images, small_labels = glyphs.render_pool.__wrapped__(1, 64)
    assert torch.equal(small_images, images[:64])
    assert torch.equal(small_labels, labels[:64])


# Plugins and import weight.


PROBE = """
import json, logging, sys
from hiveling.core import recipes

skipped = []
handler = logging.Handler()
handler.emit = lambda record: skipped.append((record.levelname, record.args[0]))
logging.getLogger("hiveling.core.recipes").addHandler(handler)
logging.getLogger("hiveling.core.recipes").setLevel(logging.DEBUG)
found = recipes.available_recipes()
spirals = recipes.find_recipe("spirals", "1.4")
light = sorted(name for name in ("torch", "lightning", "PIL", "numpy") if name in sys.modules)
plan = spirals.build(spirals.hyperparameters({"lr": 0.01}), 7)
points, labels = next(iter(plan.make_loader(16)))
print(json.dumps({
    "found": sorted(found),
    "glyphs": found["glyphs"].factory,
    "skipped": sorted(skipped),
    "heavy_modules_before_build": light,
    "batch": [list(points.shape), list(labels.shape)],
    "parameters": sum(p.numel() for p in plan.module.parameters()),
    "catalog_parameters": spirals.needs.parameters,
}))
"""

BROKEN_ENTRY_POINTS = """\
[hiveling.recipes]
broken = hiveling_no_such_module:RECIPE
notarecipe = json:dumps
impostor = impostor_recipe:RECIPE
"""

IMPOSTOR = """
import dataclasses
from hiveling.core.recipes.catalog import GLYPHS
RECIPE = dataclasses.replace(GLYPHS, factory="impostor_recipe:build")
"""


def run_python(code: str, path: Path | None = None) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_installed_plugin_is_found_and_broken_plugins_hide_nothing(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="pip builds the example offline with the installed setuptools")
    source = tmp_path / "source"
    shutil.copytree(EXAMPLE, source)  # building in place would leave build/ in the checkout
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*install, "--no-index", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    info = site / "broken_recipes-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-recipes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(BROKEN_ENTRY_POINTS)
    (site / "impostor_recipe.py").write_text(IMPOSTOR)

    report = run_python(PROBE, site)

    assert report["found"] == ["charlm", "glyphs", "spirals"]
    assert report["glyphs"] == "hiveling.core.recipes.glyphs:build"
    # Warned once each, although find_recipe read the registry a second time.
    assert report["skipped"] == [
        *(["DEBUG", name] for name in ("broken", "impostor", "notarecipe")),
        *(["WARNING", name] for name in ("broken", "impostor", "notarecipe")),
    ]
    assert report["heavy_modules_before_build"] == []
    assert report["batch"] == [[16, 2], [16]]
    assert report["parameters"] == report["catalog_parameters"] == 4_547


def test_listing_recipes_imports_no_torch_pillow_or_lightning() -> None:
    code = (
        "import json, sys; import hiveling.core.recipes.catalog as catalog;"
        "from hiveling.core.recipes import available_recipes, find_recipe;"
        "available_recipes(); find_recipe('charlm', '1.0').hyperparameters({'lr': 0.01});"
        "print(json.dumps(sorted(n for n in ('torch', 'lightning', 'PIL', 'numpy') if n in sys.modules)))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
