"""The built-in recipes' descriptions (no torch here: their code lives next door)."""

from __future__ import annotations

from hiveling.core.recipes import Needs, Recipe

GLYPHS = Recipe(
    name="glyphs",
    version="1.0",
    title="Glyph classifier",
    description="A small convolutional network that learns to read rendered digits and letters.",
    needs=Needs(parameters=0, base_bytes=0, bytes_per_sample=0, default_batch_size=64),
    factory="hiveling.core.recipes.glyphs:build",
    defaults={},
)

CHARLM = Recipe(
    name="charlm",
    version="1.0",
    title="Character-level language model",
    description="A small transformer that learns to write like Python's own documentation.",
    needs=Needs(parameters=0, base_bytes=0, bytes_per_sample=0, default_batch_size=32),
    factory="hiveling.core.recipes.charlm:build",
    defaults={},
)

BUILTIN = (GLYPHS, CHARLM)
DEFAULT = GLYPHS
