"""A closed run: a host that holds the organizer key, a volunteer with the join secret, and rogues that
know the host's address and the run's DHT prefix but hold no invite. Real peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.trial import PeerConfig

from .conftest import Peer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

StartPeer = Callable[..., Peer]
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def credentials(run_id: str) -> tuple[dict[str, str], str]:
    """What an invite gives a volunteer (hex), and the organizer's private key (hex)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return {
        "run_id": run_id,
        "organizer_key": public.hex(),
        "join_secret": os.urandom(16).hex(),
    }, private.hex()


def test_only_invite_holders_train_together_and_rogues_are_refused_at_every_layer(
    start_peer: StartPeer, run_id: str
) -> None:
    invite, signing_key = credentials(run_id)
    config = PeerConfig(run_id=run_id, steps=12, end_with_peers=2, sleep=0.05)
    host = start_peer(
        PeerConfig(
            **{**config.__dict__, "wait_for_peers": 2, "admission": {**invite, "signing_key": signing_key}}
        )
    )
    address = host.address()  # it waits for a second peer: rogues do not count
    rogue_dht_sees_nothing(run_id, address)
    rogue_averager_is_refused(run_id, address)
    wrong = {**invite, "join_secret": os.urandom(16).hex()}  # an old or made-up invite
    stranger = start_peer(
        PeerConfig(
            **{**config.__dict__, "steps": 3, "data_seed": 3, "initial_peers": address, "admission": wrong}
        )
    )
    assert stranger.finish(timeout=120) != 0
    assert "did not admit this computer: this invite no longer admits new peers" in stranger.process.tail()
    member = start_peer(
        PeerConfig(**{**config.__dict__, "data_seed": 2, "initial_peers": address, "admission": invite})
    )

    assert [host.finish(), member.finish()] == [0, 0], member.process.tail()
    a, b = host.steps(), member.steps()
    together = [step for step in sorted(set(a) & set(b)) if a[step]["peers"] == 2]
    assert len(together) >= 3, (sorted(a), sorted(b))
    assert a[together[-1]]["params"] == pytest.approx(b[together[-1]]["params"], abs=1e-6)
    assert "Refused" in host.process.tail(), "the host's log names the refused attempts"


def rogue_dht_sees_nothing(run_id: str, address: str) -> None:
    """A plain hivemind DHT cannot join through the host, nor read or write the run's records."""
    import hivemind

    with pytest.raises(Exception, match="bootstrap failed"):
        hivemind.DHT(start=True, host_maddrs=LOOPBACK, initial_peers=[address])
    rogue = hivemind.DHT(
        start=True, host_maddrs=LOOPBACK, initial_peers=[address], ensure_bootstrap_success=False
    )
    try:
        assert rogue.get(f"{run_id}_progress", latest=True) is None
        # The host answered none of its requests: it knows no peer to store a record at, or to ask.
        assert rogue.run_coroutine(known_peers) == 0
    finally:
        rogue.shutdown()


async def known_peers(_: Any, node: Any) -> int:
    return len(node.protocol.routing_table.uid_to_peer_id)


def rogue_averager_is_refused(run_id: str, address: str) -> None:
    """Calls with Hiveling's own averager classes, which anyone can install, get no state and no group."""
    import hivemind
    from hivemind.p2p import PeerID
    from hivemind.proto import averaging_pb2
    from hivemind.utils import get_dht_time

    from hiveling.core.swarm.averagers import SizedGradientAverager, SizedStateAverager

    host_id = PeerID.from_base58(address.rsplit("/p2p/", 1)[1])
    rogue = hivemind.DHT(
        start=True, host_maddrs=LOOPBACK, initial_peers=[address], ensure_bootstrap_success=False
    )

    async def attempt() -> tuple[list[Any], list[Any]]:
        p2p = await rogue.replicate_p2p()
        state = SizedStateAverager.get_stub(p2p, host_id, namespace=f"{run_id}_state_averager")
        downloaded = [part async for part in await state.rpc_download_state(averaging_pb2.DownloadRequest())]
        grads = SizedGradientAverager.get_stub(p2p, host_id, namespace=f"{run_id}_grad_averager")
        request = averaging_pb2.JoinRequest(schema_hash=b"", expiration=get_dht_time() + 10)
        answers = [answer async for answer in await grads.rpc_join_group(request)]
        return downloaded, answers

    try:
        downloaded, answers = asyncio.run(attempt())
    finally:
        rogue.shutdown()
    assert downloaded == []
    assert [answer.code for answer in answers] == [averaging_pb2.PROTOCOL_VIOLATION]
