"""The built-in recipes' descriptions (no torch here: their code lives next door).

How the figures in :class:`Needs` were derived (``tests/core/test_recipes.py`` re-derives them):

- ``parameters``: counted from the module built with ``defaults``.
- ``base_bytes``: fp32 weights, gradients and AdamW's two moments, 16 bytes per parameter.
- ``bytes_per_sample``: the tensors autograd saves for the backward pass, measured on CPU as the
  difference between batches of 8 and 16 samples, times 1.5 for the gradients in flight during
  backward and the allocator's slack. CUDA's fused attention saves less than CPU's, so this errs high.
"""

from __future__ import annotations

from hiveling.core.recipes import Needs, Recipe

ADAM_FP32_BYTES = 16

GLYPHS_PARAMETERS = 221_586
GLYPHS_SAVED_PER_SAMPLE = 211_792

GLYPHS = Recipe(
    name="glyphs",
    version="2.0",
    title="Glyph classifier",
    description="A small convolutional network that learns to read rendered digits and letters.",
    needs=Needs(
        parameters=GLYPHS_PARAMETERS,
        base_bytes=ADAM_FP32_BYTES * GLYPHS_PARAMETERS,
        bytes_per_sample=GLYPHS_SAVED_PER_SAMPLE * 3 // 2,
        default_batch_size=64,
        min_batch_size=8,
    ),
    factory="hiveling.core.recipes.glyphs:build",
    # 2.0: narrower (three times faster per sample) and a higher learning rate: about 90% held-out
    # accuracy after 50,000-60,000 samples (100-120 steps of 512) where 1.0 needed several times more.
    defaults={
        "lr": 5e-3,
        "warmup_steps": 30,
        "weight_decay": 0.01,
        "width": 16,
        "hidden": 128,
        "dropout": 0.1,
    },
    limits={
        "lr": (1e-7, 1.0),
        "warmup_steps": (0, 1_000_000),
        "weight_decay": (0.0, 1.0),
        "width": (1, 256),
        "hidden": (1, 8192),
        "dropout": (0.0, 0.9),
    },
)

CHARLM_PARAMETERS = 875_520
CHARLM_SAVED_PER_SAMPLE = 4_475_904

CHARLM = Recipe(
    name="charlm",
    version="1.0",
    title="Character-level language model",
    description="A small transformer that learns to write like Python's own documentation.",
    needs=Needs(
        parameters=CHARLM_PARAMETERS,
        base_bytes=ADAM_FP32_BYTES * CHARLM_PARAMETERS,
        bytes_per_sample=CHARLM_SAVED_PER_SAMPLE * 3 // 2,
        default_batch_size=32,
        min_batch_size=4,
    ),
    factory="hiveling.core.recipes.charlm:build",
    defaults={"lr": 1e-3, "weight_decay": 0.01, "width": 128, "heads": 4, "layers": 4, "context": 128},
    limits={
        "lr": (1e-7, 1.0),
        "weight_decay": (0.0, 1.0),
        "width": (8, 4096),
        "heads": (1, 64),
        "layers": (1, 64),
        "context": (8, 4096),
    },
    # The larger recipe: averaging it at every step would keep a home link busy most of the time.
    local_steps=50,
)

BUILTIN = (GLYPHS, CHARLM)
DEFAULT = GLYPHS
