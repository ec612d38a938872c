"""Hiveling's Qt-free core. Importing it does nothing: names load on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["HivemindStrategy"]

if TYPE_CHECKING:
    from hiveling.core.strategy import HivemindStrategy


def __getattr__(name: str) -> Any:
    if name == "HivemindStrategy":
        from hiveling.core.strategy import HivemindStrategy

        return HivemindStrategy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
