"""The device panel: the GPUs and CPU this machine has, which one trains, and why others cannot."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

if TYPE_CHECKING:
    from hiveling.core import Device

logger = logging.getLogger(__name__)

GIB = 2**30
USED = "#1b7f3b"
UNUSABLE = "#b3261e"


def format_memory(amount: int | None) -> str:
    """Bytes for people: "512 MiB", "7.8 GiB" (binary units, as the device labels use)."""
    if amount is None:
        return "unknown"
    if amount < 2**20:
        return "under 1 MiB"
    if amount < GIB:
        return f"{amount / 2**20:.0f} MiB"
    gib = amount / GIB
    return f"{gib:.1f} GiB" if gib < 100 else f"{gib:,.0f} GiB"


def memory_words(device: Device) -> str:
    total, free = device.total_memory, device.free_memory
    if total is None and free is None:
        return "unknown"
    if free is None:
        return format_memory(total)
    if total is None:
        return f"{format_memory(free)} free"
    return f"{format_memory(free)} free of {format_memory(total)}"


def details_words(device: Device) -> str:
    parts = []
    if device.driver:
        parts.append(f"driver {device.driver}")
    if device.compute_capability:
        parts.append(f"compute capability {device.compute_capability}")
    return ", ".join(parts)


class DeviceDetection(QObject):
    """Detects the machine's devices once, off the GUI thread (it can take a second); later callers
    read the cached list. ``detected`` carries the list to the GUI thread."""

    detected = Signal(object)  # list[Device]

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[Device] | None = None
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Starts a detection unless one has run or is running; ``detected`` fires when it is done."""
        if self.devices is None and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._detect, name="hiveling-devices", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _detect(self) -> None:
        from hiveling.core import detect_devices

        try:
            devices = detect_devices()
        except Exception:  # a broken probe must not take the tray down; the CPU is always there
            logger.exception("Device detection failed")
            devices = []
        self.devices = devices
        self.detected.emit(devices)


_shared: DeviceDetection | None = None


def device_detection() -> DeviceDetection:
    """The app-wide detection; created on first use, in the GUI thread."""
    global _shared
    if _shared is None:
        _shared = DeviceDetection()
    return _shared


class DevicePanel(QWidget):
    """One entry per device: its name and memory, and whether it trains, could train, or why not."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.summary = QLabel("Looking for graphics cards and the processor…")
        self.summary.setWordWrap(True)
        self._layout.addWidget(self.summary)
        self._layout.addStretch()
        self.entries: list[QWidget] = []
        self.status_labels: list[QLabel] = []

    def set_devices(self, devices: Sequence[Device], chosen: str | None) -> None:
        """Shows ``devices``; ``chosen`` is the torch device that trains ("cuda:0", "cpu") or None."""
        for entry in self.entries:
            self._layout.removeWidget(entry)
            entry.deleteLater()
        self.entries = []
        self.status_labels = []
        used = next((d for d in devices if d.torch_device == chosen), None)
        if not devices:
            self.summary.setText("No devices were detected.")
        elif used is not None:
            self.summary.setText(f"Training uses <b>{html.escape(used.label)}</b>.")
        elif any(d.usable for d in devices):
            self.summary.setText("Training uses the best of these devices that can train:")
        else:
            self.summary.setText("None of these devices can train; see why below.")
        for device in devices:
            head = QLabel(f"<b>{html.escape(device.label)}</b> · {html.escape(memory_words(device))}")
            details = details_words(device)
            if details:
                head.setToolTip(details)
            status = QLabel(self._status_words(device, device is used))
            status.setWordWrap(True)
            status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            status.setStyleSheet(self._status_style(device, device is used))
            status.setIndent(12)
            entry = QWidget()
            rows = QVBoxLayout(entry)
            rows.setContentsMargins(0, 0, 0, 0)
            rows.setSpacing(1)
            rows.addWidget(head)
            rows.addWidget(status)
            self._layout.insertWidget(self._layout.count() - 1, entry)
            self.entries.append(entry)
            self.status_labels.append(status)

    @staticmethod
    def _status_words(device: Device, used: bool) -> str:
        if used:
            return "✔ Trains here"
        if device.usable:
            return "Can train"
        return f"Cannot train: {device.reason or 'not supported'}"

    @staticmethod
    def _status_style(device: Device, used: bool) -> str:
        if used:
            return f"color: {USED}; font-weight: bold"
        return "" if device.usable else f"color: {UNUSABLE}"
