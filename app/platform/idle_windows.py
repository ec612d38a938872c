"""Idle time on Windows: GetLastInputInfo against the tick count."""

from __future__ import annotations

import ctypes
import sys

from hiveling.app.platform.idle import IdleSource


class LastInputInfo(ctypes.Structure):
    _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]


def elapsed_ms(now_ticks: int, last_input_ticks: int) -> int:
    """Milliseconds between two 32-bit tick counts, across the wrap every 49.7 days."""
    return (now_ticks - last_input_ticks) & 0xFFFFFFFF


class WindowsIdle(IdleSource):
    def idle_seconds(self) -> float | None:
        if sys.platform != "win32":
            return None
        info = LastInputInfo()
        info.cbSize = ctypes.sizeof(LastInputInfo)
        if not ctypes.windll.user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        now = ctypes.windll.kernel32.GetTickCount() & 0xFFFFFFFF
        return elapsed_ms(now, info.dwTime) / 1000.0
