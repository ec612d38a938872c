"""hivemind's progress tracker, counting this peer itself and remembering who is active."""

from __future__ import annotations

import asyncio
from typing import Any

from hivemind.optim.progress_tracker import GlobalTrainingProgress, ProgressTracker
from hivemind.utils import ValueWithExpiration, get_dht_time


class SelfCountingTracker(ProgressTracker):  # type: ignore[misc]
    """A progress tracker that always counts this peer's own, current progress.

    hivemind stores a peer's progress on the DHT nodes nearest to the key, which in a swarm of two or
    three nodes often excludes the peer itself; its own samples and speed then vanish from the
    estimate, the swarm looks one peer smaller (two peers do not even average) and steps come late.
    """

    #: Peers whose last report is older than this are not expected in an averaging round.
    active_within = 10.0
    active_peer_ids: frozenset[bytes] = frozenset()

    def _parse_swarm_progress_data(self, metadata: Any) -> GlobalTrainingProgress:
        records = dict(metadata) if isinstance(metadata, dict) else {}
        records[self._local_public_key] = ValueWithExpiration(
            self.local_progress.dict(), get_dht_time() + self.metadata_expiration
        )
        progress = super()._parse_swarm_progress_data(records)
        now = get_dht_time()
        active = set()
        for record in records.values():
            value = getattr(record, "value", None)
            if (
                isinstance(value, dict)
                and value.get("epoch") == progress.epoch
                and now - float(value.get("time", 0.0)) < self.active_within
            ):
                active.add(bytes(value["peer_id"]))
        self.active_peer_ids = frozenset(active)
        return progress

    def run(self) -> None:
        # hivemind's run() leaves its event loop's executor threads alive after shutdown.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(asyncio.gather(self._progress_reporter(), self._progress_fetcher()))
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            self.shutdown_complete.set()
