"""The worker's view of energy: the meter read every few seconds, the governor's decision, the fields
that progress events carry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from hiveling.core.energy.governor import Conditions, Decision, Governor, Limits
from hiveling.core.energy.meter import EnergyMeter

logger = logging.getLogger(__name__)


class EnergyWatch:
    def __init__(
        self,
        meter: EnergyMeter,
        limits: Limits | None = None,
        power_share: float | None = None,
        previous_wh: float = 0.0,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = meter
        self.limits = limits or Limits()
        self.power_share = power_share  # a power limit as a share of the devices' rating
        self.previous_wh = previous_wh  # this run's energy on this machine before this worker started
        self.interval = interval
        self.clock = clock
        self.governor: Governor | None = None
        if self.limits.any or power_share is not None:
            self.governor = Governor(self.limits)
        self._said_no_rating = False
        self._last = -float("inf")
        self.decision = Decision(1.0, False, None)

    @property
    def session_wh(self) -> float:
        return self.meter.status.session_wh

    @property
    def total_wh(self) -> float:
        return self.previous_wh + self.meter.status.session_wh

    def tick(self) -> Decision:
        """Reads the sensors once ``interval`` has passed; the governor decides from what they said."""
        now = self.clock()
        if now - self._last < self.interval:
            return self.decision
        self._last = now
        status = self.meter.update()
        if self.power_share is not None and self.limits.power_w is None and self.governor is not None:
            if status.rated_w:
                watts = round(self.power_share * status.rated_w, 1)
                self.limits = Limits(self.limits.temperature_c, watts, self.limits.daily_wh)
                self.governor.limits = self.limits
                logger.info(
                    "Power limit: %g W (%.0f%% of %g W)", watts, self.power_share * 100, status.rated_w
                )
            elif not self._said_no_rating:
                self._said_no_rating = True
                logger.warning(
                    "The power limit of %.0f%% is not applied: this device does not say its rated power; "
                    "give the limit in watts instead (like 120W)",
                    self.power_share * 100,
                )
        if self.governor is not None:
            conditions = Conditions(status.hottest, status.device_power_w, self.meter.day_wh)
            self.decision = self.governor.decide(conditions)
        return self.decision

    def may_resume(self) -> bool:
        """Whether a pause the governor asked for may end (asked every few seconds while paused)."""
        return not self.tick().paused

    def hello_fields(self) -> dict[str, Any]:
        status = self.meter.status
        source = status.source
        if status.above_idle:
            source += "; what training added over the idle power measured at start"
        return {"energy_source": source, "energy_estimated": status.estimated}

    def fields(self) -> dict[str, Any]:
        """What progress events carry (new fields: older readers ignore them)."""
        status = self.meter.status
        fields: dict[str, Any] = {
            "energy_wh": round(status.session_wh, 3),
            "energy_total_wh": round(self.total_wh, 3),
            "energy_today_wh": round(self.meter.day_wh, 3),
            "energy_estimated": status.estimated,
            "power_w": None if status.power_w is None else round(status.power_w, 1),
        }
        if status.temperatures:
            fields["temperatures"] = {kind: round(value, 1) for kind, value in status.temperatures.items()}
        if self.governor is not None:
            fields["duty"] = self.decision.duty
            fields["governor"] = self.decision.reason
        return fields
