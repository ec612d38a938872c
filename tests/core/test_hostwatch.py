"""The host's peer ids that a volunteer watches, read from the invite's addresses."""

from __future__ import annotations

from hiveling.core.worker.hostwatch import host_peer_ids

HOST = "QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"


def test_every_address_of_the_host_names_it_once() -> None:
    addresses = [f"/ip4/203.0.113.5/tcp/31337/p2p/{HOST}", f"/ip4/192.168.1.20/tcp/31337/p2p/{HOST}/"]
    assert host_peer_ids(addresses) == [HOST]


def test_addresses_without_a_peer_id_name_nobody() -> None:
    assert host_peer_ids(["/ip4/203.0.113.5/tcp/31337", "/dns4/example.org/tcp/1/ipfs/"]) == []
