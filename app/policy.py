"""When to train: the volunteer's settings against the machine's state, decided by one pure function.

Every automatic pause carries a short reason that the tray shows ("Paused: on battery").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time

from hiveling.app.platform import battery, idle
from hiveling.core import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str | None  # why not, in a few words; None when training


TRAIN = Decision(train=True, reason=None)


def parse_clock(text: str) -> time | None:
    """``"07:30"`` as a time of day; None for anything else."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        return None
    if int(hours) > 23 or int(minutes) > 59:
        return None
    return time(int(hours), int(minutes))


def parse_schedule(schedule: list[str] | None) -> tuple[time, time] | None:
    """The (start, end) window of a ``["22:00", "07:00"]`` schedule; None when unset or malformed."""
    if not schedule or len(schedule) != 2:
        return None
    start, end = parse_clock(schedule[0]), parse_clock(schedule[1])
    if start is None or end is None:
        return None
    return start, end


def in_window(moment: time, start: time, end: time) -> bool:
    """Whether ``moment`` lies in [start, end); a window whose end is before its start spans midnight."""
    if start == end:
        return True  # the same time twice means all day
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def decide(
    settings: Settings,
    now: datetime,
    idle_seconds: float | None,
    on_battery: bool | None,
    snoozed_until: datetime | None,
) -> Decision:
    """Whether to train now. Conditions that are unknown (None) never pause training.

    The volunteer's own snooze comes first, then the schedule, the battery and the idle rule, so
    the reason shown is the one that will last longest or that the volunteer chose.
    """
    if snoozed_until is not None and now < snoozed_until:
        local = snoozed_until.astimezone(now.tzinfo) if now.tzinfo is not None else snoozed_until
        return Decision(train=False, reason=f"snoozed until {local:%H:%M}")
    window = parse_schedule(settings.schedule)
    if window is not None and not in_window(now.time(), *window):
        start, end = window
        return Decision(train=False, reason=f"outside the schedule {start:%H:%M}–{end:%H:%M}")
    if settings.pause_on_battery and on_battery:
        return Decision(train=False, reason="on battery")
    if settings.idle_only and idle_seconds is not None and idle_seconds < settings.idle_minutes * 60:
        return Decision(train=False, reason="you are using the computer")
    return TRAIN


class Conditions:
    """The machine's state as the policy needs it, read from the platform on each call."""

    def __init__(self) -> None:
        self._idle = idle.idle_source()

    def idle_seconds(self) -> float | None:
        """Seconds since the last keyboard or mouse input; None where the platform cannot tell."""
        return self._idle.idle_seconds()

    def on_battery(self) -> bool | None:
        """True when running on battery; None where the platform cannot tell."""
        return battery.on_battery()
