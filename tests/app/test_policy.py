"""The pause policy: a truth table over snooze, schedule, battery and idle time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta, timezone

import pytest

from hiveling.app.policy import Conditions, Decision, decide, in_window, parse_clock, parse_schedule
from hiveling.core.config import Settings

NOON = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
BASE = Settings(pause_on_battery=True, idle_only=True, idle_minutes=5)


@pytest.mark.parametrize(
    ("settings", "now", "idle", "battery", "snoozed", "expected"),
    [
        # Nothing in the way.
        (BASE, NOON, 600.0, False, None, Decision(True, None)),
        # Each rule alone.
        (BASE, NOON, 600.0, True, None, Decision(False, "on battery")),
        (BASE, NOON, 30.0, False, None, Decision(False, "you are using the computer")),
        (BASE, NOON, 299.0, False, None, Decision(False, "you are using the computer")),
        (BASE, NOON, 300.0, False, None, Decision(True, None)),
        (
            BASE,
            NOON,
            600.0,
            False,
            NOON + timedelta(hours=2, minutes=5),
            Decision(False, "snoozed until 14:05"),
        ),
        (
            replace(BASE, schedule=["22:00", "07:00"]),
            NOON,
            600.0,
            False,
            None,
            Decision(False, "outside the schedule 22:00–07:00"),
        ),
        # A snooze that is over no longer counts.
        (BASE, NOON, 600.0, False, NOON - timedelta(seconds=1), Decision(True, None)),
        (BASE, NOON, 600.0, False, NOON, Decision(True, None)),
        # Inside a schedule that spans midnight.
        (
            replace(BASE, schedule=["22:00", "07:00"]),
            NOON.replace(hour=23),
            600.0,
            False,
            None,
            Decision(True, None),
        ),
        (
            replace(BASE, schedule=["22:00", "07:00"]),
            NOON.replace(hour=6, minute=59),
            600.0,
            False,
            None,
            Decision(True, None),
        ),
        (
            replace(BASE, schedule=["22:00", "07:00"]),
            NOON.replace(hour=7),
            600.0,
            False,
            None,
            Decision(False, "outside the schedule 22:00–07:00"),
        ),
        # Rules that are switched off.
        (replace(BASE, pause_on_battery=False), NOON, 600.0, True, None, Decision(True, None)),
        (replace(BASE, idle_only=False), NOON, 0.0, False, None, Decision(True, None)),
        # Unknown conditions never pause.
        (BASE, NOON, None, None, None, Decision(True, None)),
        # A malformed schedule is ignored rather than pausing forever.
        (replace(BASE, schedule=["25:00", "07:00"]), NOON, 600.0, False, None, Decision(True, None)),
        # Order: snooze, then schedule, then battery, then idle.
        (
            replace(BASE, schedule=["22:00", "07:00"]),
            NOON,
            0.0,
            True,
            NOON + timedelta(minutes=30),
            Decision(False, "snoozed until 12:30"),
        ),
        (
            replace(BASE, schedule=["22:00", "07:00"]),
            NOON,
            0.0,
            True,
            None,
            Decision(False, "outside the schedule 22:00–07:00"),
        ),
        (BASE, NOON, 0.0, True, None, Decision(False, "on battery")),
    ],
)
def test_decide(
    settings: Settings,
    now: datetime,
    idle: float | None,
    battery: bool | None,
    snoozed: datetime | None,
    expected: Decision,
) -> None:
    assert decide(settings, now, idle, battery, snoozed) == expected


def test_snooze_reason_is_in_local_time() -> None:
    paris = timezone(timedelta(hours=2))
    now = NOON.astimezone(paris)  # 14:00 there
    decision = decide(BASE, now, 600.0, False, NOON + timedelta(minutes=5))
    assert decision == Decision(False, "snoozed until 14:05")


def test_naive_times_work_too() -> None:
    now = datetime(2025, 6, 2, 9, 0)
    assert decide(BASE, now, 600.0, False, now + timedelta(minutes=1)).reason == "snoozed until 09:01"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("07:30", time(7, 30)), ("0:05", time(0, 5)), ("23:59", time(23, 59)), ("24:00", None)],
)
def test_parse_clock(text: str, expected: time | None) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize("text", ["7", "07:3", "ab:cd", "07:60", "", "-1:00"])
def test_parse_clock_rejects(text: str) -> None:
    assert parse_clock(text) is None


def test_parse_schedule() -> None:
    assert parse_schedule(["22:00", "07:00"]) == (time(22), time(7))
    assert parse_schedule(None) is None
    assert parse_schedule(["22:00"]) is None


def test_window_of_equal_ends_is_all_day() -> None:
    assert in_window(time(3), time(8), time(8))
    assert in_window(time(8), time(8), time(8))


def test_conditions_read_the_platform(qapp: object) -> None:
    conditions = Conditions()
    idle = conditions.idle_seconds()
    battery = conditions.on_battery()
    assert idle is None or idle >= 0
    assert battery in (True, False, None)
