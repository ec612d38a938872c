"""Qt tests run without a display: the offscreen platform must be chosen before any QApplication."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"


@pytest.fixture(autouse=True)
def app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every app test gets its own Hiveling home: settings, logs and locks never touch the user's."""
    home = tmp_path / "hiveling-home"
    monkeypatch.setenv("HIVELING_HOME", str(home))
    monkeypatch.delenv("HIVELING_APP_STATE_FILE", raising=False)
    monkeypatch.delenv("HIVELING_APP_REPLAY", raising=False)
    return home
