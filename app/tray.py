"""The tray icon and its menu. It shows an :class:`AppState` and turns clicks into signals."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from hiveling.app.icons import icon_for
from hiveling.app.state import AppState, Notice

logger = logging.getLogger(__name__)

NOTICE_MS = 8000


class TrayIcon(QObject):
    start_requested = Signal()
    pause_requested = Signal(str)  # "now" or "step"
    snooze_requested = Signal()
    join_requested = Signal()
    status_requested = Signal()
    settings_requested = Signal()
    logs_requested = Signal()
    quit_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._look: str | None = None
        self.icon = QSystemTrayIcon(icon_for("not_joined"), self)
        self.menu = QMenu()
        self.status_action = self._add("Hiveling")
        self.status_action.setEnabled(False)
        self.menu.addSeparator()
        self.start_action = self._add("Start", self.start_requested.emit)
        self.pause_now_action = self._add("Pause now", lambda: self.pause_requested.emit("now"))
        self.pause_step_action = self._add("Pause after this step", lambda: self.pause_requested.emit("step"))
        self.snooze_action = self._add("Snooze for 1 hour", self.snooze_requested.emit)
        self.menu.addSeparator()
        self.join_action = self._add("Join a run…", self.join_requested.emit)
        self.open_status_action = self._add("Status…", self.status_requested.emit)
        self.settings_action = self._add("Settings…", self.settings_requested.emit)
        self.logs_action = self._add("Logs…", self.logs_requested.emit)
        self.menu.addSeparator()
        self.quit_action = self._add("Quit", self.quit_requested.emit)
        self.quit_action.setToolTip("Stops training on this computer and closes Hiveling")
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)

    def show_state(self, state: AppState) -> None:
        look = state.look
        if look != self._look:
            self.icon.setIcon(icon_for(look))
            self._look = look
        self.icon.setToolTip(state.tooltip)
        self.status_action.setText(state.status_line)
        menu = state.menu
        self.start_action.setEnabled(menu.can_start)
        self.pause_now_action.setEnabled(menu.can_pause_now)
        self.pause_step_action.setEnabled(menu.can_pause_step)
        self.snooze_action.setEnabled(menu.can_snooze)

    def show(self) -> None:
        self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def notify(self, notice: Notice) -> None:
        icons = QSystemTrayIcon.MessageIcon
        level = icons.Critical if notice.error else icons.Information
        if self.icon.isVisible() and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(notice.title, notice.message, level, NOTICE_MS)
        log = logger.warning if notice.error else logger.info
        log("%s: %s", notice.title, notice.message)

    def _add(self, text: str, slot: object = None) -> QAction:
        action = self.menu.addAction(text)
        if slot is not None:
            action.triggered.connect(slot)
        return action

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.status_requested.emit()
