from __future__ import annotations

import pytest

from hiveling.core.swarm.peers import (
    PeerAddressError,
    check_multiaddrs,
    format_join_hint,
    parse_initial_peers,
    rank_join_addresses,
)

PEER_ID = "12D3KooWDVZeK8SjCvAPKuULv7rsLBrWUuZDf94GYZJbToZXfNSz"
# Address strings only: unit tests never dial them.
A = f"/ip4/1.2.3.4/tcp/31337/p2p/{PEER_ID}"
B = f"/ip4/192.168.1.20/tcp/31337/p2p/{PEER_ID}"
LOOP = f"/ip4/127.0.0.1/tcp/31337/p2p/{PEER_ID}"


def test_initial_peers_from_comma_separated_string_and_list() -> None:
    assert parse_initial_peers(f" {A}, ,{B} ") == [A, B]
    assert parse_initial_peers([A, B]) == [A, B]
    assert parse_initial_peers([]) == []


def test_initial_peers_default_to_environment() -> None:
    assert parse_initial_peers(None, environ={"INITIAL_PEERS": f"{A},{B}"}) == [A, B]
    assert parse_initial_peers(None, environ={}) == []
    # An explicit argument wins over the environment.
    assert parse_initial_peers([B], environ={"INITIAL_PEERS": A}) == [B]


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("203.0.113.5:31337", "not a multiaddr"),
        ("/ip4/203.0.113.5/tcp/31337", "no /p2p/"),
        (f"/ip4/203.0.113.5/udp/31337/quic/p2p/{PEER_ID}", "/quic"),
        (f"/ip4/203.0.113.5/udp/31337/quic-v1/p2p/{PEER_ID}", "/quic-v1"),
        (f"/ip4/999.0.113.5/tcp/31337/p2p/{PEER_ID}", "not a valid multiaddr"),
        (f"/ip4/203.0.113.5/tcp/31337/p2p/{PEER_ID[:-6]}", "not a valid multiaddr"),
    ],
)
def test_bad_initial_peers_are_refused_with_the_reason(address: str, complaint: str) -> None:
    with pytest.raises(PeerAddressError, match=complaint) as error:
        parse_initial_peers(address)
    assert "\n" not in str(error.value)


def test_listen_addresses_reject_quic_and_accept_tcp() -> None:
    assert check_multiaddrs(None, "host_maddrs") is None
    assert check_multiaddrs(["/ip4/0.0.0.0/tcp/0"], "host_maddrs") == ["/ip4/0.0.0.0/tcp/0"]
    with pytest.raises(PeerAddressError, match="host_maddrs.*quic"):
        check_multiaddrs(["/ip4/0.0.0.0/udp/0/quic"], "host_maddrs")


def test_join_addresses_put_public_first_and_loopback_only_as_last_resort() -> None:
    quic = f"/ip4/203.0.113.5/udp/1/quic/p2p/{PEER_ID}"
    unspecified = f"/ip4/0.0.0.0/tcp/31337/p2p/{PEER_ID}"
    assert rank_join_addresses([LOOP, B, quic, A, unspecified, A]) == [A, B]
    assert rank_join_addresses([LOOP, quic]) == [LOOP]
    assert rank_join_addresses([]) == []


def test_join_hint_gives_the_exact_command_and_argument() -> None:
    hint = format_join_hint([A, B], ["train.py", "--lr", "3e-4"])
    assert f"INITIAL_PEERS={A},{B} python train.py --lr 3e-4" in hint
    assert f'HivemindStrategy(initial_peers="{A},{B}")' in hint
    assert "loopback" not in hint


def test_join_hint_warns_when_only_loopback_is_known() -> None:
    hint = format_join_hint([LOOP], ["-c"])
    assert "python your_script.py" in hint
    assert "loopback" in hint
