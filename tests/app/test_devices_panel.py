"""The device panel: every device, which one trains, and why the others cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from hiveling.app.panels.devices import DeviceDetection, DevicePanel, format_memory, memory_words
from hiveling.core.machine.devices import Device, detect_devices

GIB = 2**30
RTX = Device(
    kind="cuda",
    index=0,
    name="NVIDIA GeForce RTX 3060",
    total_memory=12 * GIB,
    free_memory=10 * GIB,
    driver="550.54",
    compute_capability="8.6",
    usable=True,
    reason=None,
)
OLD = Device(
    kind="cuda",
    index=1,
    name="NVIDIA GeForce GTX 680",
    total_memory=2 * GIB,
    free_memory=None,
    driver="470.10",
    compute_capability="3.0",
    usable=False,
    reason="compute capability 3.0 is below the 5.0 this torch build supports; train on the CPU",
)
CPU = Device(
    kind="cpu",
    index=0,
    name="Test CPU",
    total_memory=16 * GIB,
    free_memory=8 * GIB,
    driver=None,
    compute_capability=None,
    usable=True,
    reason=None,
)


@pytest.fixture
def panel(qtbot: QtBot) -> DevicePanel:
    widget = DevicePanel()
    qtbot.addWidget(widget)
    widget.resize(600, 300)
    return widget


def test_before_detection_the_panel_says_it_is_looking(panel: DevicePanel) -> None:
    assert "Looking for" in panel.summary.text()
    assert panel.status_labels == []


def test_each_device_with_its_state(panel: DevicePanel, tmp_path: Path) -> None:
    panel.set_devices([RTX, OLD, CPU], "cuda:0")
    assert "NVIDIA GeForce RTX 3060" in panel.summary.text()
    assert [label.text() for label in panel.status_labels] == [
        "✔ Trains here",
        f"Cannot train: {OLD.reason}",
        "Can train",
    ]
    assert panel.grab().save(str(tmp_path / "devices.png"))


def test_the_chosen_device_moves(panel: DevicePanel) -> None:
    panel.set_devices([RTX, CPU], "cuda:0")
    panel.set_devices([RTX, CPU], "cpu")
    assert [label.text() for label in panel.status_labels] == ["Can train", "✔ Trains here"]
    assert len(panel.entries) == 2  # the old rows are gone


def test_nothing_chosen_yet(panel: DevicePanel) -> None:
    panel.set_devices([RTX, CPU], None)
    assert "best of these devices" in panel.summary.text()
    assert "✔ Trains here" not in [label.text() for label in panel.status_labels]


def test_no_device_can_train(panel: DevicePanel) -> None:
    panel.set_devices([OLD], None)
    assert "None of these devices can train" in panel.summary.text()


def test_no_devices(panel: DevicePanel) -> None:
    panel.set_devices([RTX], "cuda:0")
    panel.set_devices([], None)
    assert panel.summary.text() == "No devices were detected."
    assert panel.entries == []


def test_memory_words() -> None:
    assert memory_words(RTX) == "10.0 GiB free of 12.0 GiB"
    assert memory_words(OLD) == "2.0 GiB"
    assert format_memory(None) == "unknown"
    assert format_memory(300 * 2**20) == "300 MiB"
    assert format_memory(512) == "under 1 MiB"
    assert format_memory(160 * GIB) == "160 GiB"


def test_real_detection_off_the_gui_thread(qtbot: QtBot, panel: DevicePanel) -> None:
    detection = DeviceDetection()
    with qtbot.waitSignal(detection.detected, timeout=30_000) as blocker:
        detection.request()
    devices = blocker.args[0]
    detection.wait(5)
    assert devices == detection.devices
    assert devices[-1].kind == "cpu"  # the CPU is always there, last
    assert [d.kind for d in devices] == [d.kind for d in detect_devices()]
    panel.set_devices(devices, devices[-1].torch_device)
    assert panel.status_labels[-1].text() in ("✔ Trains here", f"Cannot train: {devices[-1].reason}")
    detection.request()  # detected once: a second request starts nothing
    assert detection._thread is not None
    assert not detection._thread.is_alive()
