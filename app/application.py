"""The running tray app: one per user; it joins a run, trains when allowed and shows how it goes.

:class:`TrayApp` wires the pieces: worker events arrive through :class:`WorkerBridge` and are folded
into :class:`AppState`, which the tray icon and the Status window render; menu clicks and the pause
policy (checked on a slow timer) drive the supervisor. Nothing polls: the app sleeps between events.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication, QDialog

from hiveling.app.dialogs.join import JoinDialog
from hiveling.app.dialogs.settings import SettingsDialog
from hiveling.app.loglines import log_line
from hiveling.app.state import AppState, Notice
from hiveling.app.tray import TrayIcon
from hiveling.app.windows.logs import LogsWindow
from hiveling.app.windows.status import StatusWindow
from hiveling.app.worker_process import SupervisorFactory, WorkerBridge, worker_options
from hiveling.core import Event, Settings, load_contribution, paths, write_json

logger = logging.getLogger(__name__)

#: Test hook: after every change the app writes what it shows (look, tooltip, menu) to this JSON file.
ENV_STATE_FILE = "HIVELING_APP_STATE_FILE"
#: Plays this recorded event stream (.jsonl) instead of starting the worker: GUI tests and demos.
ENV_REPLAY = "HIVELING_APP_REPLAY"
POLICY_INTERVAL_MS = 30_000
SNOOZE = timedelta(hours=1)
LOG_LINES = 2000
BY_YOU = "by you"
HEAVY_MODULES = ("torch", "hivemind", "lightning")  # the worker's, never the GUI's


class TrayApp(QObject):
    """The running app: state, tray, windows and the worker, wired together.

    ``conditions`` answers ``idle_seconds()`` and ``on_battery()`` (default: the platform's).
    """

    noticed = Signal(object)  # every Notice shown (or logged, without a tray)

    def __init__(
        self,
        settings: Settings,
        *,
        use_tray: bool = True,
        factory: SupervisorFactory | None = None,
        settings_path: Path | None = None,
        detect_devices: bool = True,
        worker_env: dict[str, str] | None = None,
        conditions: Any = None,
        on_quit: Callable[[], object] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.settings_path = settings_path
        self.use_tray = use_tray
        self.detect_devices = detect_devices
        self.worker_env = worker_env or {}
        self.state = AppState()
        self.state.price_per_kwh, self.state.currency = settings.price_per_kwh, settings.currency
        self.bridge = WorkerBridge(factory, self)
        self.bridge.received.connect(self.on_event)
        self.tray = TrayIcon(self) if use_tray else None
        self.status: StatusWindow | None = None
        self.logs: LogsWindow | None = None
        self.join_dialog: QDialog | None = None  # while open: tests and "bring to front" reach it
        self.settings_dialog: QDialog | None = None
        self.log_lines: deque[str] = deque(maxlen=LOG_LINES)
        self.token: str | None = None
        self.user_paused = False
        self.snoozed_until: datetime | None = None
        self.quitting = False
        self._conditions: Any = conditions
        self._on_quit = on_quit or QApplication.quit
        self.status_opened = 0  # how often the Status window was asked for (tests of "bring to front")
        self._state_file = os.environ.get(ENV_STATE_FILE)

        self.policy_timer = QTimer(self)
        self.policy_timer.setInterval(POLICY_INTERVAL_MS)
        self.policy_timer.timeout.connect(self.apply_policy)
        self.snooze_timer = QTimer(self)
        self.snooze_timer.setSingleShot(True)
        self.snooze_timer.timeout.connect(self.end_snooze)
        if self.tray is not None:
            self.tray.start_requested.connect(self.start_training)
            self.tray.pause_requested.connect(self.pause)
            self.tray.snooze_requested.connect(self.snooze)
            self.tray.join_requested.connect(self.join)
            self.tray.status_requested.connect(self.open_status)
            self.tray.settings_requested.connect(self.open_settings)
            self.tray.logs_requested.connect(self.open_logs)
            self.tray.quit_requested.connect(self.quit)

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> None:
        """Shows the tray (or the Status window without one) and resumes the saved run."""
        if self.tray is not None:
            self.tray.show()
        if self.settings.invite:
            self.use_run(self.settings.invite, announce=False)
        else:
            self.render()
        if self.tray is None or not self.state.joined:
            self.open_status()

    def quit(self) -> None:
        """Stops the worker cleanly (it may take a few seconds), then leaves the event loop."""
        if self.quitting:
            return
        self.quitting = True
        self.policy_timer.stop()
        self.snooze_timer.stop()
        if self.tray is not None:
            self.tray.hide()
        for window in (self.status, self.logs):
            if window is not None:
                window.hide()
        self.state.expect_stop()
        self.bridge.stop()
        self.dump()
        logger.info("Quit")
        QTimer.singleShot(0, self._on_quit)  # also works when the event loop has not started yet

    # -- the run --------------------------------------------------------------------------------

    def use_run(self, token: str, *, announce: bool, run_name: str | None = None) -> None:
        """Makes ``token`` the run this computer trains for (stopping another run's worker first)."""
        if self.bridge.started:
            self.state.expect_stop()
            self.bridge.stop()
        self.token = token
        self.user_paused = False
        problem = None
        run_id = None
        try:
            from hiveling.core import InviteError, parse_invite

            try:
                # A saved run stays joined after its invite expires: the expiry limits joining only.
                invite = parse_invite(token, check_recipe=False, check_expiry=False)
                run_name, run_id = run_name or invite.run_name, invite.run_id
            except InviteError as error:
                problem = str(error)
        except ImportError:
            pass
        self.state.join(run_name or "the saved run", run_id, announce=announce)
        if run_id is not None:
            self.state.base_seconds = load_contribution(run_id).seconds
        if problem is not None:
            self.token = None
            self.state.apply({"type": "error", "code": "invite", "message": problem, "fatal": True})
            self.render()
            return
        self.policy_timer.start()
        self.apply_policy()

    def apply_policy(self) -> None:
        """Starts, resumes or pauses the worker as the settings and the machine's state say."""
        if self.token is None or self.quitting:
            return
        if self.user_paused:
            self.state.set_hold(BY_YOU)
        else:
            train, reason = self.decide()
            if train:
                self.state.set_hold(None)
                if not self.bridge.started:
                    self.bridge.start(worker_options(self.settings, self.token, self.worker_env))
                elif self.state.worker != "failed":
                    self.bridge.resume()  # the supervisor ignores it unless paused
            else:
                self.state.set_hold(reason)
                if self.bridge.started and self._worker_runs_on():
                    self.bridge.pause("now")
        self.render()

    def decide(self) -> tuple[bool, str | None]:
        now = datetime.now().astimezone()
        try:
            from hiveling.app.policy import Conditions, decide
        except ImportError:
            if self.snoozed_until is not None and now < self.snoozed_until:
                return False, f"snoozed until {self.snoozed_until:%H:%M}"
            return True, None
        if self._conditions is None:
            self._conditions = Conditions()
        idle = self._conditions.idle_seconds() if self.settings.idle_only else None
        battery = self._conditions.on_battery() if self.settings.pause_on_battery else None
        decision = decide(self.settings, now, idle, battery, self.snoozed_until)
        return decision.train, decision.reason

    # -- menu actions ---------------------------------------------------------------------------

    def start_training(self) -> None:
        if self.token is None:
            if not self.state.joined or self.settings.invite is None:
                self.join()
            else:
                self.use_run(self.settings.invite, announce=False)  # shows the invite's problem again
            return
        self.user_paused = False
        self.snoozed_until = None
        self.snooze_timer.stop()
        if self.state.worker in ("stopped", "failed"):
            self.state.expect_stop()
            self.bridge.stop()
        self.apply_policy()
        if self.state.hold is not None:
            why = f"Not now: {self.state.hold}. Settings… decide when Hiveling trains."
            self.notify(Notice("Training waits", why))

    def pause(self, when: str = "now") -> None:
        self.user_paused = True
        self.state.set_hold(BY_YOU)
        if self.bridge.started and self._worker_runs_on():
            self.bridge.pause(when)
        self.render()

    def _worker_runs_on(self) -> bool:
        """Whether the worker trains, or will by itself: an energy limit's pause ends on its own."""
        if self.state.worker in ("stopped", "failed"):
            return False
        return self.state.worker != "paused" or self.state.paused_by == "governor"

    def snooze(self) -> None:
        self.user_paused = False
        self.snoozed_until = datetime.now().astimezone() + SNOOZE
        self.snooze_timer.start(int(SNOOZE.total_seconds() * 1000))
        self.apply_policy()

    def end_snooze(self) -> None:
        self.snoozed_until = None
        self.apply_policy()

    def join(self) -> None:
        dialog = JoinDialog(self.settings, devices=self._devices(), path=self.settings_path)
        self.join_dialog = dialog
        try:
            # The dialog saves the invite and the organizer's key in the settings when it accepts.
            if dialog.exec() != QDialog.DialogCode.Accepted or dialog.invite is None:
                return
            self.use_run(dialog.token, announce=True, run_name=dialog.invite.run_name)
        finally:
            self.join_dialog = None

    def open_settings(self) -> None:
        extra = {} if self._conditions is None else {"conditions": self._conditions}
        dialog = SettingsDialog(self.settings, self._devices(), path=self.settings_path, **extra)
        dialog.changed.connect(self.apply_settings)
        self.settings_dialog = dialog
        try:
            dialog.exec()
        finally:
            self.settings_dialog = None

    def apply_settings(self, settings: Settings) -> None:
        """New settings: restart the worker when what it was started with changed, re-check the policy."""
        old = self.bridge.options
        self.settings = settings
        self.state.price_per_kwh, self.state.currency = settings.price_per_kwh, settings.currency
        if self.token is not None and self.bridge.started and old is not None:
            new = worker_options(settings, self.token, self.worker_env)
            if new != old:
                logger.info("Settings changed; restarting the worker")
                self.state.expect_stop()
                self.bridge.stop()
        self.apply_policy()

    def open_status(self, _message: str | None = None) -> None:
        self.status_opened += 1
        if self.status is None:
            self.status = StatusWindow(with_quit=self.tray is None)
            self.status.start_clicked.connect(self.start_training)
            self.status.pause_clicked.connect(self.pause)
            self.status.join_clicked.connect(self.join)
            self.status.settings_clicked.connect(self.open_settings)
            self.status.logs_clicked.connect(self.open_logs)
            self.status.quit_clicked.connect(self.quit)
            if self.tray is None:
                self.status.closed.connect(self.quit)  # without a tray, the window is the app
            if self.detect_devices:
                self._request_devices()
        self.status.show_state(self.state)
        self.status.show()
        self.status.raise_()
        self.status.activateWindow()
        for dialog in (self.join_dialog, self.settings_dialog):
            if dialog is not None and dialog.isVisible():
                dialog.raise_()  # a dialog left open behind other windows comes back too
                dialog.activateWindow()
        self.dump()

    def open_logs(self) -> None:
        if self.logs is None:
            self.logs = LogsWindow(paths.log_dir())
        tail = self.bridge.log_tail(200)
        lines = list(self.log_lines)
        if tail:
            lines += ["", "— the worker's own output, last lines —", *tail]
        self.logs.set_lines(lines)
        self.logs.show()
        self.logs.raise_()
        self.logs.activateWindow()

    # -- events and rendering -------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        changed = self.state.apply(event)
        line = log_line(event)
        if line is not None:
            self.log_lines.append(line)
            if self.logs is not None and self.logs.isVisible():
                self.logs.append_line(line)
        if event.get("type") == "hello" and self.state.run_id and self.state.base_seconds == 0:
            self.state.base_seconds = load_contribution(self.state.run_id).seconds
        if changed:
            self.render()

    def render(self) -> None:
        if self.tray is not None:
            self.tray.show_state(self.state)
        if self.status is not None:
            self.status.show_state(self.state)
        for notice in self.state.take_notices():
            self.notify(notice)
        self.dump()

    def notify(self, notice: Notice) -> None:
        self.noticed.emit(notice)
        if self.tray is not None:
            self.tray.notify(notice)
        else:
            (logger.warning if notice.error else logger.info)("%s: %s", notice.title, notice.message)

    def dump(self) -> None:
        """Writes what the app shows to $HIVELING_APP_STATE_FILE (tests read it); nothing otherwise."""
        if not self._state_file:
            return
        state, menu = self.state, self.state.menu
        write_json(
            Path(self._state_file),
            {
                "pid": os.getpid(),
                "look": state.look,
                "status_line": state.status_line,
                "tooltip": state.tooltip,
                "worker": state.worker,
                "hold": state.hold,
                "run_name": state.run_name,
                "step": state.progress.step,
                "menu": {
                    "start": menu.can_start,
                    "pause_now": menu.can_pause_now,
                    "pause_step": menu.can_pause_step,
                    "snooze": menu.can_snooze,
                },
                "tray": self.tray is not None and self.tray.icon.isVisible(),
                "tray_geometry": _geometry(self.tray),
                "status_window": self.status is not None and self.status.isVisible(),
                "status_opened": self.status_opened,
                "quitting": self.quitting,
                "heavy_modules": sorted(m for m in HEAVY_MODULES if m in sys.modules),
            },
        )

    def _devices(self) -> list[Any] | None:
        """The devices detected so far (detection starts with the Status window), or None."""
        if not self.detect_devices:
            return None
        try:
            from hiveling.app.panels.devices import device_detection
        except ImportError:
            return None
        return device_detection().devices

    def _request_devices(self) -> None:
        try:
            from hiveling.app.panels.devices import device_detection
        except ImportError:
            return
        detection = device_detection()
        detection.detected.connect(self._show_devices)
        if detection.devices is not None:
            self._show_devices(detection.devices)
        else:
            detection.request()

    def _show_devices(self, devices: list[Any]) -> None:
        if self.status is not None:
            self.status.show_devices(devices, self.state.device_id)


def _geometry(tray: TrayIcon | None) -> list[int] | None:
    if tray is None:
        return None
    rect = tray.icon.geometry()
    return [rect.x(), rect.y(), rect.width(), rect.height()] if rect.isValid() else None
