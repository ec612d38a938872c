"""The GUI process never loads torch, hivemind or Lightning; importing the app does nothing; main() runs,
hands over to a running instance and quits cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import pkgutil
import signal
import subprocess
import sys
from pathlib import Path

import hiveling.app
from tests.conftest import wait_until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"
HEAVY = ("torch", "hivemind", "lightning")


def app_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(hiveling.app.__path__, "hiveling.app."))


IMPORT_PROBE = """
import importlib, json, logging, sys
for name in {modules!r}:
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"heavy": heavy, "root_handlers": len(logging.getLogger().handlers)}}))
"""

RUN_PROBE = """
import json, os, sys
from pathlib import Path
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from hiveling.app.application import TrayApp
from hiveling.app.worker_process import replay_factory
from hiveling.core.config import load_settings

app = QApplication([])
replay = replay_factory(Path(sys.argv[1]), interval_ms=1)
tray_app = TrayApp(load_settings(), factory=replay, on_quit=app.quit)
tray_app.start()
tray_app.open_status()
tray_app.open_logs()
from hiveling.app.dialogs.join import JoinDialog
from hiveling.app.dialogs.settings import SettingsDialog
for dialog in (JoinDialog(tray_app.settings), SettingsDialog(tray_app.settings)):
    dialog.show()
    app.processEvents()
    dialog.close()
tray_app.apply_policy()
seen = {}


def finish():
    seen["look"] = tray_app.state.look
    tray_app.quit()


QTimer.singleShot(1500, finish)
app.exec()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "hivemind", "lightning"))
print(json.dumps({"heavy": heavy, "look": seen["look"], "logs": tray_app.logs is not None}))
"""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "user"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "c"),
        "XDG_DATA_HOME": str(home / "d"),
        "XDG_STATE_HOME": str(home / "s"),
        "XDG_CACHE_HOME": str(home / "k"),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "QT_QPA_PLATFORM": "offscreen",
        **extra,
    }


def run_python(code: str, tmp_path: Path, *args: str, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_every_app_module_loads_no_training_stack_and_creates_nothing(tmp_path: Path) -> None:
    modules = app_modules()
    assert {"hiveling.app.main", "hiveling.app.tray", "hiveling.app.windows.status"} <= set(modules)
    report = run_python(IMPORT_PROBE.format(modules=modules, heavy=HEAVY), tmp_path)
    assert report == {"heavy": [], "root_handlers": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]
    assert list((tmp_path / "user").iterdir()) == []


def test_the_running_app_loads_no_training_stack(tmp_path: Path) -> None:
    """Tray, Status, Logs, the Join and Settings dialogs and the policy, all in one GUI process."""
    report = run_python(
        RUN_PROBE, tmp_path, str(FIXTURES / "training.jsonl"), HIVELING_HOME=str(tmp_path / "h")
    )
    assert report == {"heavy": [], "look": "not_joined", "logs": True}


def test_a_joined_app_parses_its_invite_without_the_training_stack(tmp_path: Path) -> None:
    from tests.app.test_tray import invite_token

    settings = tmp_path / "h" / "config" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"invite": invite_token()}))
    report = run_python(
        RUN_PROBE, tmp_path, str(FIXTURES / "training.jsonl"), HIVELING_HOME=str(tmp_path / "h")
    )
    assert report["look"] == "training"
    assert report["heavy"] == []


def test_main_runs_hands_a_second_start_over_and_quits_on_sigterm(tmp_path: Path) -> None:
    dump = tmp_path / "state.json"
    env = clean_env(
        tmp_path,
        HIVELING_HOME=str(tmp_path / "h"),
        HIVELING_APP_STATE_FILE=str(dump),
    )
    command = [
        sys.executable,
        "-c",
        "import sys; from hiveling.app.main import main; sys.exit(main(sys.argv[1:]))",
    ]
    first = subprocess.Popen([*command, "tray"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:

        def shown() -> dict[str, object] | None:
            try:
                return json.loads(dump.read_text())  # type: ignore[no-any-return]
            except (OSError, ValueError):
                return None

        assert wait_until(lambda: (shown() or {}).get("status_window") is True, timeout=30)
        state = shown()
        assert state is not None
        # No tray on the offscreen platform: the Status window is the app. Not joined yet.
        assert state["tray"] is False
        assert state["look"] == "not_joined"
        assert state["heavy_modules"] == []
        assert state["status_opened"] == 1

        second = subprocess.run([*command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert wait_until(lambda: (shown() or {}).get("status_opened") == 2, timeout=10)

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert (shown() or {}).get("quitting") is True
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if first.stdout is not None:
            first.stdout.close()


def test_a_bad_option_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from hiveling.app.main import main; sys.exit(main(['--nope']))"],
        cwd=tmp_path,
        env=clean_env(tmp_path, HIVELING_HOME=str(tmp_path / "h")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "unrecognized arguments: --nope" in out.stderr
