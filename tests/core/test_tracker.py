"""The progress tracker against a real DHT on 127.0.0.1: throttled reports, urgent ones at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from hiveling.core.swarm.tracker import SelfCountingTracker

pytestmark = [pytest.mark.timed, pytest.mark.timeout(120)]

PERIOD = 1.0


@pytest.fixture
def tracker() -> Iterator[SelfCountingTracker]:
    import hivemind

    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    tracked = SelfCountingTracker(
        dht=dht, prefix="tracker_test", target_batch_size=10**6, report_period=PERIOD, start=True
    )
    try:
        yield tracked
    finally:
        began = time.monotonic()
        tracked.shutdown(timeout=10)
        assert time.monotonic() - began < 5, "shutdown is prompt"
        dht.shutdown()


def stored(tracker: SelfCountingTracker) -> dict[str, Any] | None:
    """This peer's record as the DHT holds it now."""
    found = tracker.dht.get(tracker.training_progress_key, latest=True)
    records = found.value if found is not None and isinstance(found.value, dict) else {}
    me = tracker.dht.peer_id.to_bytes()
    for record in records.values():
        value = getattr(record, "value", None)
        if isinstance(value, dict) and bytes(value.get("peer_id", b"")) == me:
            return value
    return None


def test_samples_are_published_at_most_every_period_and_a_new_epoch_at_once(
    tracker: SelfCountingTracker,
) -> None:
    times: set[float] = set()
    began = time.monotonic()
    first_seen = None
    samples = 0
    while time.monotonic() - began < 2.0:
        samples += 32
        tracker.report_local_progress(local_epoch=0, samples_accumulated=samples)  # one "batch"
        record = stored(tracker)
        if record is not None:
            times.add(float(record["time"]))
            first_seen = first_seen or time.monotonic() - began
        time.sleep(0.02)  # the pace of the simulated batches, not a wait for a result
    # The first batch is announced at once, whenever the reporter last woke up (nothing went out then).
    assert first_seen is not None
    assert first_seen < 0.5 * PERIOD, first_seen
    # About 100 batches: hivemind would publish each one; here at most one every PERIOD seconds.
    assert 2 <= len(times) <= 2.0 / PERIOD + 2, sorted(times)
    assert stored(tracker) is not None

    # Right after a report, a throttled one would wait a whole period; a new epoch must not.
    latest = max(times)
    deadline = time.monotonic() + 4 * PERIOD
    while (record := stored(tracker)) is None or float(record["time"]) == latest:
        assert time.monotonic() < deadline, "throttled reports still go out every period"
        samples += 32
        tracker.report_local_progress(local_epoch=0, samples_accumulated=samples)
        time.sleep(0.02)
    asked = time.monotonic()
    tracker.report_local_progress(local_epoch=1, samples_accumulated=0)
    while (record := stored(tracker)) is None or record["epoch"] != 1:
        assert time.monotonic() - asked < 0.6 * PERIOD, "a new epoch is published without waiting"
        time.sleep(0.01)
    assert record["samples_accumulated"] == 0


def test_a_new_epoch_is_expected_when_the_swarm_speed_says_not_at_the_next_fetch(
    tracker: SelfCountingTracker,
) -> None:
    from hivemind.utils import get_dht_time

    samples = 0
    deadline = time.monotonic() + 20
    while tracker.swarm_samples_per_second <= 0:  # a fetch has seen this peer's published speed
        assert time.monotonic() < deadline, "the tracker fetched its own progress"
        samples += 32
        tracker.report_local_progress(local_epoch=0, samples_accumulated=samples)
        time.sleep(0.02)  # the pace of the simulated batches
    speed = tracker.swarm_samples_per_second
    with tracker.pause_updates():
        tracker.update_epoch(1)
        expected = get_dht_time() + tracker.target_batch_size / speed
    # hivemind leaves the estimate at infinity until its next fetch, and a peer steps only after it.
    assert tracker.global_progress.eta_next_epoch == pytest.approx(expected, abs=1.0)
    assert tracker.global_epoch == 1
