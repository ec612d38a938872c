"""Where Hiveling keeps its files. Nothing is created until a caller asks for a folder.

``HIVELING_HOME`` puts everything under one folder (tests, portable installs); otherwise the
platform's usual places are used (platformdirs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

APP = "hiveling"


def _home() -> Path | None:
    value = os.environ.get("HIVELING_HOME")
    return Path(value).expanduser() if value else None


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    home = _home()
    return _ensure(home / "config" if home else platformdirs.user_config_path(APP, appauthor=False))


def data_dir() -> Path:
    home = _home()
    return _ensure(home / "data" if home else platformdirs.user_data_path(APP, appauthor=False))


def log_dir() -> Path:
    home = _home()
    return _ensure(home / "logs" if home else platformdirs.user_log_path(APP, appauthor=False))


def run_dir(run_id: str) -> Path:
    """The folder of one run: peer identity, contribution totals, the host's checkpoints."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:80] or "run"
    return _ensure(data_dir() / "runs" / safe)
