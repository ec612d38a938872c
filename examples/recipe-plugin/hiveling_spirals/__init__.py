"""An example Hiveling recipe plugin: three interleaved spirals, told apart by a small network.

This module is what Hiveling loads to list recipes, in the tray as well as in the worker, so it stays
free of torch: the model and its data live in :mod:`hiveling_spirals.model`, imported only to train.
"""

from __future__ import annotations

from hiveling.core.recipes import Needs, Recipe

PARAMETERS = 4_547  # 2*64+64 + 64*64+64 + 64*3+3, for the default width of 64

RECIPE = Recipe(
    name="spirals",
    version="1.0",
    title="Spiral classifier",
    description="A small network that learns which of three interleaved spirals a point lies on.",
    needs=Needs(
        parameters=PARAMETERS,
        base_bytes=16 * PARAMETERS,  # fp32 weights, gradients and Adam's two moments
        bytes_per_sample=4_096,  # a few hidden activations per sample, rounded up generously
        default_batch_size=128,
        min_batch_size=8,
    ),
    factory="hiveling_spirals.model:build",
    defaults={"lr": 3e-3, "width": 64},
    limits={"lr": (1e-6, 1.0), "width": (1, 1024)},
)
