"""hivemind's progress tracker, counting this peer itself, remembering who is active, and reporting
at a pace the DHT can bear."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from hivemind.optim.progress_tracker import GlobalTrainingProgress, ProgressTracker
from hivemind.p2p import PeerID
from hivemind.utils import ValueWithExpiration, get_dht_time

from hiveling.core.swarm.plausibility import why_implausible

logger = logging.getLogger(__name__)

#: Progress within an epoch is published at most this often; other peers extrapolate in between.
DEFAULT_REPORT_PERIOD = 0.5


class SelfCountingTracker(ProgressTracker):  # type: ignore[misc]
    """A progress tracker that always counts this peer's own, current progress.

    hivemind stores a peer's progress on the DHT nodes nearest to the key, which in a swarm of two or
    three nodes often excludes the peer itself; its own samples and speed then vanish from the
    estimate, the swarm looks one peer smaller (two peers do not even average) and steps come late.
    """

    #: Peers whose last report is older than this are not expected in an averaging round.
    active_within = 10.0
    active_peer_ids: frozenset[bytes] = frozenset()
    #: The swarm's samples per second at the last fetch, every peer's report included.
    swarm_samples_per_second = 0.0

    #: Every peer with a record at the last fetch (absent ones left out), this one included.
    known_peer_ids: frozenset[bytes] = frozenset()

    def __init__(self, *args: Any, report_period: float = DEFAULT_REPORT_PERIOD, **kwargs: Any) -> None:
        self.report_period = report_period  # before super(): it starts the reporting thread
        self._active_epoch = -float("inf")  # the global epoch when this peer last had samples
        self._absent: dict[bytes, float] = {}
        self._record_times: dict[bytes, float] = {}
        self._epoch_ceiling: tuple[int, float] | None = None  # (step, until when)
        self._doubted: set[bytes] = set()  # peers whose records were ignored, each logged once
        super().__init__(*args, **kwargs)

    def mark_absent(self, peers: Iterable[bytes]) -> None:
        """Leave ``peers`` out of the swarm until they report again: an averaging round expected them
        and they did not come.

        A peer killed without a word keeps its record on the DHT until the record expires (a minute);
        counted meanwhile, it makes every round wait the whole matchmaking time for it and the tray
        show a peer that is gone. Its next report (a peer that was only late) brings it back.
        """
        times = dict(self._record_times)
        for peer in peers:
            self._absent[peer] = times.get(peer, get_dht_time())

    def record_age(self, peer: bytes) -> float | None:
        """Seconds since ``peer`` last reported, by the records of the last fetch (None: it has none)."""
        reported = self._record_times.get(peer)
        return None if reported is None else get_dht_time() - reported

    def _present(self, stamp: tuple[bytes, float] | None) -> bool:
        marked = None if stamp is None else self._absent.get(stamp[0])
        if stamp is None or marked is None:
            return True
        if stamp[1] > marked:
            self._absent.pop(stamp[0], None)  # it reported since: back in the swarm
            return True
        return False

    def report_local_progress(self, local_epoch: int, samples_accumulated: int, **kwargs: Any) -> None:
        if samples_accumulated > 0:  # every batch, not only when a (throttled) report goes out
            self._active_epoch = self.global_epoch
        super().report_local_progress(local_epoch, samples_accumulated, **kwargs)

    #: Seconds a ceiling on the steps records may claim holds (``doubt_steps_above``).
    doubt_period = 60.0

    def doubt_steps_above(self, epoch: int) -> None:
        """Ignore records that claim a step past ``epoch`` for ``doubt_period`` seconds, and fetch again.

        Called when downloads kept serving older steps than the swarm's records claim: a record that
        nobody's state backs would otherwise send this peer downloading at every step. The ceiling
        rises with this peer's own steps, and lapses, so that a peer doubted by mistake (a state served
        late on a busy machine) counts again.
        """
        self._epoch_ceiling = (epoch, get_dht_time() + self.doubt_period)
        # Until the fetch comes back without them, the swarm is where the peer's download left it.
        self.global_progress.epoch = min(self.global_progress.epoch, epoch - 1)
        self.global_progress.next_fetch_time = get_dht_time()
        self.global_state_updated.set()

    def _current_ceiling(self) -> int | None:
        ceiling = self._epoch_ceiling
        if ceiling is None or get_dht_time() > ceiling[1]:
            return None
        return max(ceiling[0], int(self.local_progress.epoch) + 1)

    def believes(self, record: Any) -> bool:
        """Whether a progress record read from the DHT is plausible (``plausibility.py``); the first
        implausible one of each peer is logged."""
        value = getattr(record, "value", None)
        if not isinstance(value, dict):
            return True  # hivemind's parser leaves out what it cannot read
        why = why_implausible(value, int(self.target_batch_size), self._current_ceiling())
        if why is None:
            return True
        peer = bytes(value.get("peer_id", b""))
        if peer not in self._doubted:
            self._doubted.add(peer)
            name = PeerID(peer).to_base58() if peer else "?"
            logger.warning("Ignoring the progress that peer %s reports: %s", name, why)
        return False

    def _parse_swarm_progress_data(self, metadata: Any) -> GlobalTrainingProgress:
        records = dict(metadata) if isinstance(metadata, dict) else {}
        records = {key: record for key, record in records.items() if self.believes(record)}
        records[self._local_public_key] = ValueWithExpiration(
            self.local_progress.dict(), get_dht_time() + self.metadata_expiration
        )
        stamps = {key: _peer_and_time(record) for key, record in records.items()}
        self._record_times = {stamp[0]: stamp[1] for stamp in stamps.values() if stamp is not None}
        records = {key: record for key, record in records.items() if self._present(stamps[key])}
        self.known_peer_ids = frozenset(stamp[0] for key, stamp in stamps.items() if stamp and key in records)
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
        self.swarm_samples_per_second = sum(
            float(value.get("samples_per_second", 0.0))
            for value in (getattr(record, "value", None) for record in records.values())
            if isinstance(value, dict)
        )
        return progress

    def announce_joining(self) -> None:
        """Publish this peer's (empty) progress now, before its first batch.

        A peer that has trained nothing is not announced (below), so two peers that join at once
        through a node that does not train would each wait for the other's record and never see it.
        """
        self._active_epoch = self.global_epoch
        self.should_report_progress.set()

    def refresh(self, timeout: float) -> bool:
        """Fetch the swarm's progress now, not at the next scheduled time; whether a fetch came in time."""
        self.fetched_global_progress_this_epoch.clear()
        self.global_progress.next_fetch_time = get_dht_time()
        self.global_state_updated.set()  # the fetcher re-reads when to fetch: now
        return bool(self.fetched_global_progress_this_epoch.wait(timeout))

    def update_epoch(self, new_epoch: int | None = None) -> int:
        """Begin the next epoch, expecting its end when the swarm's current speed says.

        hivemind knows nothing of the new epoch until its next fetch, so a peer steps only once a
        fetch has come and said so: with fetches less frequent than steps, every step would run late
        by up to a fetch period (more samples than ``target_batch_size``, fewer steps). The estimate
        from the last fetch holds until the next one corrects it.
        """
        epoch = int(super().update_epoch(new_epoch))
        progress, speed = self.global_progress, self.swarm_samples_per_second
        if speed > 0 and progress.epoch == epoch and progress.samples_accumulated == 0:
            progress.eta_next_epoch = get_dht_time() + self.target_batch_size / speed
        return epoch

    async def _progress_reporter(self) -> None:
        """Publishes this peer's progress: at once when its epoch changes or its count is reset, at
        most every ``report_period`` seconds while samples accumulate, and at least every half
        ``metadata_expiration``.

        hivemind publishes after every local batch; each report is a signed DHT store to every nearby
        peer, and with fast batches the DHT processes and daemons then take much of the machine's CPU
        from training. Between reports the others extrapolate from the reported samples per second.
        """
        loop = asyncio.get_running_loop()
        last_time, last_epoch, last_samples = -float("inf"), None, 0
        pending = False
        stores: set[asyncio.Task[Any]] = set()
        try:
            while not self.shutdown_triggered.is_set():
                due = last_time + self.metadata_expiration / 2
                if pending:
                    due = min(due, last_time + self.report_period)
                signalled = await loop.run_in_executor(
                    None, self.should_report_progress.wait, max(0.0, due - get_dht_time())
                )
                if self.shutdown_triggered.is_set():
                    break
                self.should_report_progress.clear()
                progress = self.local_progress
                now = get_dht_time()
                urgent = progress.epoch != last_epoch or progress.samples_accumulated < last_samples
                if signalled and not urgent and now < last_time + self.report_period:
                    pending = True
                    continue
                pending = False
                if self._active_epoch < self.global_epoch - 1:
                    # As hivemind does: a peer that has trained nothing for a while (just started,
                    # downloading the state) is not announced, so nobody waits for it in a round.
                    # Nothing went out, so the report of its first batch is urgent.
                    last_time, last_epoch = now, None
                    continue
                last_time, last_epoch, last_samples = now, progress.epoch, progress.samples_accumulated
                store = asyncio.create_task(
                    asyncio.wait_for(
                        self.dht.store(
                            key=self.training_progress_key,
                            subkey=self._local_public_key,
                            value=progress.dict(),
                            expiration_time=now + self.metadata_expiration,
                            return_future=True,
                        ),
                        timeout=self.metadata_expiration,
                    )
                )
                stores.add(store)
                store.add_done_callback(_forget(stores))
        finally:
            for store in list(stores):  # their callbacks remove them from the set
                store.cancel()

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


def _forget(stores: set[asyncio.Task[Any]]) -> Any:
    """A done-callback that drops a finished store and retrieves its outcome (a timeout is no news)."""

    def done(task: asyncio.Task[Any]) -> None:
        stores.discard(task)
        if not task.cancelled():
            task.exception()

    return done


def _peer_and_time(record: Any) -> tuple[bytes, float] | None:
    """The peer a progress record is from and when it reported (None for a malformed record)."""
    value = getattr(record, "value", None)
    if not isinstance(value, dict) or "peer_id" not in value:
        return None
    return bytes(value["peer_id"]), float(value.get("time", 0.0))
