"""Autostart on Windows: a value under HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run."""

from __future__ import annotations

import subprocess
import sys

from hiveling.app.platform.autostart import APP_NAME, Autostart

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def command_line(command: list[str]) -> str:
    return subprocess.list2cmdline(command)


class RegistryAutostart(Autostart):
    def __init__(self, value_name: str = APP_NAME) -> None:
        self._name = value_name

    def is_enabled(self) -> bool:
        if sys.platform != "win32":
            return False
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                winreg.QueryValueEx(key, self._name)
        except OSError:
            return False
        return True

    def enable(self, command: list[str]) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            winreg.SetValueEx(key, self._name, 0, winreg.REG_SZ, command_line(command))

    def disable(self) -> None:
        if sys.platform != "win32":
            return
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
                winreg.DeleteValue(key, self._name)
        except FileNotFoundError:
            pass
