"""The tray icon, its menu and every menu path of the running app, driven by a replayed worker stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from hiveling.app.application import TrayApp
from hiveling.app.icons import icon_for
from hiveling.app.instance import SingleInstance
from hiveling.app.state import AppState, Notice
from hiveling.app.tray import TrayIcon
from hiveling.app.worker_process import ReplaySupervisor, read_stream
from hiveling.core.config import Settings, load_settings, save_settings
from hiveling.core.invites.invite import OrganizerKey, make_invite

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"
PEER = "/ip4/203.0.113.5/tcp/31337/p2p/QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"
TIMEOUT_MS = 5000


def invite_token(run_name: str = "Glyph classifier", seed: int = 7) -> str:
    key = OrganizerKey(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))
    invite = make_invite(
        key,
        run_name=run_name,
        recipe="glyphs",
        recipe_version="2.0",
        hparams={},
        target_batch_size=256,
        peers=[PEER],
        expires=datetime.now(UTC) + timedelta(days=30),
    )
    return invite.token


class Machine:
    """What the platform would report (battery, idle time): set by the test."""

    def __init__(self) -> None:
        self.battery: bool | None = None
        self.idle: float | None = None

    def on_battery(self) -> bool | None:
        return self.battery

    def idle_seconds(self) -> float | None:
        return self.idle


class Harness:
    def __init__(self, app: TrayApp, machine: Machine) -> None:
        self.app = app
        self.machine = machine
        self.quits = 0
        self.notices: list[Notice] = []
        self.supervisors: list[ReplaySupervisor] = []
        app.noticed.connect(self.notices.append)

    @property
    def supervisor(self) -> ReplaySupervisor:
        return self.supervisors[-1]


@pytest.fixture
def make_app(qtbot: Any, app_home: Path) -> Iterator[Any]:
    harnesses: list[Harness] = []

    def make(invite: str | None = None, *, fixture: str = "training.jsonl", use_tray: bool = True) -> Harness:
        settings = Settings(invite=invite, pause_on_battery=True)
        save_settings(settings)
        machine = Machine()
        holder: dict[str, Harness] = {}

        def factory(options: Any, on_event: Any) -> ReplaySupervisor:
            supervisor = ReplaySupervisor(FIXTURES / fixture, on_event, interval_ms=1)
            supervisor.options = options  # type: ignore[attr-defined]
            holder["h"].supervisors.append(supervisor)
            return supervisor

        app = TrayApp(
            settings,
            use_tray=use_tray,
            factory=factory,
            detect_devices=False,
            conditions=machine,
            on_quit=lambda: setattr(holder["h"], "quits", holder["h"].quits + 1),
        )
        harness = holder["h"] = Harness(app, machine)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.app.quit()
        for window in (harness.app.status, harness.app.logs):
            if window is not None:
                window.close()
                window.deleteLater()


def wait_for(qtbot: Any, condition: Any) -> None:
    qtbot.waitUntil(condition, timeout=TIMEOUT_MS)


def menu_texts(tray: TrayIcon) -> list[str]:
    return [action.text() for action in tray.menu.actions()]


def test_the_menu_offers_every_action_in_order(qtbot: Any) -> None:
    tray = TrayIcon()
    tray.show_state(AppState())
    assert menu_texts(tray) == [
        "Not joined: choose “Join a run…” to start helping",
        "",
        "Start",
        "Pause now",
        "Pause after this step",
        "Snooze for 1 hour",
        "",
        "Join a run…",
        "Status…",
        "Settings…",
        "Logs…",
        "",
        "Quit",
    ]
    assert not tray.status_action.isEnabled()
    training = [tray.start_action, tray.pause_now_action, tray.pause_step_action, tray.snooze_action]
    assert [a.isEnabled() for a in training] == [False, False, False, False]
    assert all(a.isEnabled() for a in (tray.join_action, tray.settings_action, tray.quit_action))


def test_the_icon_and_tooltip_follow_the_state(qtbot: Any) -> None:
    tray = TrayIcon()
    state = AppState()
    tray.show_state(state)
    assert tray.icon.icon().cacheKey() == icon_for("not_joined").cacheKey()
    state.join("Glyph classifier")
    for item in read_stream((FIXTURES / "training.jsonl").read_bytes()):
        state.apply(item)
    tray.show_state(state)
    assert tray.icon.icon().cacheKey() == icon_for("training").cacheKey()
    assert tray.icon.toolTip() == state.tooltip
    assert tray.icon.toolTip().startswith("Training: ")
    assert tray.status_action.text() == state.status_line
    assert [tray.pause_now_action.isEnabled(), tray.start_action.isEnabled()] == [True, False]


def test_menu_entries_and_a_click_on_the_icon_emit_their_requests(qtbot: Any) -> None:
    tray = TrayIcon()
    heard: list[object] = []
    tray.start_requested.connect(lambda: heard.append("start"))
    tray.pause_requested.connect(lambda when: heard.append(f"pause:{when}"))
    tray.snooze_requested.connect(lambda: heard.append("snooze"))
    tray.join_requested.connect(lambda: heard.append("join"))
    tray.status_requested.connect(lambda: heard.append("status"))
    tray.settings_requested.connect(lambda: heard.append("settings"))
    tray.logs_requested.connect(lambda: heard.append("logs"))
    tray.quit_requested.connect(lambda: heard.append("quit"))
    for action in tray.menu.actions():
        action.setEnabled(True)
        action.trigger()
    tray.icon.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)
    tray.icon.activated.emit(QSystemTrayIcon.ActivationReason.Context)  # the menu opens; nothing else
    assert heard == [
        "start", "pause:now", "pause:step", "snooze", "join", "status", "settings", "logs", "quit", "status"
    ]  # fmt: skip


def test_a_saved_run_trains_then_pause_start_snooze_and_quit_work(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token())
    app = h.app
    app.start()
    assert app.tray is not None
    assert app.tray.icon.isVisible()
    assert app.status is None  # a joined volunteer is not interrupted by a window
    wait_for(qtbot, lambda: app.state.progress.step == 1214)
    assert app.state.look == "training"
    assert h.supervisor.options.invite == app.token
    assert [n.title for n in h.notices] == ["Hiveling"]  # the replayed checkpoint error; not "Joined"

    app.tray.pause_now_action.trigger()
    wait_for(qtbot, lambda: app.state.worker == "paused")
    assert app.tray.icon.toolTip().startswith("Paused: by you\n")
    assert app.tray.icon.icon().cacheKey() == icon_for("paused").cacheKey()
    assert app.tray.start_action.isEnabled()
    assert not app.tray.pause_now_action.isEnabled()
    app.apply_policy()  # the slow timer fires: a pause by the volunteer stays
    assert app.state.status_line == "Paused: by you"

    app.tray.start_action.trigger()
    wait_for(qtbot, lambda: app.state.look == "training")
    app.tray.pause_step_action.trigger()
    wait_for(qtbot, lambda: app.state.worker == "paused")

    app.tray.snooze_action.trigger()
    assert app.snooze_timer.isActive()
    assert 3590_000 < app.snooze_timer.remainingTime() <= 3601_000  # coarse timers may add a little
    later = datetime.now().astimezone() + timedelta(hours=1)
    allowed = {f"Paused: snoozed until {later - timedelta(minutes=m):%H:%M}" for m in (0, 1)}
    assert app.state.status_line in allowed
    assert app.tray.icon.toolTip().startswith("Paused: snoozed until ")
    app.end_snooze()  # the hour is over
    wait_for(qtbot, lambda: app.state.look == "training")
    assert h.supervisor.commands == ["start", "pause:now", "resume", "pause:step", "resume"]

    app.tray.quit_action.trigger()
    assert h.supervisor.commands[-1] == "stop"
    assert not app.tray.icon.isVisible()
    wait_for(qtbot, lambda: h.quits == 1)
    assert len(h.supervisors) == 1


def test_the_policy_pauses_on_battery_and_resumes_on_mains(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token())
    h.machine.battery = True
    h.app.start()
    assert h.supervisors == []  # no worker is started just to be paused
    assert h.app.tray is not None
    assert h.app.tray.icon.toolTip().startswith("Paused: on battery\n")
    h.app.tray.start_action.trigger()  # the volunteer insists; the settings still say no
    assert h.supervisors == []
    assert h.notices[-1].title == "Training waits"
    assert h.notices[-1].message == "Not now: on battery. Settings… decide when Hiveling trains."

    h.machine.battery = False
    h.app.policy_timer.timeout.emit()
    wait_for(qtbot, lambda: h.app.state.look == "training")
    h.machine.battery = True
    h.app.policy_timer.timeout.emit()
    wait_for(qtbot, lambda: h.app.state.worker == "paused")
    assert h.app.state.status_line == "Paused: on battery"
    assert h.supervisor.commands == ["start", "pause:now"]
    assert h.app.policy_timer.isActive()
    assert h.app.policy_timer.interval() == 30_000


def test_a_saved_invite_that_is_not_valid_shows_why_and_starts_nothing(qtbot: Any, make_app: Any) -> None:
    h = make_app("HIVE1-NOTANINVITE")
    h.app.start()
    assert h.supervisors == []
    assert h.app.state.look == "error"
    assert h.app.state.status_line.startswith("Error: ")
    assert "\n" not in h.app.state.status_line
    assert h.notices
    assert h.notices[0].error


def test_joining_from_the_menu_starts_the_run_and_remembers_the_organizer(
    qtbot: Any, make_app: Any, app_home: Path
) -> None:
    h = make_app(None)
    app = h.app
    app.start()
    assert app.status is not None
    assert app.status.isVisible()  # not joined yet: the Status window says how to begin
    assert app.state.look == "not_joined"
    token = invite_token("Dream run")

    def fill_in() -> None:
        dialog = app.join_dialog
        assert dialog is not None
        dialog.text.setPlainText(token)
        dialog.accept()

    QTimer.singleShot(0, fill_in)
    assert app.tray is not None
    app.tray.join_action.trigger()
    wait_for(qtbot, lambda: app.state.look == "training")
    assert app.state.run_name == "Glyph classifier"  # what the (replayed) worker said in its hello
    assert [n.title for n in h.notices][:1] == ["Joined"]
    saved = load_settings()
    assert saved.invite == token
    assert list(saved.known_organizers) == ["Dream run"]


def test_a_cancelled_join_changes_nothing(qtbot: Any, make_app: Any) -> None:
    h = make_app(None)
    h.app.start()
    QTimer.singleShot(0, lambda: h.app.join_dialog.reject())  # type: ignore[union-attr]
    h.app.join()
    assert h.supervisors == []
    assert h.app.state.look == "not_joined"


def test_new_settings_restart_the_worker_with_them(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token())
    h.app.start()
    wait_for(qtbot, lambda: h.app.state.look == "training")

    def change() -> None:
        dialog = h.app.settings_dialog
        assert dialog is not None
        dialog.cpu_threads.setValue(1)
        dialog.accept()

    QTimer.singleShot(0, change)
    assert h.app.tray is not None
    h.app.tray.settings_action.trigger()
    assert len(h.supervisors) == 2
    assert h.supervisors[0].commands[-1] == "stop"
    assert h.supervisor.options.cpu_threads == 1
    assert load_settings().cpu_threads == 1
    wait_for(qtbot, lambda: h.app.state.look == "training")

    QTimer.singleShot(0, lambda: h.app.settings_dialog.reject())  # type: ignore[union-attr]
    h.app.open_settings()
    assert len(h.supervisors) == 2


def test_logs_show_what_the_worker_reported(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token())
    h.app.start()
    wait_for(qtbot, lambda: h.app.state.progress.step == 1214)
    assert h.app.tray is not None
    h.app.tray.logs_action.trigger()
    logs = h.app.logs
    assert logs is not None
    assert logs.isVisible()
    lines = logs.lines()
    assert any(line.endswith("INFO    checkpoint saved at step 1205") for line in lines)
    assert any(line.endswith("STATE   training") for line in lines)
    assert "— the worker's own output, last lines —" in lines
    h.app.on_event({"type": "log", "level": "warning", "message": "one more"})
    assert logs.lines()[-1] == "--:--:-- WARNING one more"


def test_status_from_the_menu_and_a_click(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token())
    h.app.start()
    assert h.app.tray is not None
    h.app.tray.icon.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)
    assert h.app.status is not None
    assert h.app.status.isVisible()
    assert not h.app.status.quit_button.isVisible()  # the tray has Quit
    h.app.status.close()
    assert h.quits == 0  # with a tray, closing the window only closes the window
    h.app.tray.open_status_action.trigger()
    assert h.app.status.isVisible()
    assert h.app.status_opened == 2


def test_without_a_tray_the_status_window_is_the_app(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token(), use_tray=False)
    h.app.start()
    status = h.app.status
    assert status is not None
    assert status.isVisible()
    assert status.quit_button.isVisible()
    wait_for(qtbot, lambda: status.headline.text() == "Training")
    status.pause_button.click()
    wait_for(qtbot, lambda: status.headline.text() == "Paused")
    assert status.detail.text() == "By you"
    assert status.start_button.isEnabled()
    status.close()
    wait_for(qtbot, lambda: h.quits == 1)
    assert h.supervisor.commands[-1] == "stop"


def test_a_crash_loop_notifies_and_shows_the_error(qtbot: Any, make_app: Any) -> None:
    h = make_app(invite_token(), fixture="crash_loop.jsonl")
    h.app.start()
    wait_for(qtbot, lambda: h.app.state.worker == "failed")
    assert h.app.state.look == "error"
    assert h.app.tray is not None
    assert h.app.tray.icon.icon().cacheKey() == icon_for("error").cacheKey()
    assert [n.error for n in h.notices] == [True, True]
    h.app.start_training()  # Start after a failure starts a fresh worker
    assert len(h.supervisors) == 2


def test_a_second_instance_hands_over_and_exits(qtbot: Any, app_home: Path) -> None:
    app_home.mkdir(parents=True, exist_ok=True)
    first, second = SingleInstance(app_home), SingleInstance(app_home)
    try:
        assert first.claim()
        with qtbot.waitSignal(first.message, timeout=TIMEOUT_MS) as blocker:
            assert not second.claim()
        assert blocker.args == ["show"]
    finally:
        first.release()
    third = SingleInstance(app_home)
    try:
        assert third.claim()  # the lock is free again once the first let go
    finally:
        third.release()


def test_the_state_dump_says_what_the_tray_shows(
    qtbot: Any, make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = tmp_path / "state.json"
    monkeypatch.setenv("HIVELING_APP_STATE_FILE", str(dump))
    h = make_app(invite_token())
    h.app.start()
    wait_for(qtbot, lambda: h.app.state.progress.step == 1214)
    shown = json.loads(dump.read_text())
    assert shown["look"] == "training"
    assert shown["tooltip"] == h.app.state.tooltip
    assert shown["menu"] == {"start": False, "pause_now": True, "pause_step": True, "snooze": True}
    assert shown["tray"] is True
    assert QApplication.instance() is not None


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_the_app_drives_a_real_worker(qtbot: Any, local_invite: str, app_home: Path) -> None:
    """A real worker process joins a real host on 127.0.0.1: train, pause both ways from the menu, quit."""
    notices: list[Notice] = []
    app = TrayApp(
        Settings(invite=local_invite, pause_on_battery=False),
        detect_devices=False,
        conditions=Machine(),
        on_quit=lambda: None,
    )
    app.noticed.connect(notices.append)
    try:
        app.start()
        qtbot.waitUntil(
            lambda: app.state.look == "training" and app.state.progress.step is not None, timeout=150_000
        )
        assert app.state.run_name == "Glyph classifier"
        assert app.state.device_id == "cpu"
        assert app.tray is not None
        assert app.tray.icon.toolTip().startswith("Training: ")

        # "Pause after this step": "Pause now" followed by a quick Start races in the supervisor (see
        # the report: two workers, one left behind by stop()).
        app.tray.pause_step_action.trigger()
        qtbot.waitUntil(lambda: app.state.worker == "pausing", timeout=30_000)
        assert app.tray.icon.toolTip().startswith("Pausing: by you\n")
        qtbot.waitUntil(lambda: app.state.worker == "paused", timeout=60_000)
        assert app.tray.icon.toolTip().startswith("Paused: by you\n")

        app.tray.start_action.trigger()
        qtbot.waitUntil(lambda: app.state.worker == "training", timeout=150_000)

        app.tray.pause_now_action.trigger()  # frees the device at once; Start rejoins with the same identity
        qtbot.waitUntil(lambda: app.state.worker == "paused", timeout=30_000)
        assert app.tray.icon.toolTip().startswith("Paused: by you\n")
        app.tray.start_action.trigger()
        qtbot.waitUntil(lambda: app.state.worker == "training", timeout=150_000)
    finally:
        app.quit()  # blocks until the worker is gone; the leak check below the test proves it
    assert app.bridge.started is False
    assert [n.title for n in notices if n.error] == []
    assert [n.title for n in notices][:1] != ["Joined"]  # a saved run is not announced as joined
