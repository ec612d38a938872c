"""Whether the machine runs on battery: True, False, or None where the platform cannot tell."""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

POWER_SUPPLY = Path("/sys/class/power_supply")
ADAPTER_TYPES = {"Mains", "USB", "USB_C", "USB_PD", "USB_PD_DRP", "Wireless"}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def on_battery_sysfs(root: Path = POWER_SUPPLY) -> bool | None:
    """Linux: read the kernel's power supplies (a mouse's or phone's battery does not count)."""
    if not root.is_dir():
        return None
    adapters: list[bool] = []
    batteries: list[str] = []
    for supply in sorted(root.iterdir()):
        kind = _read(supply / "type")
        if kind in ADAPTER_TYPES:
            adapters.append(_read(supply / "online") == "1")
        elif kind == "Battery" and _read(supply / "scope") != "Device":
            batteries.append(_read(supply / "status") or "Unknown")
    if not batteries or any(adapters):
        return False
    return "Discharging" in batteries or bool(adapters)


class SystemPowerStatus(ctypes.Structure):
    _fields_ = [
        ("ACLineStatus", ctypes.c_ubyte),
        ("BatteryFlag", ctypes.c_ubyte),
        ("BatteryLifePercent", ctypes.c_ubyte),
        ("SystemStatusFlag", ctypes.c_ubyte),
        ("BatteryLifeTime", ctypes.c_ulong),
        ("BatteryFullLifeTime", ctypes.c_ulong),
    ]


def from_power_status(ac_line_status: int, battery_flag: int) -> bool | None:
    """Windows: interpret GetSystemPowerStatus (ACLineStatus 0 offline, 1 online, 255 unknown)."""
    if battery_flag == 128:  # no system battery
        return False
    return {0: True, 1: False}.get(ac_line_status)


def on_battery_windows() -> bool | None:
    if sys.platform != "win32":
        return None
    status = SystemPowerStatus()
    if not ctypes.windll.kernel32.GetSystemPowerStatus(ctypes.byref(status)):
        return None
    return from_power_status(status.ACLineStatus, status.BatteryFlag)


def parse_pmset(output: str) -> bool | None:
    """macOS: the first line of ``pmset -g batt`` names the source ("Now drawing from 'AC Power'")."""
    first = output.splitlines()[0] if output else ""
    if "'Battery Power'" in first or "'UPS Power'" in first:  # a UPS runs only when mains failed
        return True
    if "'AC Power'" in first:
        return False
    return None


def on_battery_macos() -> bool | None:
    try:
        result = subprocess.run(
            ["pmset", "-g", "batt"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.info("Battery state unknown: pmset failed (%s)", error)
        return None
    return parse_pmset(result.stdout)


def on_battery() -> bool | None:
    """Whether this machine runs on battery now."""
    if sys.platform == "win32":
        return on_battery_windows()
    if sys.platform == "darwin":
        return on_battery_macos()
    return on_battery_sysfs()
