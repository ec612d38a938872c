"""Idle time on macOS: HIDIdleTime of the IOHIDSystem registry entry, read with ioreg."""

from __future__ import annotations

import logging
import re
import subprocess

from hiveling.app.platform.idle import IdleSource

logger = logging.getLogger(__name__)

_HID_IDLE = re.compile(r'"HIDIdleTime"\s*=\s*(\d+)')


def parse_ioreg(output: str) -> float | None:
    """Seconds from ioreg's output (HIDIdleTime is in nanoseconds); None when it is not there."""
    match = _HID_IDLE.search(output)
    return int(match.group(1)) / 1e9 if match else None


class MacIdle(IdleSource):
    def idle_seconds(self) -> float | None:
        try:
            result = subprocess.run(
                ["ioreg", "-c", "IOHIDSystem", "-d", "4", "-r", "-k", "HIDIdleTime"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            logger.info("Idle time unknown: ioreg failed (%s)", error)
            return None
        return parse_ioreg(result.stdout)
