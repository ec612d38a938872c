"""The platform layer: idle time, battery state and start-at-login, without touching the real home."""

from __future__ import annotations

import configparser
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hiveling.app.platform import autostart, battery, idle
from hiveling.app.platform.autostart_macos import LABEL, LaunchAgentAutostart
from hiveling.app.platform.autostart_windows import command_line
from hiveling.app.platform.autostart_xdg import XdgAutostart, desktop_entry, quote_exec_argument
from hiveling.app.platform.idle_gnome import MutterIdle
from hiveling.app.platform.idle_macos import parse_ioreg
from hiveling.app.platform.idle_windows import elapsed_ms
from hiveling.app.platform.idle_x11 import X11Idle

# --- idle ---------------------------------------------------------------------------------------


def test_x11_idle_without_a_display_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    assert X11Idle().idle_seconds() is None


def test_x11_idle_with_an_unreachable_display_is_unknown() -> None:
    assert X11Idle(display=":9876").idle_seconds() is None


def test_x11_idle_under_wayland_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    assert X11Idle(display=":0").idle_seconds() is None


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A real X server (skipped where Xvfb is not installed); yields its display name."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "320x240x24"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()  # Xvfb writes it once it accepts connections
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_x11_idle_reads_a_real_server(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    seconds = X11Idle(display=xvfb).idle_seconds()
    assert seconds is not None
    assert 0 <= seconds < 120


def test_idle_source_of_this_platform() -> None:
    source = idle.idle_source()
    assert isinstance(source, idle.IdleSource)
    if sys.platform.startswith("linux"):
        assert isinstance(source, idle.FirstKnownIdle)
        assert [type(s) for s in source.sources] == [X11Idle, MutterIdle]


def test_first_known_idle_source_answers() -> None:
    class Fixed(idle.IdleSource):
        def __init__(self, seconds: float | None) -> None:
            self.seconds = seconds

        def idle_seconds(self) -> float | None:
            return self.seconds

    assert idle.FirstKnownIdle([Fixed(None), Fixed(7.0), Fixed(9.0)]).idle_seconds() == 7.0
    assert idle.FirstKnownIdle([Fixed(None)]).idle_seconds() is None


FAKE_MUTTER = """
import sys
from PySide6.QtCore import ClassInfo, QCoreApplication, QObject, Slot
from PySide6.QtDBus import QDBusConnection

@ClassInfo({"D-Bus Interface": "org.gnome.Mutter.IdleMonitor"})
class Monitor(QObject):
    @Slot(result="qulonglong")
    def GetIdletime(self):
        return 93_500

app = QCoreApplication([])
bus = QDBusConnection.connectToBus(sys.argv[1], "fake-mutter")
monitor = Monitor()
assert bus.registerObject(
    "/org/gnome/Mutter/IdleMonitor/Core", monitor, QDBusConnection.RegisterOption.ExportAllSlots
)
assert bus.registerService("org.gnome.Mutter.IdleMonitor")
print("ready", flush=True)
app.exec()
"""


@pytest.fixture
def session_bus() -> Iterator[str]:
    """A private D-Bus daemon (skipped where dbus-daemon is not installed); yields its address."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed")
    daemon = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        yield daemon.stdout.readline().strip()
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        if daemon.stdout is not None:
            daemon.stdout.close()


def test_gnome_idle_over_dbus(qapp: object, session_bus: str) -> None:
    assert MutterIdle(bus_address=session_bus).idle_seconds() is None  # no GNOME on the bus yet
    mutter = subprocess.Popen(
        [sys.executable, "-c", FAKE_MUTTER, session_bus], stdout=subprocess.PIPE, text=True
    )
    try:
        assert mutter.stdout is not None
        assert mutter.stdout.readline().strip() == "ready"
        assert MutterIdle(bus_address=session_bus).idle_seconds() == 93.5
    finally:
        mutter.terminate()
        mutter.wait(timeout=10)
        if mutter.stdout is not None:
            mutter.stdout.close()


def test_gnome_idle_without_a_bus(qapp: object) -> None:
    assert MutterIdle(bus_address="unix:path=/nonexistent/bus").idle_seconds() is None


def test_ioreg_output() -> None:
    output = '    |   "HIDIdleTime" = 2500000000\n    |   "HIDKeyboardModifierMappingPairs" = ()\n'
    assert parse_ioreg(output) == 2.5
    assert parse_ioreg("nothing here") is None


def test_windows_tick_count_wraps() -> None:
    assert elapsed_ms(5_000, 2_000) == 3_000
    assert elapsed_ms(100, 0xFFFFFF00) == 356


# --- battery ------------------------------------------------------------------------------------


def supply(root: Path, name: str, **files: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for key, value in files.items():
        (folder / key).write_text(value + "\n")


def test_laptop_unplugged(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online="0")
    supply(tmp_path, "BAT0", type="Battery", status="Discharging", capacity="80")
    assert battery.on_battery_sysfs(tmp_path) is True


def test_laptop_plugged_in(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online="1")
    supply(tmp_path, "BAT0", type="Battery", status="Charging")
    assert battery.on_battery_sysfs(tmp_path) is False


def test_usb_c_charger_counts_as_mains(tmp_path: Path) -> None:
    supply(tmp_path, "ucsi-source-psy-USBC000:001", type="USB", online="1")
    supply(tmp_path, "BAT1", type="Battery", status="Not charging")
    assert battery.on_battery_sysfs(tmp_path) is False


def test_battery_without_adapter_info(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", status="Full")
    assert battery.on_battery_sysfs(tmp_path) is False
    supply(tmp_path, "BAT1", type="Battery", status="Discharging")
    assert battery.on_battery_sysfs(tmp_path) is True


def test_adapter_offline_with_unknown_battery_status(tmp_path: Path) -> None:
    supply(tmp_path, "ADP1", type="Mains", online="0")
    supply(tmp_path, "BAT0", type="Battery", status="Unknown")
    assert battery.on_battery_sysfs(tmp_path) is True


def test_desktop_with_a_wireless_mouse(tmp_path: Path) -> None:
    # A peripheral's battery (scope Device) says nothing about the computer's power.
    supply(tmp_path, "hidpp_battery_0", type="Battery", scope="Device", status="Discharging")
    assert battery.on_battery_sysfs(tmp_path) is False


def test_no_power_supply_folder(tmp_path: Path) -> None:
    assert battery.on_battery_sysfs(tmp_path / "missing") is None


def test_windows_power_status() -> None:
    assert battery.from_power_status(0, 1) is True
    assert battery.from_power_status(1, 8) is False
    assert battery.from_power_status(255, 1) is None
    assert battery.from_power_status(255, 128) is False  # no system battery


def test_pmset_output() -> None:
    battery_text = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1)\t75%; discharging\n"
    assert battery.parse_pmset(battery_text) is True
    assert battery.parse_pmset("Now drawing from 'AC Power'\n") is False
    assert battery.parse_pmset("") is None


def test_battery_of_this_machine() -> None:
    assert battery.on_battery() in (True, False, None)


# --- start at login -----------------------------------------------------------------------------


def test_launch_command_runs_the_installed_tray() -> None:
    command = autostart.launch_command()
    assert command[-1] == "tray"
    assert Path(command[0]).exists()


def test_xdg_autostart_on_and_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    entry = XdgAutostart()
    assert entry.path == tmp_path / "autostart" / "hiveling.desktop"
    assert not entry.is_enabled()

    entry.apply(True)
    assert entry.is_enabled()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(entry.path, encoding="utf-8")
    desktop = parser["Desktop Entry"]
    assert desktop["Type"] == "Application"
    assert desktop["Name"] == "Hiveling"
    assert shlex.split(desktop["Exec"]) == autostart.launch_command()

    entry.apply(True)  # twice is the same as once
    assert entry.is_enabled()
    entry.apply(False)
    assert not entry.is_enabled()
    assert list((tmp_path / "autostart").iterdir()) == []
    entry.apply(False)  # nothing to remove is fine


def test_platform_autostart_uses_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG autostart is the Linux implementation")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    entry = autostart.autostart_for_platform()
    entry.enable(["/opt/hiveling/bin/hiveling", "tray"])
    assert (tmp_path / "autostart" / "hiveling.desktop").is_file()
    assert entry.is_enabled()


@pytest.mark.parametrize(
    ("argument", "quoted"),
    [
        ("/usr/bin/hiveling", "/usr/bin/hiveling"),
        ("tray", "tray"),
        ("/home/a b/hiveling", '"/home/a b/hiveling"'),
        ("100%", "100%%"),
        ('say "hi"', '"say \\\\"hi\\\\""'),
        ("$HOME", '"\\\\$HOME"'),
    ],
)
def test_desktop_exec_quoting(argument: str, quoted: str) -> None:
    assert quote_exec_argument(argument) == quoted


def test_desktop_entry_has_the_exec_line() -> None:
    text = desktop_entry(["/home/a b/.venv/bin/hiveling", "tray"])
    assert 'Exec="/home/a b/.venv/bin/hiveling" tray\n' in text
    assert text.startswith("[Desktop Entry]\n")


def test_launch_agent_on_and_off(tmp_path: Path) -> None:
    agent = LaunchAgentAutostart(agents_dir=tmp_path)
    assert not agent.is_enabled()
    agent.enable(["/Applications/Hiveling.app/Contents/MacOS/Hiveling", "tray"])
    plist = plistlib.loads((tmp_path / f"{LABEL}.plist").read_bytes())
    assert plist["ProgramArguments"] == ["/Applications/Hiveling.app/Contents/MacOS/Hiveling", "tray"]
    assert plist["RunAtLoad"] is True
    assert agent.is_enabled()
    agent.disable()
    assert not agent.is_enabled()


def test_windows_run_value_quotes_paths_with_spaces() -> None:
    line = command_line([r"C:\Program Files\Hiveling\hiveling.exe", "tray"])
    assert line == r'"C:\Program Files\Hiveling\hiveling.exe" tray'
