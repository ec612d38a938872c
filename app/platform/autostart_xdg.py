"""Autostart on Linux and other XDG desktops: a .desktop file in $XDG_CONFIG_HOME/autostart."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from hiveling.app.platform.autostart import APP_NAME, Autostart

FILE_NAME = "hiveling.desktop"
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def quote_exec_argument(argument: str) -> str:
    """One argument of an Exec key, quoted as the Desktop Entry specification asks."""
    argument = argument.replace("%", "%%")
    if argument and not _RESERVED & set(argument):
        return argument
    inner = "".join("\\" + char if char in '"`$\\' else char for char in argument)
    # The value itself is a string in which a backslash is escaped once more.
    return '"' + inner.replace("\\", "\\\\") + '"'


def desktop_entry(command: list[str]) -> str:
    exec_line = " ".join(quote_exec_argument(argument) for argument in command)
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={APP_NAME}\n"
        "Comment=Lend this computer to collaborative deep-learning training\n"
        f"Exec={exec_line}\n"
        "Icon=hiveling\n"
        "Terminal=false\n"
        "Categories=Science;\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


class XdgAutostart(Autostart):
    def __init__(self, config_home: Path | None = None) -> None:
        self._config_home = config_home

    @property
    def path(self) -> Path:
        # platformdirs honours XDG_CONFIG_HOME, which is also how tests keep off the real home.
        base = self._config_home or platformdirs.user_config_path()
        return base / "autostart" / FILE_NAME

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self, command: list[str]) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(desktop_entry(command), encoding="utf-8")
        temporary.replace(path)

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)
