"""The energy training used: integrated from the sensors, per session and per day, with its cost.

Measured sources count the whole device, idle draw included; the meter takes the idle power from its
first reading window (before training starts) and reports what training added over it. The estimate
counts the training processes only, so it is already what training added.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hiveling.core.energy.sensors import Reading, Sensor

JOULES_PER_WH = 3600.0


@dataclass
class EnergyStatus:
    """What the meter knows after its latest reading."""

    session_wh: float = 0.0  # added by training since this worker started
    power_w: float | None = None  # training's power over the latest window, above idle where measured
    device_power_w: float | None = None  # the devices' whole power meanwhile (the governor's limit)
    temperatures: dict[str, float] = field(default_factory=dict)  # "gpu"/"cpu" -> hottest °C
    hottest: tuple[str, float] | None = None  # (sensor name, °C)
    estimated: bool = False
    above_idle: bool = False
    source: str = ""  # "NVML and powercap", "estimated from CPU time at 10 W per busy core"
    rated_w: float | None = None


class EnergyMeter:
    """Reads its sensors on demand (every few seconds from the training loop) and keeps the sums."""

    def __init__(
        self,
        sensors: Sequence[Sensor],
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.date] = dt.date.today,
        day_wh: tuple[str, float] | None = None,
    ) -> None:
        self.sensors = list(sensors)
        self.clock = clock
        self.today = today
        self._last: dict[str, tuple[float, float]] = {}  # sensor -> (time, energy_j)
        self._idle_w: dict[str, float] = {}
        self.status = EnergyStatus()
        self.status.estimated = any(s.estimated for s in self.sensors)
        self.status.source = describe(self.sensors)
        #: Energy of the current local day, carried over from earlier sessions by the caller.
        self.day, self.day_wh = day_wh if day_wh is not None else (self.today().isoformat(), 0.0)

    def calibrate_idle(self, seconds: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
        """Measures each counting sensor's idle power (call before training starts)."""
        before = {s.name: (self.clock(), s.read()) for s in self.sensors if not s.estimated}
        if not before:
            return
        sleep(seconds)
        for sensor in self.sensors:
            if sensor.name not in before:
                continue
            then, first = before[sensor.name]
            second = sensor.read()
            elapsed = self.clock() - then
            if first.energy_j is not None and second.energy_j is not None and elapsed > 0:
                self._idle_w[sensor.name] = max(0.0, (second.energy_j - first.energy_j) / elapsed)
            elif second.power_w is not None:
                self._idle_w[sensor.name] = second.power_w
            if second.energy_j is not None:
                self._last[sensor.name] = (self.clock(), second.energy_j)
        self.status.above_idle = bool(self._idle_w)

    def rebase(self) -> None:
        """Starts counting from now: what the devices used since the last reading (a pause, the
        start-up) is not training's."""
        now = self.clock()
        for sensor in self.sensors:
            reading = sensor.read()
            if reading.energy_j is not None:
                self._last[sensor.name] = (now, reading.energy_j)

    def update(self) -> EnergyStatus:
        """Reads every sensor once and adds what training used since the last update."""
        added_j = 0.0
        window_power = 0.0
        powered = False
        temperatures: dict[str, float] = {}
        hottest: tuple[str, float] | None = None
        rated = 0.0
        now = self.clock()
        for sensor in self.sensors:
            reading = sensor.read()
            if reading.rated_w:
                rated += reading.rated_w
            if reading.temperature_c is not None:
                kind = reading.kind
                temperatures[kind] = max(temperatures.get(kind, reading.temperature_c), reading.temperature_c)
                if hottest is None or reading.temperature_c > hottest[1]:
                    hottest = (_short(reading), reading.temperature_c)
            joules = self._added(sensor.name, reading, now)
            if joules is None:
                continue
            added, elapsed = joules
            added_j += added
            if elapsed > 0:
                window_power += added / elapsed
                powered = True
        status = self.status
        status.session_wh += added_j / JOULES_PER_WH
        if powered:
            status.power_w = window_power
            status.device_power_w = window_power + sum(self._idle_w.values())
        status.temperatures = temperatures
        status.hottest = hottest
        status.rated_w = rated or None
        day = self.today().isoformat()
        if day != self.day:
            self.day, self.day_wh = day, 0.0
        self.day_wh += added_j / JOULES_PER_WH
        return status

    def _added(self, name: str, reading: Reading, now: float) -> tuple[float, float] | None:
        """Joules training added since this sensor's last reading, and over how many seconds."""
        if reading.energy_j is None:
            return None
        last = self._last.get(name)
        self._last[name] = (now, reading.energy_j)
        if last is None:
            return None
        then, energy = last
        elapsed = now - then
        used = max(0.0, reading.energy_j - energy)
        return max(0.0, used - self._idle_w.get(name, 0.0) * elapsed), elapsed


def describe(sensors: Sequence[Sensor]) -> str:
    """What the figures are, for people: "measured: GPU 0 (...) by NVML's energy counter" or the
    estimate's assumption."""
    measured = [f"{s.name} by {s.method}" for s in sensors if not s.estimated]
    estimated = [s.method for s in sensors if s.estimated]
    parts = (["measured: " + ", ".join(measured)] if measured else []) + estimated
    return "; ".join(parts)


def energy_cost(wh: float, price_per_kwh: float | None, currency: str) -> str | None:
    """ "0.12 EUR" at the volunteer's price; None without a price (no cost is shown then)."""
    if price_per_kwh is None:
        return None
    amount = wh / 1000 * price_per_kwh
    text = f"{amount:.2f}" if amount >= 0.01 or amount == 0 else "<0.01"
    return f"{text} {currency}".strip()


def format_energy(wh: float) -> str:
    """ "3.1 Wh", "1.24 kWh"."""
    if wh >= 1000:
        return f"{wh / 1000:.2f} kWh"
    return f"{wh:.2f} Wh" if wh < 10 else f"{wh:.1f} Wh" if wh < 100 else f"{wh:.0f} Wh"


def _short(reading: Reading) -> str:
    return "GPU" if reading.kind == "gpu" else "CPU"
