"""The settings dialog: a round trip through the real settings file, and start at login."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QTime
from PySide6.QtWidgets import QDialog, QDialogButtonBox
from pytestqt.qtbot import QtBot

from hiveling.app.dialogs.settings import IDLE_UNKNOWN, SettingsDialog
from hiveling.app.platform.autostart import launch_command
from hiveling.app.policy import Conditions
from hiveling.core.config import Settings, load_settings

from .test_devices_panel import CPU, OLD, RTX


class IdleKnown(Conditions):
    """A desktop that reports idle time (this test machine has no display to ask)."""

    def idle_seconds(self) -> float | None:
        return 42.0


@pytest.fixture
def xdg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def make_dialog(qtbot: QtBot, settings: Settings, conditions: Conditions | None = None) -> SettingsDialog:
    dialog = SettingsDialog(settings, [RTX, OLD, CPU], conditions=conditions)
    qtbot.addWidget(dialog)
    return dialog


def save(dialog: SettingsDialog) -> None:
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()


def test_round_trip_through_the_settings_file(qtbot: QtBot, xdg_home: Path, tmp_path: Path) -> None:
    original = Settings(invite="HIVE1-KEEPME", known_organizers={"run": "AAAA-BBBB-CCCC"})
    dialog = make_dialog(qtbot, original, conditions=IdleKnown())
    dialog.show()
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.memory_cap.setValue(6.5)
    dialog.cpu_threads.setValue(1)
    dialog.pause_on_battery.setChecked(False)
    dialog.idle_only.setChecked(True)
    dialog.idle_minutes.setValue(12)
    dialog.use_schedule.setChecked(True)
    dialog.schedule_start.setTime(QTime(21, 30))
    dialog.schedule_end.setTime(QTime(6, 45))
    assert dialog.grab().save(str(tmp_path / "settings.png"))

    with qtbot.waitSignal(dialog.changed, timeout=2000) as blocker:
        save(dialog)
    expected = Settings(
        device="cpu",
        memory_cap_gb=6.5,
        cpu_threads=1,
        pause_on_battery=False,
        idle_only=True,
        idle_minutes=12,
        schedule=["21:30", "06:45"],
        start_at_login=False,
        invite="HIVE1-KEEPME",
        known_organizers={"run": "AAAA-BBBB-CCCC"},
    )
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert blocker.args == [expected]
    assert load_settings() == expected

    # The saved file opens the dialog as it was left.
    again = make_dialog(qtbot, load_settings(), conditions=IdleKnown())
    assert again.chosen_settings() == expected
    assert again.use_schedule.isChecked()
    assert again.schedule_start.time() == QTime(21, 30)


def test_defaults_save_as_defaults(qtbot: QtBot, xdg_home: Path) -> None:
    dialog = make_dialog(qtbot, Settings())
    save(dialog)
    assert load_settings() == Settings()


def test_cancel_saves_nothing(qtbot: QtBot, xdg_home: Path, app_home: Path) -> None:
    dialog = make_dialog(qtbot, Settings())
    dialog.memory_cap.setValue(3)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert not (app_home / "config" / "settings.json").exists()


def test_start_at_login_on_and_off(qtbot: QtBot, xdg_home: Path) -> None:
    entry = xdg_home / "autostart" / "hiveling.desktop"
    dialog = make_dialog(qtbot, Settings())
    dialog.start_at_login.setChecked(True)
    save(dialog)
    assert load_settings().start_at_login
    assert f"Exec={launch_command()[0]} tray" in entry.read_text()

    dialog = make_dialog(qtbot, load_settings())
    assert dialog.start_at_login.isChecked()
    dialog.start_at_login.setChecked(False)
    save(dialog)
    assert not entry.exists()
    assert not load_settings().start_at_login


def test_start_at_login_failure_keeps_the_dialog_open(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_home: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))  # autostart/ cannot be made inside a file
    dialog = make_dialog(qtbot, Settings())
    dialog.show()
    dialog.start_at_login.setChecked(True)
    save(dialog)
    assert dialog.isVisible()
    assert dialog.error.isVisible()
    assert "starting at login" in dialog.error.text()
    assert "\n" not in dialog.error.text()
    assert not (app_home / "config" / "settings.json").exists()


def test_devices_in_the_list(qtbot: QtBot, xdg_home: Path) -> None:
    dialog = make_dialog(qtbot, Settings(device="cuda:0"))
    assert [dialog.device.itemData(i) for i in range(dialog.device.count())] == [
        "auto",
        "cuda:0",
        "cuda:1",
        "cpu",
    ]
    assert dialog.device.currentData() == "cuda:0"
    unusable = dialog.device.model().item(2)  # type: ignore[attr-defined]
    assert not unusable.isEnabled()
    assert OLD.reason in unusable.toolTip()
    # The panel marks the device that the selection trains on.
    assert dialog.device_panel.status_labels[0].text() == "✔ Trains here"
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    assert dialog.device_panel.status_labels[2].text() == "✔ Trains here"
    dialog.device.setCurrentIndex(dialog.device.findData("auto"))
    assert dialog.device_panel.status_labels[0].text() == "✔ Trains here"  # the GPU with most memory


def test_a_device_not_detected_is_kept(qtbot: QtBot, xdg_home: Path) -> None:
    dialog = make_dialog(qtbot, Settings(device="cuda:3"))
    assert dialog.device.currentData() == "cuda:3"
    assert "not detected" in dialog.device.currentText()
    save(dialog)
    assert load_settings().device == "cuda:3"


def test_devices_detected_when_not_given(qtbot: QtBot, xdg_home: Path) -> None:
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.device.findData("cpu") >= 0, timeout=30_000)
    assert dialog.device_panel.entries


def test_idle_option_disabled_where_idle_time_is_unknown(qtbot: QtBot, xdg_home: Path) -> None:
    class IdleUnknown(Conditions):
        def idle_seconds(self) -> float | None:
            return None

    dialog = make_dialog(qtbot, Settings(), conditions=IdleUnknown())
    dialog.show()
    assert not dialog.idle_only.isEnabled()
    assert dialog.idle_only.toolTip() == IDLE_UNKNOWN
    assert not dialog.idle_note.isHidden()  # on the second tab


def test_idle_minutes_follow_the_checkbox(qtbot: QtBot, xdg_home: Path) -> None:
    dialog = make_dialog(qtbot, Settings(), conditions=IdleKnown())
    assert dialog.idle_only.isEnabled()
    assert not dialog.idle_minutes.isEnabled()
    dialog.idle_only.setChecked(True)
    assert dialog.idle_minutes.isEnabled()
    assert dialog.idle_note.isHidden()


def test_schedule_off_saves_none(qtbot: QtBot, xdg_home: Path) -> None:
    dialog = make_dialog(qtbot, Settings(schedule=["22:00", "07:00"]))
    assert dialog.schedule_start.isEnabled()
    dialog.use_schedule.setChecked(False)
    assert not dialog.schedule_start.isEnabled()
    save(dialog)
    assert load_settings().schedule is None


def test_energy_limits_and_price_round_trip(qtbot: QtBot, xdg_home: Path, tmp_path: Path) -> None:
    dialog = make_dialog(qtbot, Settings(power_limit="60%"))
    assert dialog.power_limit.value() == 60
    assert dialog.power_unit.currentData() == "%"
    dialog.tabs.setCurrentIndex(2)
    dialog.temperature_limit.setValue(80)
    dialog.power_unit.setCurrentIndex(dialog.power_unit.findData("W"))
    dialog.power_limit.setValue(120)
    dialog.daily_energy.setValue(250)
    dialog.price.setValue(0.31)
    dialog.currency.setText(" EUR ")
    dialog.show()
    assert dialog.grab().save(str(tmp_path / "energy-settings.png"))
    save(dialog)
    saved = load_settings()
    assert (saved.temperature_limit_c, saved.power_limit, saved.daily_energy_wh) == (80.0, "120W", 250.0)
    assert (saved.price_per_kwh, saved.currency) == (0.31, "EUR")
    again = make_dialog(qtbot, saved)
    again.temperature_limit.setValue(0)  # "No limit"
    again.power_limit.setValue(0)
    assert again.chosen_settings().temperature_limit_c is None
    assert again.chosen_settings().power_limit is None
