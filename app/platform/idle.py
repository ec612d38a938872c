"""How long the volunteer has not touched the keyboard or mouse, per operating system."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod


class IdleSource(ABC):
    @abstractmethod
    def idle_seconds(self) -> float | None:
        """Seconds since the last input; None when this desktop cannot tell."""


class UnknownIdle(IdleSource):
    def idle_seconds(self) -> float | None:
        return None


class FirstKnownIdle(IdleSource):
    """Asks each source in turn; the first that knows answers."""

    def __init__(self, sources: list[IdleSource]) -> None:
        self.sources = sources

    def idle_seconds(self) -> float | None:
        for source in self.sources:
            seconds = source.idle_seconds()
            if seconds is not None:
                return seconds
        return None


def idle_source() -> IdleSource:
    """The idle source of this operating system."""
    if sys.platform == "win32":
        from hiveling.app.platform.idle_windows import WindowsIdle

        return WindowsIdle()
    if sys.platform == "darwin":
        from hiveling.app.platform.idle_macos import MacIdle

        return MacIdle()
    from hiveling.app.platform.idle_gnome import MutterIdle
    from hiveling.app.platform.idle_x11 import X11Idle

    return FirstKnownIdle([X11Idle(), MutterIdle()])
