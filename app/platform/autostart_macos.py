"""Autostart on macOS: a LaunchAgent plist in ~/Library/LaunchAgents, loaded at the next login."""

from __future__ import annotations

import plistlib
from pathlib import Path

from hiveling.app.platform.autostart import Autostart

LABEL = "org.hiveling.tray"


def launch_agent(command: list[str]) -> bytes:
    return plistlib.dumps(
        {
            "Label": LABEL,
            "ProgramArguments": command,
            "RunAtLoad": True,
            "ProcessType": "Interactive",
        }
    )


class LaunchAgentAutostart(Autostart):
    def __init__(self, agents_dir: Path | None = None) -> None:
        self._agents_dir = agents_dir

    @property
    def path(self) -> Path:
        return (self._agents_dir or Path.home() / "Library" / "LaunchAgents") / f"{LABEL}.plist"

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self, command: list[str]) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(launch_agent(command))
        temporary.replace(path)

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)
