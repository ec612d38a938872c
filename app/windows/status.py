"""The Status window: what Hiveling is doing, live charts, the run's progress and this machine's share.

It also carries the tray menu's actions as buttons, because on a desktop without a system tray it is
the app's only window.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from hiveling.app.icons import icon_for
from hiveling.app.state import AppState, format_duration, format_rate, format_time_trained
from hiveling.app.windows.charts import Chart

logger = logging.getLogger(__name__)


class StatusWindow(QWidget):
    start_clicked = Signal()
    pause_clicked = Signal()
    join_clicked = Signal()
    settings_clicked = Signal()
    logs_clicked = Signal()
    quit_clicked = Signal()
    closed = Signal()

    def __init__(self, *, with_quit: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hiveling — Status")
        self.resize(820, 640)
        self._state: AppState | None = None
        self._chart_version = -1
        self._devices_shown = False

        self.icon = QLabel()
        self.icon.setFixedSize(48, 48)
        self.headline = QLabel()
        headline_font = self.headline.font()
        headline_font.setPointSizeF(headline_font.pointSizeF() * 1.5)
        headline_font.setBold(True)
        self.headline.setFont(headline_font)
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.run = QLabel()
        self.run.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        words = QVBoxLayout()
        words.addWidget(self.headline)
        words.addWidget(self.detail)
        words.addWidget(self.run)
        header = QHBoxLayout()
        header.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        header.addLayout(words, 1)

        self.mode = QLabel()
        self.step = QLabel()
        self.gathered = QLabel()
        self.gathered_name = QLabel("Next step")
        self.eta = QLabel()
        run_box = QGroupBox("The run")
        run_grid = QGridLayout(run_box)
        for row, (name, value) in enumerate(
            (
                (QLabel("Mode"), self.mode),
                (QLabel("Collaborative step"), self.step),
                (self.gathered_name, self.gathered),
                (QLabel("Expected in"), self.eta),
            )
        ):
            run_grid.addWidget(name, row, 0)
            run_grid.addWidget(value, row, 1)
        run_grid.setColumnStretch(1, 1)

        self.session = QLabel()
        self.all_time = QLabel()
        self.energy = QLabel()
        self.energy.setWordWrap(True)
        mine = QGroupBox("This computer's contribution")
        mine_grid = QGridLayout(mine)
        mine_grid.addWidget(QLabel("This session"), 0, 0)
        mine_grid.addWidget(self.session, 0, 1)
        mine_grid.addWidget(QLabel("All time, this run"), 1, 0)
        mine_grid.addWidget(self.all_time, 1, 1)
        mine_grid.addWidget(QLabel("Energy"), 2, 0)
        mine_grid.addWidget(self.energy, 2, 1)
        mine_grid.setColumnStretch(1, 1)
        boxes = QHBoxLayout()
        boxes.addWidget(run_box, 1)
        boxes.addWidget(mine, 1)

        self.speed_chart = Chart("Samples per second")
        self.loss_chart = Chart("Loss (lower is better)", zero_based=False)
        self.peers_chart = Chart("Computers training together", whole=True)
        # Shown once the worker reports a temperature (not every computer exposes one).
        self.temperature_chart = Chart("Temperature (°C), hottest device")
        self.temperature_chart.hide()
        charts = QGridLayout()
        self.charts = charts
        charts.addWidget(self.speed_chart, 0, 0, 1, 2)
        charts.addWidget(self.loss_chart, 1, 0)
        charts.addWidget(self.peers_chart, 1, 1)

        self.progress_view = QWidget()
        progress_layout = QVBoxLayout(self.progress_view)
        progress_layout.setContentsMargins(0, 0, 0, 0)
        progress_layout.addLayout(boxes)
        progress_layout.addLayout(charts, 1)
        self.welcome = QLabel(WELCOME)
        self.welcome.setWordWrap(True)
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.welcome.setContentsMargins(8, 16, 8, 8)

        self.devices_box = QGroupBox("This computer's devices")
        self.devices_layout = QVBoxLayout(self.devices_box)
        self.devices_box.hide()

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start_clicked)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.pause_clicked)
        join = QPushButton("Join a run…")
        join.clicked.connect(self.join_clicked)
        settings = QPushButton("Settings…")
        settings.clicked.connect(self.settings_clicked)
        logs = QPushButton("Logs…")
        logs.clicked.connect(self.logs_clicked)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.pause_button, join, settings, logs):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.quit_button = QPushButton("Quit Hiveling")
        self.quit_button.setToolTip("Stops training on this computer and closes Hiveling")
        self.quit_button.clicked.connect(self.quit_clicked)
        self.quit_button.setVisible(with_quit)
        buttons.addWidget(self.quit_button)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(line)
        layout.addWidget(self.progress_view, 1)
        layout.addWidget(self.welcome, 1)
        layout.addWidget(self.devices_box)
        layout.addLayout(buttons)

    def show_state(self, state: AppState) -> None:
        """Shows ``state``; the charts are handed new points only when there are new points."""
        self._state = state
        look = state.look
        headline, _, detail = state.status_line.partition(": ")
        self.icon.setPixmap(icon_for(look).pixmap(48, 48))
        self.headline.setText(headline)
        self.detail.setText(detail[:1].upper() + detail[1:])
        self.run.setText(_run_words(state))
        self.progress_view.setVisible(state.joined)
        self.welcome.setVisible(not state.joined)
        menu = state.menu
        self.start_button.setEnabled(menu.can_start)
        self.pause_button.setEnabled(menu.can_pause_now)

        p = state.progress
        self.mode.setText(_mode_words(p.local_steps))
        self.gathered_name.setText("Next step" if p.local_steps is None else "Next exchange")
        self.step.setText(f"{p.step:,}" if p.step is not None else "–")
        self.gathered.setText(_gathered_words(p.samples_accumulated, p.target_batch_size))
        training = state.worker == "training"
        self.eta.setText(_eta_words(p.eta_seconds) if training else "–")
        self.session.setText(_share_words(p.session_samples, state.session_seconds()))
        self.all_time.setText(_share_words(p.total_samples, state.total_seconds()))
        self.energy.setText(_energy_words(p, state.price_per_kwh, state.currency))
        if self.isVisible():
            self._render_charts()

    def show_devices(self, devices: list[Any], chosen: str | None) -> None:
        """Adds the device panel (detected GPUs and CPU, which one trains, why others cannot)."""
        try:
            from hiveling.app.panels.devices import DevicePanel
        except ImportError:
            logger.debug("The device panel is not available")
            return
        if not self._devices_shown:
            self.device_panel = DevicePanel(self.devices_box)
            self.devices_layout.addWidget(self.device_panel)
            self._devices_shown = True
        self.device_panel.set_devices(devices, chosen)
        self.devices_box.show()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self._render_charts()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        super().closeEvent(event)
        self.closed.emit()

    def _render_charts(self) -> None:
        state = self._state
        if state is None or state.history.version == self._chart_version:
            return
        history = state.history
        self._chart_version = history.version
        self.speed_chart.set_series(
            [("this computer", history.local_sps), ("all computers", history.collab_sps)]
        )
        self.loss_chart.set_series([("", history.loss)])
        self.peers_chart.set_series([("", history.peers)])
        if history.temperature and self.temperature_chart.isHidden():
            self.charts.removeWidget(self.speed_chart)
            self.charts.addWidget(self.speed_chart, 0, 0)
            self.charts.addWidget(self.temperature_chart, 0, 1)
            self.temperature_chart.show()
        self.temperature_chart.set_series([("", history.temperature)])


WELCOME = (
    "<p><b>Hiveling lends this computer to a deep-learning run</b>: together with other volunteers' "
    "computers it trains one model that an organizer shares with everyone.</p>"
    "<p>To begin, click <b>Join a run…</b> and paste the invite the organizer gave you "
    "(it starts with HIVE1-), or scan its QR code.</p>"
    "<p>You stay in charge: Hiveling pauses on battery and can train only when you are away or at the "
    "hours you choose (<b>Settings…</b>). Pause or quit it at any time.</p>"
)


def _run_words(state: AppState) -> str:
    if not state.joined:
        return ""
    if state.look == "error":
        return f"Run: {state.run_name} · Logs… shows what happened; Start tries again."
    words = f"Run: {state.run_name}"
    if state.device:
        words += f" · training on {state.device}"
    if state.progress.local_sps is not None and state.progress.collab_sps:
        words += f" · all computers together: {format_rate(state.progress.collab_sps)} samples/s"
    return words


def _mode_words(local_steps: int | None) -> str:
    if local_steps is None:
        return "Synchronous: every step averaged with the other computers"
    return f"Low-communication: an exchange with the others every ~{local_steps:,} local steps"


def _gathered_words(accumulated: int | None, target: int | None) -> str:
    if accumulated is None or not target:
        return "–"
    share = min(100, round(100 * accumulated / target))
    return f"{share}% gathered ({accumulated:,} of {target:,} samples)"


def _share_words(samples: int | None, seconds: float) -> str:
    count = f"{samples:,} samples" if samples is not None else "no samples yet"
    return f"{count}, {format_time_trained(seconds)} of training"


def _energy_words(p: Any, price_per_kwh: float | None, currency: str) -> str:
    """'12.3 Wh this session, 0.31 kWh for this run (estimated) · 0.09 EUR in all'."""
    from hiveling.core import energy_cost, format_energy

    if p.energy_wh is None:
        return "–"
    words = f"{format_energy(p.energy_wh)} this session"
    if p.energy_total_wh is not None:
        words += f", {format_energy(p.energy_total_wh)} for this run"
    if p.energy_estimated:
        words += " (estimated)"
    price = energy_cost(p.energy_total_wh or p.energy_wh, price_per_kwh, currency)
    return f"{words} · {price} in all" if price else words


def _eta_words(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    words = format_duration(seconds)
    return words if seconds < 1 else f"about {words}"
