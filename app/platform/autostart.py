"""Starting the tray when the volunteer logs in, per operating system.

Each implementation writes one small entry (an XDG .desktop file, a Run registry value, a
LaunchAgent plist) that runs the installed ``hiveling tray``.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from abc import ABC, abstractmethod
from pathlib import Path

APP_NAME = "Hiveling"


class Autostart(ABC):
    @abstractmethod
    def is_enabled(self) -> bool: ...

    @abstractmethod
    def enable(self, command: list[str]) -> None:
        """Runs ``command`` at every login from now on (replacing an older entry)."""

    @abstractmethod
    def disable(self) -> None:
        """Removes the entry; nothing happens when there is none."""

    def apply(self, enabled: bool, command: list[str] | None = None) -> None:
        if enabled:
            self.enable(command or launch_command())
        else:
            self.disable()


def launch_command() -> list[str]:
    """The command that starts the tray of this installation."""
    if getattr(sys, "frozen", False):  # a packaged app is its own launcher
        return [sys.executable, "tray"]
    script = "hiveling.exe" if sys.platform == "win32" else "hiveling"
    beside = Path(sysconfig.get_path("scripts")) / script
    if beside.is_file():
        return [str(beside), "tray"]
    found = shutil.which("hiveling")
    if found:
        return [found, "tray"]
    return [sys.executable, "-m", "hiveling.core.commands.cli", "tray"]


def autostart_for_platform() -> Autostart:
    if sys.platform == "win32":
        from hiveling.app.platform.autostart_windows import RegistryAutostart

        return RegistryAutostart()
    if sys.platform == "darwin":
        from hiveling.app.platform.autostart_macos import LaunchAgentAutostart

        return LaunchAgentAutostart()
    from hiveling.app.platform.autostart_xdg import XdgAutostart

    return XdgAutostart()
