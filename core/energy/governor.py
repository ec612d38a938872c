"""The governor: keeps training under the volunteer's temperature, power and daily energy limits.

It decides a duty cycle, the share of time spent training (the worker rests between batches for the
rest), and when even the lowest duty is too much, a pause that the worker takes at its next safe point
(after a collaborative step or an exchange, as a pause "after this step"). Each limit has a band, so the
governor does not flap: it slows at the limit, speeds up again only well under it, and resumes from a
pause only once back under the limit by the same margin.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_DUTY = 0.1  # below this, training contributes too little to be worth the network's time: pause
TEMPERATURE_BAND_C = 5.0
POWER_BAND = 0.1  # speed up only below 90% of the power limit
SLOW_DOWN = 0.8  # each decision over the temperature limit
SPEED_UP = 1.2  # each decision under the band


@dataclass(frozen=True)
class Limits:
    temperature_c: float | None = None
    power_w: float | None = None  # the device's power while training (the caller resolves a share)
    daily_wh: float | None = None

    @property
    def any(self) -> bool:
        return any(limit is not None for limit in (self.temperature_c, self.power_w, self.daily_wh))


@dataclass(frozen=True)
class Conditions:
    """What the sensors said over the last interval."""

    hottest: tuple[str, float] | None = None  # ("GPU", 84.0)
    power_w: float | None = None  # the device's power while training at the current duty
    day_wh: float = 0.0  # energy training used today


@dataclass(frozen=True)
class Decision:
    duty: float  # share of the time to spend training, MIN_DUTY..1
    paused: bool
    reason: str | None  # what the volunteer sees, "cooling down: GPU at 84 °C, limit 80 °C"


class Governor:
    """Call :meth:`decide` every few seconds with fresh conditions."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.temperature_duty = 1.0
        self.power_duty = 1.0
        self.hot = False  # paused for heat until back under the band
        self.decision = Decision(1.0, False, None)

    def decide(self, now: Conditions) -> Decision:
        limits = self.limits
        reasons: list[tuple[float, str]] = []  # (duty it asks for, why)
        paused_why: str | None = None
        if limits.daily_wh is not None and now.day_wh >= limits.daily_wh:
            paused_why = f"today's energy budget ({limits.daily_wh:g} Wh) is used: training resumes tomorrow"
        if now.hottest is None:
            self.hot = False  # the sensor went away: nothing to wait for
        if limits.temperature_c is not None and now.hottest is not None:
            why = self._cool(limits.temperature_c, *now.hottest)
            if self.hot:
                paused_why = paused_why or why
            elif self.temperature_duty < 1.0:
                reasons.append((self.temperature_duty, why))
        if limits.power_w is not None and now.power_w is not None:
            why = self._limit_power(limits.power_w, now.power_w)
            if self.power_duty < 1.0:
                reasons.append((self.power_duty, why))
        duty = min([1.0, *(d for d, _ in reasons)])
        if paused_why is not None:
            duty = MIN_DUTY  # until the pause, at the next safe point, the lowest duty
        reason = paused_why or (min(reasons)[1] if reasons else None)
        self.decision = Decision(round(duty, 3), paused_why is not None, reason)
        return self.decision

    def _cool(self, limit: float, where: str, celsius: float) -> str:
        """Updates the temperature duty (and the pause for heat); returns what to tell the volunteer."""
        if self.hot:
            if celsius <= limit - TEMPERATURE_BAND_C:
                self.hot = False  # resume at the lowest duty and speed up from there
        elif celsius >= limit:
            if self.temperature_duty <= MIN_DUTY and celsius >= limit + TEMPERATURE_BAND_C:
                self.hot = True
            self.temperature_duty = max(MIN_DUTY, self.temperature_duty * SLOW_DOWN)
        elif celsius <= limit - TEMPERATURE_BAND_C:
            self.temperature_duty = min(1.0, self.temperature_duty * SPEED_UP)
        return f"cooling down: {where} at {celsius:.0f} °C, limit {limit:g} °C"

    def _limit_power(self, limit: float, watts: float) -> str:
        # Aim at the middle of the band: aiming at the limit would creep toward it from above forever.
        aim = limit * (1 - POWER_BAND / 2)
        if watts > limit:
            self.power_duty = max(MIN_DUTY, self.power_duty * max(0.5, aim / watts))
        elif watts < limit * (1 - POWER_BAND) and self.power_duty < 1.0:
            self.power_duty = min(1.0, self.power_duty * min(SPEED_UP, aim / max(watts, 1e-3)))
        return f"keeping under {limit:g} W: training {self.power_duty:.0%} of the time ({watts:.0f} W)"


def rest_after(batch_seconds: float, duty: float, longest: float = 30.0) -> float:
    """Seconds to rest after a batch of ``batch_seconds`` so that training takes ``duty`` of the time."""
    if duty >= 1.0 or batch_seconds <= 0:
        return 0.0
    return min(longest, batch_seconds * (1.0 - duty) / max(duty, MIN_DUTY))


def parse_power_limit(text: str) -> tuple[float | None, float | None]:
    """ "120W" or "120" -> (120.0, None); "60%" -> (None, 0.6). ValueError with a one-line fix otherwise."""
    value = text.strip().lower().replace(" ", "")
    try:
        if value.endswith("%"):
            share = float(value[:-1]) / 100
            if not 0.05 <= share <= 1.0:
                raise ValueError
            return None, share
        watts = float(value.removesuffix("w"))
        if not 1.0 <= watts <= 5000.0:
            raise ValueError
        return watts, None
    except ValueError:
        raise ValueError(
            f"power limit {text!r} is not understood: give watts (like 120W) or a share of the device's "
            "rating between 5% and 100% (like 60%)"
        ) from None
