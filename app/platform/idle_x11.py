"""Idle time on X11 from the MIT-SCREEN-SAVER extension (libXss), through ctypes.

A connection is opened for each query and closed again: Xlib ends the process when a connection it
holds breaks, so none is kept while the tray waits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

from hiveling.app.platform.idle import IdleSource

logger = logging.getLogger(__name__)


class XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),  # milliseconds
        ("event_mask", ctypes.c_ulong),
    ]


def _load(name: str) -> ctypes.CDLL | None:
    found = ctypes.util.find_library(name)
    try:
        return ctypes.CDLL(found or f"lib{name}.so")
    except OSError:
        return None


class X11Idle(IdleSource):
    def __init__(self, display: str | None = None) -> None:
        self._display_name = display
        self._libs: tuple[ctypes.CDLL, ctypes.CDLL] | None = None
        self._missing = False

    def _libraries(self) -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
        if self._libs is None and not self._missing:
            x11, xss = _load("X11"), _load("Xss")
            if x11 is None or xss is None:
                logger.info("Idle time unknown: libX11 or libXss is not installed")
                self._missing = True
                return None
            x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
            x11.XOpenDisplay.restype = ctypes.c_void_p
            x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
            x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
            x11.XDefaultRootWindow.restype = ctypes.c_ulong
            x11.XFree.argtypes = [ctypes.c_void_p]
            xss.XScreenSaverQueryExtension.argtypes = [
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_int),
                ctypes.POINTER(ctypes.c_int),
            ]
            xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(XScreenSaverInfo)
            xss.XScreenSaverQueryInfo.argtypes = [
                ctypes.c_void_p,
                ctypes.c_ulong,
                ctypes.POINTER(XScreenSaverInfo),
            ]
            self._libs = (x11, xss)
        return self._libs

    def idle_seconds(self) -> float | None:
        name = self._display_name or os.environ.get("DISPLAY")
        # Under Wayland, X11 sees only the input that goes to X11 windows: its idle time would lie.
        if not name or os.environ.get("XDG_SESSION_TYPE") == "wayland":
            return None
        libs = self._libraries()
        if libs is None:
            return None
        x11, xss = libs
        display = x11.XOpenDisplay(name.encode())
        if not display:
            return None
        try:
            event_base, error_base = ctypes.c_int(), ctypes.c_int()
            has_extension = xss.XScreenSaverQueryExtension(
                display, ctypes.byref(event_base), ctypes.byref(error_base)
            )
            if not has_extension:
                return None
            info = xss.XScreenSaverAllocInfo()
            if not info:
                return None
            try:
                if not xss.XScreenSaverQueryInfo(display, x11.XDefaultRootWindow(display), info):
                    return None
                return float(info.contents.idle) / 1000.0
            finally:
                x11.XFree(info)
        finally:
            x11.XCloseDisplay(display)
