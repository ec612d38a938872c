"""The swarm's energy: every peer publishes what its training used for the run; the host sums them.

One DHT key per run, a subkey per peer (its peer id), the value its total Wh for the run on that
machine. Records expire after a day unless renewed, so a peer that left long ago drops out of the sum
(the host's total is what the swarm's current members have given, each since they first joined).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

PUBLISH_EVERY = 15.0  # seconds
READ_EVERY = 5.0  # the host's sum
RECORD_LIFETIME = 86400.0


def ledger_key(prefix: str) -> str:
    return f"{prefix}_energy"


class EnergyLedger:
    """Publishes this peer's total and, for the host, reads everyone's: all without blocking training."""

    def __init__(
        self,
        dht: Any,
        prefix: str,
        read_totals: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dht = dht
        self.key = ledger_key(prefix)
        self.subkey = str(dht.peer_id)
        self.read_totals = read_totals
        self.clock = clock
        self._published = -math.inf
        self._read = -math.inf
        self._pending: Any = None
        self.swarm_wh: float | None = None
        self.peers = 0

    def tick(self, total_wh: float) -> None:
        if self._pending is not None and self._pending.done():
            self._collect(self._pending)
            self._pending = None
        now = self.clock()
        from hivemind.utils import get_dht_time

        try:
            if now - self._published >= PUBLISH_EVERY:
                self._published = now
                expiration = get_dht_time() + RECORD_LIFETIME
                value = round(total_wh, 4)
                self.dht.store(self.key, value, expiration, subkey=self.subkey, return_future=True)
            if self.read_totals and self._pending is None and now - self._read >= READ_EVERY:
                self._read = now
                self._pending = self.dht.get(self.key, latest=True, return_future=True)
        except Exception as error:  # a DHT shutting down: energy is never worth a crash
            logger.debug("Energy ledger: %r", error)

    def _collect(self, future: Any) -> None:
        try:
            found = future.result()
        except Exception as error:
            logger.debug("Energy ledger read failed: %r", error)
            return
        if found is None or not isinstance(found.value, dict):
            return
        total, peers = 0.0, 0
        for item in found.value.values():
            value = getattr(item, "value", None)
            if isinstance(value, int | float) and math.isfinite(value) and 0 <= value < 1e9:
                total += float(value)
                peers += 1
        self.swarm_wh, self.peers = total, peers
