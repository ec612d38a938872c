"""Peers that join through a node that does not train (a bootstrap server, a monitor) meet and step
together, whatever the strategy's delay and buffer options."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.trial import PeerConfig

from .conftest import Peer, max_difference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

StartPeer = Callable[..., Peer]

OPTIONS = {
    "defaults": {},
    "delayed-offloaded": {"delay_optimizer_step": True, "offload_optimizer": True},
    "delayed-grads": {"delay_optimizer_step": True, "offload_optimizer": True, "delay_grad_averaging": True},
    "reused-buffers": {"reuse_grad_buffers": True},
}


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[list[str]]:
    """A bare hivemind DHT on 127.0.0.1, as users start one for their peers to meet through."""
    import hivemind

    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    try:
        yield [str(address) for address in dht.get_visible_maddrs()]
    finally:
        dht.shutdown()


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_peers_joining_through_a_node_that_does_not_train_step_together(
    start_peer: StartPeer, run_id: str, bootstrap: list[str], options: dict[str, Any]
) -> None:
    # The reference extension's shape: target 8, small batches, 0.25 s per batch, both started at once.
    config = PeerConfig(
        run_id=run_id,
        steps=6,
        linger_steps=1,
        target_batch_size=8,
        batch_size=4,
        sleep=0.25,
        initial_peers=bootstrap,
        strategy=options,
    )
    peers = [start_peer(config), start_peer(PeerConfig(**{**config.__dict__, "data_seed": 2}))]
    for peer in peers:
        peer.wait_for(lambda e: e["type"] == "peers" and e["count"] >= 2, timeout=60)
    codes = [peer.finish() for peer in peers]
    assert codes == [0, 0], [peer.process.tail() for peer in peers]
    first, second = (peer.steps() for peer in peers)
    together = [s for s in set(first) & set(second) if first[s]["peers"] >= 2 and second[s]["peers"] >= 2]
    assert together, "the two peers took at least one collaborative step together"
    # A round that failed (say, the other peer stopping meanwhile) leaves an update of local gradients,
    # which the peers' next step corrects; the last step they both averaged must leave them identical.
    averaged = [s for s in together if first[s]["averaged"] and second[s]["averaged"]]
    assert averaged, ("no step both peers averaged", [peer.process.tail() for peer in peers])
    step = max(averaged)
    difference = max_difference(first[step]["params"], second[step]["params"])
    summary = [
        [(s, e["peers"], e["averaged"], e["failed_rounds"]) for s, e in sorted(h.items())]
        for h in (first, second)
    ]
    assert difference < 1e-6, (step, difference, summary, [peer.process.tail()[-3000:] for peer in peers])
