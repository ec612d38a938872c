"""A member's progress record that lies (a step nobody serves, samples nobody trained, a speed no device
reaches) neither freezes nor rushes the others: real peers and a real lying DHT peer on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from hiveling.core.swarm.tracker import SelfCountingTracker
from tests.support.trial import PeerConfig

from .conftest import Peer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Liar:
    """A plain hivemind DHT peer that publishes progress records signed with its own fresh key."""

    def __init__(self, prefix: str, initial_peers: list[str]) -> None:
        import hivemind
        from hivemind.dht.schema import RSASignatureValidator, SchemaValidator
        from hivemind.optim.progress_tracker import TrainingProgressSchema
        from hivemind.utils.crypto import RSAPrivateKey

        self.key = f"{prefix}_progress"
        self.dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=initial_peers)
        self.signer = RSASignatureValidator(RSAPrivateKey())  # not the process-wide key a tracker here uses
        self.dht.add_validators([SchemaValidator(TrainingProgressSchema, prefix=prefix), self.signer])

    def claim(self, epoch: int, samples: int, speed: float) -> None:
        from hivemind.optim.progress_tracker import LocalTrainingProgress
        from hivemind.utils import get_dht_time

        record = LocalTrainingProgress(
            peer_id=self.dht.peer_id.to_bytes(),
            epoch=epoch,
            samples_accumulated=samples,
            samples_per_second=speed,
            time=get_dht_time(),
            client_mode=False,
        )
        stored = self.dht.store(
            self.key, record.dict(), get_dht_time() + 60, subkey=self.signer.local_public_key
        )
        assert stored, "the lying record was accepted by the DHT: its signature and schema are valid"


@pytest.fixture
def tracker() -> Iterator[SelfCountingTracker]:
    import hivemind

    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    tracked = SelfCountingTracker(
        dht=dht,
        prefix="trust_test",
        target_batch_size=64,
        min_refresh_period=0.2,
        max_refresh_period=0.5,
        start=True,
    )
    try:
        yield tracked
    finally:
        tracked.shutdown(timeout=10)
        dht.shutdown()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_records_claiming_samples_or_speed_nobody_reaches_are_left_out(tracker: SelfCountingTracker) -> None:
    addresses = [str(a) for a in tracker.dht.get_visible_maddrs()]
    honest, greedy, fast = (Liar("trust_test", addresses) for _ in range(3))
    try:
        honest.claim(epoch=0, samples=16, speed=50.0)
        greedy.claim(epoch=0, samples=10**9, speed=50.0)
        fast.claim(epoch=0, samples=16, speed=1e12)
        ids = {liar.dht.peer_id.to_bytes() for liar in (honest, greedy, fast)}
        # The honest record is counted: the filter does not leave out everyone else.
        wait_until(lambda: honest.dht.peer_id.to_bytes() in tracker.known_peer_ids, 30, "honest record seen")
        assert ids & tracker.known_peer_ids == {honest.dht.peer_id.to_bytes()}
        progress = tracker.global_progress
        assert progress.num_peers == 2, progress
        assert progress.samples_accumulated == 16, progress
        assert tracker.swarm_samples_per_second < 1e3
    finally:
        for liar in (honest, greedy, fast):
            liar.dht.shutdown()


StartPeer = Callable[..., Peer]


def test_a_record_claiming_a_step_nobody_serves_does_not_freeze_a_peer(
    start_peer: StartPeer, run_id: str
) -> None:
    steps = 60
    config = PeerConfig(
        run_id=run_id, steps=steps, linger_steps=0, target_batch_size=8, batch_size=4, sleep=0.1
    )
    peer = start_peer(config)
    address = peer.address()
    peer.wait_for(lambda e: e["type"] == "step" and e["step"] >= 2)
    liar = Liar(run_id, [address])
    try:
        liar.claim(epoch=10**6, samples=0, speed=10.0)  # plausible in all but its step
        assert peer.finish(timeout=120) == 0, peer.process.tail()
    finally:
        liar.dht.shutdown()
    log = peer.process.tail()
    reached = max(peer.steps())
    assert reached >= steps, (reached, log[-3000:])
    # Without the bounds: 44 such download cycles of a second each, in this run's 60 steps.
    assert log.count("Peers kept serving an older step") <= 2, log[-3000:]
    assert log.count("Ignoring the progress that peer") == 1, log[-3000:]
