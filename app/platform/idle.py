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


def idle_source() -> IdleSource:
    """The idle source of this operating system."""
    if sys.platform == "win32":
        from hiveling.app.platform.idle_windows import WindowsIdle

        return WindowsIdle()
    if sys.platform == "darwin":
        from hiveling.app.platform.idle_macos import MacIdle

        return MacIdle()
    from hiveling.app.platform.idle_x11 import X11Idle

    return X11Idle()
