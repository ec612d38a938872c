"""Persisted settings and per-run totals. Missing or corrupted files give defaults, with a warning."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiveling.core import paths

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
TOTALS_FILE = "contribution.json"
ENERGY_DAY_FILE = "energy-today.json"  # the machine's training energy today, all runs: the daily budget


@dataclass
class Settings:
    """What a volunteer chooses; the same file serves the tray and the headless client."""

    device: str = "auto"  # "auto", "cpu", "cuda:0", "mps", ...
    memory_cap_gb: float | None = None  # at most this much device memory
    cpu_threads: int | None = None  # torch threads for CPU training; None: half the cores
    pause_on_battery: bool = True
    idle_only: bool = False
    idle_minutes: int = 5
    schedule: list[str] | None = None  # ["22:00", "07:00"]: train only between these times
    start_at_login: bool = False
    invite: str | None = None  # the run last joined
    known_organizers: dict[str, str] = field(default_factory=dict)  # run name -> organizer fingerprint
    # Energy: the governor's limits (None: no limit) and the price that turns Wh into a cost.
    temperature_limit_c: float | None = None
    power_limit: str | None = None  # "120W" or "60%" of the devices' rating
    daily_energy_wh: float | None = None
    price_per_kwh: float | None = None  # None: no cost is shown
    currency: str = ""


NUMBER_OR_NONE = ("memory_cap_gb", "cpu_threads", "temperature_limit_c", "daily_energy_wh", "price_per_kwh")


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``; None (with a warning) when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("Ignoring %s (%s); using defaults", path, error)
        return None
    if not isinstance(value, dict):
        logger.warning("Ignoring %s (not a JSON object); using defaults", path)
        return None
    return value


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically replaces ``path``, so a crash or a full disk never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=2, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_settings(path: Path | None = None) -> Settings:
    path = path or paths.config_dir() / SETTINGS_FILE
    raw = read_json(path) or {}
    settings = Settings()
    known = {f.name: f for f in dataclasses.fields(Settings)}
    for key, value in raw.items():
        if key not in known:
            continue  # a newer client's setting
        default = getattr(settings, key)
        if default is not None and (value is None or not _same_kind(default, value)):
            expected = type(default).__name__
            logger.warning("Ignoring setting %s=%r in %s (expected %s)", key, value, path, expected)
            continue
        if key in NUMBER_OR_NONE and not (value is None or _same_kind(1.0, value)):
            logger.warning("Ignoring setting %s=%r in %s (expected a number)", key, value, path)
            continue
        if key == "power_limit" and not (value is None or isinstance(value, str)):
            logger.warning("Ignoring setting power_limit=%r in %s (expected like 120W or 60%%)", value, path)
            continue
        if (
            key == "schedule"
            and value is not None
            and not (
                isinstance(value, list) and len(value) == 2 and all(isinstance(item, str) for item in value)
            )
        ):
            logger.warning("Ignoring setting schedule=%r in %s (expected two times like 22:00)", value, path)
            continue
        setattr(settings, key, value)
    return settings


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def save_settings(settings: Settings, path: Path | None = None) -> None:
    write_json(path or paths.config_dir() / SETTINGS_FILE, dataclasses.asdict(settings))


@dataclass
class Contribution:
    """Samples and training time this machine gave one run, across restarts."""

    samples: int = 0
    seconds: float = 0.0
    finished_at: int | None = None  # the run's last step, once this machine trained up to it
    energy_wh: float = 0.0  # energy training used for this run, as the meter counted it


def load_contribution(run_id: str) -> Contribution:
    raw = read_json(paths.run_dir(run_id) / TOTALS_FILE) or {}
    try:
        finished = raw.get("finished_at")
        return Contribution(
            samples=int(raw.get("samples", 0)),
            seconds=float(raw.get("seconds", 0.0)),
            finished_at=None if finished is None else int(finished),
            energy_wh=float(raw.get("energy_wh", 0.0)),
        )
    except (TypeError, ValueError):
        logger.warning("Ignoring corrupted contribution totals of run %s", run_id)
        return Contribution()


def save_contribution(run_id: str, totals: Contribution) -> None:
    write_json(paths.run_dir(run_id) / TOTALS_FILE, dataclasses.asdict(totals))


def load_energy_day() -> tuple[str, float] | None:
    """(ISO date, Wh) of this machine's training energy on that day, for the daily budget."""
    raw = read_json(paths.data_dir() / ENERGY_DAY_FILE) or {}
    try:
        return str(raw["day"]), float(raw["wh"])
    except (KeyError, TypeError, ValueError):
        return None


def save_energy_day(day: str, wh: float) -> None:
    write_json(paths.data_dir() / ENERGY_DAY_FILE, {"day": day, "wh": round(wh, 4)})
