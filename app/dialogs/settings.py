"""The settings dialog: which device trains and how much of it, when to train, starting at login, and
the energy limits and price."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTime, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTabWidget,
    QTimeEdit,
    QVBoxLayout,
    QWidget,
)

from hiveling.app.panels.devices import DevicePanel, device_detection
from hiveling.app.platform.autostart import Autostart, autostart_for_platform, launch_command
from hiveling.app.policy import Conditions, parse_schedule
from hiveling.core import Settings, save_settings

if TYPE_CHECKING:
    from hiveling.core import Device

logger = logging.getLogger(__name__)

AUTO = "auto"
IDLE_UNKNOWN = (
    "This desktop does not tell programs whether you are using the computer (Wayland sessions "
    "and remote desktops often do not), so Hiveling cannot wait until you are away."
)
ERROR_STYLE = "color: #b3261e"
NO_TEMPERATURE_LIMIT = 29  # the temperature box's "No limit"; limits go from 30 °C


class SettingsDialog(QDialog):
    """Edits a copy of ``settings``; Save writes it with ``save_settings`` and emits ``changed``."""

    changed = Signal(object)  # the new Settings

    def __init__(
        self,
        settings: Settings,
        devices: Sequence[Device] | None = None,
        parent: QWidget | None = None,
        *,
        autostart: Autostart | None = None,
        conditions: Conditions | None = None,
        path: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hiveling settings")
        self.setMinimumWidth(560)
        self.settings = settings
        self._path = path
        self._autostart = autostart or autostart_for_platform()
        conditions = conditions or Conditions()
        self.idle_known = conditions.idle_seconds() is not None

        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        device_page = QWidget()
        device_layout = QVBoxLayout(device_page)
        device_layout.addWidget(self._device_group(settings))
        device_layout.addStretch()
        when_page = QWidget()
        when_layout = QVBoxLayout(when_page)
        when_layout.addWidget(self._when_group(settings))
        when_layout.addWidget(self._startup_group(settings))
        when_layout.addStretch()
        self.tabs.addTab(device_page, "Device")
        self.tabs.addTab(when_page, "When to train")
        energy_page = QWidget()
        energy_layout = QVBoxLayout(energy_page)
        energy_layout.addWidget(self._energy_group(settings))
        energy_layout.addStretch()
        self.tabs.addTab(energy_page, "Energy")
        layout.addWidget(self.tabs)
        self.error = QLabel()
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        if devices is not None:
            self.set_devices(devices)
        else:
            detection = device_detection()
            if detection.devices is not None:
                self.set_devices(detection.devices)
            else:
                detection.detected.connect(self.set_devices)
                detection.request()

    # --- building -------------------------------------------------------------------------------

    def _device_group(self, settings: Settings) -> QGroupBox:
        group = QGroupBox("What trains")
        column = QVBoxLayout(group)
        form = QFormLayout()
        column.addLayout(form)
        self.device = QComboBox()
        self.device.setToolTip("The graphics card (or the processor) that trains.")
        self.device.addItem("Automatic: the best device this computer has", AUTO)
        self._devices: list[Device] | None = None
        self._select_device(settings.device)
        self.device.currentIndexChanged.connect(self._show_chosen_device)
        form.addRow("Train on:", self.device)

        self.memory_cap = QDoubleSpinBox()
        self.memory_cap.setRange(0, 1024)
        self.memory_cap.setDecimals(1)
        self.memory_cap.setSingleStep(0.5)
        self.memory_cap.setSuffix(" GiB")
        self.memory_cap.setSpecialValueText("No limit")
        self.memory_cap.setValue(settings.memory_cap_gb or 0)
        self.memory_cap.setToolTip(
            "Hiveling uses at most this much of the device's memory. Lower it if games or other "
            "programs run out of memory while Hiveling trains."
        )
        form.addRow("Memory limit:", self.memory_cap)

        cores = os.cpu_count() or 1
        self.cpu_threads = QSpinBox()
        self.cpu_threads.setRange(0, max(cores, settings.cpu_threads or 0))
        self.cpu_threads.setSpecialValueText(f"Automatic (half of the {cores} cores)")
        self.cpu_threads.setValue(settings.cpu_threads or 0)
        self.cpu_threads.setToolTip("How many processor cores train when the processor is the device.")
        form.addRow("Processor threads:", self.cpu_threads)

        self.device_panel = DevicePanel()
        column.addWidget(self.device_panel)
        return group

    def _when_group(self, settings: Settings) -> QGroupBox:
        group = QGroupBox("Pause training")
        column = QVBoxLayout(group)
        self.pause_on_battery = QCheckBox("Pause while the computer runs on battery")
        self.pause_on_battery.setChecked(settings.pause_on_battery)
        column.addWidget(self.pause_on_battery)

        idle_row = QHBoxLayout()
        self.idle_only = QCheckBox("Train only when I am away from the computer, after")
        self.idle_only.setChecked(settings.idle_only)
        self.idle_minutes = QSpinBox()
        self.idle_minutes.setRange(1, 240)
        self.idle_minutes.setSuffix(" min")
        self.idle_minutes.setValue(settings.idle_minutes)
        idle_row.addWidget(self.idle_only)
        idle_row.addWidget(self.idle_minutes)
        idle_row.addStretch()
        column.addLayout(idle_row)
        self.idle_note = QLabel(IDLE_UNKNOWN)
        self.idle_note.setWordWrap(True)
        self.idle_note.setVisible(not self.idle_known)
        column.addWidget(self.idle_note)
        if not self.idle_known:
            for widget in (self.idle_only, self.idle_minutes):
                widget.setEnabled(False)
                widget.setToolTip(IDLE_UNKNOWN)
        else:
            self.idle_only.toggled.connect(self.idle_minutes.setEnabled)
            self.idle_minutes.setEnabled(settings.idle_only)

        schedule_row = QHBoxLayout()
        window = parse_schedule(settings.schedule)
        self.use_schedule = QCheckBox("Train only between")
        self.use_schedule.setChecked(window is not None)
        self.schedule_start = QTimeEdit()
        self.schedule_end = QTimeEdit()
        start, end = window or (None, None)
        for edit, value, default in ((self.schedule_start, start, 22), (self.schedule_end, end, 7)):
            edit.setDisplayFormat("HH:mm")
            edit.setTime(QTime(value.hour, value.minute) if value else QTime(default, 0))
            edit.setEnabled(window is not None)
            self.use_schedule.toggled.connect(edit.setEnabled)
        schedule_row.addWidget(self.use_schedule)
        schedule_row.addWidget(self.schedule_start)
        schedule_row.addWidget(QLabel("and"))
        schedule_row.addWidget(self.schedule_end)
        schedule_row.addStretch()
        column.addLayout(schedule_row)
        return group

    def _startup_group(self, settings: Settings) -> QGroupBox:
        group = QGroupBox("Startup")
        column = QVBoxLayout(group)
        self.start_at_login = QCheckBox("Start Hiveling when I log in")
        self.start_at_login.setChecked(settings.start_at_login)
        column.addWidget(self.start_at_login)
        return group

    def _energy_group(self, settings: Settings) -> QGroupBox:
        from hiveling.core import parse_power_limit

        group = QGroupBox("Keep the computer cool, quiet and cheap")
        form = QFormLayout(group)
        self.temperature_limit = QSpinBox()
        # The lowest value stands for "no limit": limits below 30 °C would never let training resume.
        self.temperature_limit.setRange(NO_TEMPERATURE_LIMIT, 110)
        self.temperature_limit.setSuffix(" °C")
        self.temperature_limit.setSpecialValueText("No limit")
        limit = settings.temperature_limit_c
        self.temperature_limit.setValue(int(limit) if limit else NO_TEMPERATURE_LIMIT)
        self.temperature_limit.setToolTip(
            "Above this, Hiveling trains more slowly, then pauses, until the processor and graphics card "
            "have cooled down 5 °C under it."
        )
        form.addRow("Temperature limit:", self.temperature_limit)

        self.power_limit = QSpinBox()
        self.power_limit.setRange(0, 5000)
        self.power_limit.setSpecialValueText("No limit")
        self.power_unit = QComboBox()
        self.power_unit.addItem("watts", "W")
        self.power_unit.addItem("% of the device's rating", "%")
        watts, share = (None, None)
        if settings.power_limit:
            try:
                watts, share = parse_power_limit(settings.power_limit)
            except ValueError:
                logger.warning("Ignoring the power limit %r in the settings", settings.power_limit)
        self.power_unit.setCurrentIndex(1 if share is not None else 0)
        self.power_limit.setValue(round(share * 100) if share is not None else int(watts or 0))
        self.power_limit.setToolTip("Hiveling rests between batches to keep the device's power under this.")
        power_row = QHBoxLayout()
        power_row.addWidget(self.power_limit)
        power_row.addWidget(self.power_unit)
        form.addRow("Power limit:", power_row)

        self.daily_energy = QSpinBox()
        self.daily_energy.setRange(0, 100_000)
        self.daily_energy.setSuffix(" Wh")
        self.daily_energy.setSpecialValueText("No limit")
        self.daily_energy.setValue(int(settings.daily_energy_wh or 0))
        self.daily_energy.setToolTip(
            "Once training has used this much energy today, it pauses until midnight."
        )
        form.addRow("Energy per day:", self.daily_energy)

        self.price = QDoubleSpinBox()
        self.price.setRange(0, 100)
        self.price.setDecimals(3)
        self.price.setSingleStep(0.01)
        self.price.setSpecialValueText("Not set (no cost shown)")
        self.price.setValue(settings.price_per_kwh or 0)
        self.currency = QLineEdit(settings.currency)
        self.currency.setMaxLength(8)
        self.currency.setPlaceholderText("EUR, USD, …")
        price_row = QHBoxLayout()
        price_row.addWidget(self.price)
        price_row.addWidget(QLabel("per kWh, in"))
        price_row.addWidget(self.currency)
        form.addRow("Electricity price:", price_row)
        return group

    def _power_limit_text(self) -> str | None:
        value = self.power_limit.value()
        if not value:
            return None
        unit = self.power_unit.currentData()
        return f"{min(max(value, 5), 100)}%" if unit == "%" else f"{value}W"

    # --- devices --------------------------------------------------------------------------------

    def set_devices(self, devices: Sequence[Device]) -> None:
        """Offers ``devices`` in the device list and shows them in the panel."""
        wanted = self.device.currentData()
        while self.device.count() > 1:
            self.device.removeItem(1)
        for device in devices:
            self.device.addItem(device.label, device.torch_device)
            index = self.device.count() - 1
            if not device.usable:
                item = self.device.model().item(index)  # type: ignore[attr-defined]
                item.setEnabled(False)
                item.setToolTip(f"Cannot train: {device.reason}")
        self._devices = list(devices)
        self._select_device(wanted)
        self._show_chosen_device()

    def _show_chosen_device(self) -> None:
        """Marks in the panel the device that the selection would train on."""
        from hiveling.core import DeviceError, choose_device

        if self._devices is None:
            return
        try:
            chosen: str | None = choose_device(self._devices, self.device.currentData() or AUTO).torch_device
        except DeviceError:
            chosen = None
        self.device_panel.set_devices(self._devices, chosen)

    def _select_device(self, wanted: str) -> None:
        index = self.device.findData(wanted)
        if index < 0:  # a device set before that is not (yet) detected: keep it
            self.device.addItem(f"{wanted} (not detected)", wanted)
            index = self.device.count() - 1
        self.device.setCurrentIndex(index)

    # --- result ---------------------------------------------------------------------------------

    def chosen_settings(self) -> Settings:
        """The settings as the dialog shows them."""
        schedule = None
        if self.use_schedule.isChecked():
            schedule = [edit.time().toString("HH:mm") for edit in (self.schedule_start, self.schedule_end)]
        return dataclasses.replace(
            self.settings,
            device=self.device.currentData() or AUTO,
            memory_cap_gb=self.memory_cap.value() or None,
            cpu_threads=self.cpu_threads.value() or None,
            pause_on_battery=self.pause_on_battery.isChecked(),
            idle_only=self.idle_only.isChecked(),
            idle_minutes=self.idle_minutes.value(),
            schedule=schedule,
            start_at_login=self.start_at_login.isChecked(),
            known_organizers=dict(self.settings.known_organizers),
            temperature_limit_c=(
                float(self.temperature_limit.value())
                if self.temperature_limit.value() > NO_TEMPERATURE_LIMIT
                else None
            ),
            power_limit=self._power_limit_text(),
            daily_energy_wh=float(self.daily_energy.value()) or None,
            price_per_kwh=self.price.value() or None,
            currency=self.currency.text().strip(),
        )

    def accept(self) -> None:
        new = self.chosen_settings()
        try:
            if new.start_at_login:
                self._autostart.enable(launch_command())  # again each time: the install may have moved
            elif self._autostart.is_enabled():
                self._autostart.disable()
        except OSError as error:
            self._show_error(f"Could not change starting at login ({error}); untick it or try again.")
            return
        try:
            save_settings(new, self._path)
        except OSError as error:
            self._show_error(f"Could not save the settings ({error}); check that the disk is not full.")
            return
        self.settings = new
        self.changed.emit(new)
        super().accept()

    def _show_error(self, text: str) -> None:
        logger.warning("%s", text)
        self.error.setText(text)
        self.error.show()
