"""Peer addresses: reading ``INITIAL_PEERS``, checking multiaddrs, and telling others how to join."""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence

INITIAL_PEERS_ENV = "INITIAL_PEERS"

# The p2pd daemon shipped with hivemind 1.1.12 refuses to start with these transports.
_UNSUPPORTED_PROTOCOLS = ("quic", "quic-v1", "webtransport")


class PeerAddressError(ValueError):
    """A peer address that hivemind cannot use; the message says how to fix it."""


def parse_initial_peers(
    value: str | Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Return the bootstrap peers from ``value``, or from ``INITIAL_PEERS`` when ``value`` is None.

    Accepts a list of multiaddrs or one comma-separated string; blanks are dropped.
    """
    if value is None:
        value = (os.environ if environ is None else environ).get(INITIAL_PEERS_ENV, "")
    items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    peers = [item.strip() for item in items if item.strip()]
    for peer in peers:
        check_multiaddr(peer, "initial_peers", need_peer_id=True)
    return peers


def check_multiaddrs(addrs: Sequence[str] | None, what: str) -> list[str] | None:
    """Validate listen/announce addresses; None stays None."""
    if addrs is None:
        return None
    if isinstance(addrs, str):
        addrs = [addrs]
    for addr in addrs:
        check_multiaddr(addr, what)
    return list(addrs)


def check_multiaddr(addr: str, what: str, need_peer_id: bool = False) -> None:
    """Raise PeerAddressError unless ``addr`` is a multiaddr that hivemind 1.1.12 accepts."""
    parts = addr.split("/")
    if not addr.startswith("/") or len(parts) < 3:
        raise PeerAddressError(
            f"{what}: {addr!r} is not a multiaddr; expected something like "
            "/ip4/203.0.113.5/tcp/31337/p2p/QmPeerId (copy it from the first peer's output)"
        )
    protocols = parts[1::2]
    for proto in _UNSUPPORTED_PROTOCOLS:
        if proto in protocols:
            raise PeerAddressError(
                f"{what}: {addr!r} uses /{proto}, which hivemind 1.1.12's p2pd rejects; use a /tcp address"
            )
    if need_peer_id and "p2p" not in protocols:
        raise PeerAddressError(
            f"{what}: {addr!r} has no /p2p/<peer id> part; copy the full address printed by the first peer"
        )
    try:
        from hivemind.utils.multiaddr import Multiaddr

        Multiaddr(addr)
    except Exception as e:  # the multiaddr library raises a zoo of types for bad input
        raise PeerAddressError(f"{what}: {addr!r} is not a valid multiaddr ({e})") from None


def _reachability(addr: str) -> int | None:
    """Sort key: 0 public, 1 private/link-local, 2 loopback; None to never advertise."""
    parts = addr.split("/")
    protocols = parts[1::2]
    if any(proto in protocols for proto in _UNSUPPORTED_PROTOCOLS) or len(parts) < 3:
        return None
    kind, host = parts[1], parts[2]
    if kind in ("dns", "dns4", "dns6", "dnsaddr"):
        return 0
    if kind not in ("ip4", "ip6"):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast:
        return None
    if ip.is_loopback:
        return 2
    return 0 if ip.is_global else 1


def rank_join_addresses(addrs: Iterable[str]) -> list[str]:
    """Order this peer's visible addresses by how likely another machine can reach them.

    Public addresses come first, then private ones; loopback is kept only when nothing else exists.
    """
    ranked = sorted(
        (rank, index, addr)
        for index, addr in enumerate(dict.fromkeys(addrs))
        if (rank := _reachability(addr)) is not None
    )
    remote = [addr for rank, _, addr in ranked if rank < 2]
    return remote or [addr for _, _, addr in ranked]


def format_join_hint(addrs: Sequence[str], argv: Sequence[str]) -> str:
    """The message a starting peer prints: the exact command and argument another machine joins with."""
    if not addrs:
        return "This peer has no address other machines can reach; pass host_maddrs/announce_maddrs."
    peers = ",".join(addrs)
    lines = ["To join this collaboration from another machine, run the same script there with:"]
    script = list(argv)
    if script and script[0] not in ("", "-c") and not script[0].endswith("ipykernel_launcher.py"):
        lines.append(f"    {INITIAL_PEERS_ENV}={shlex.quote(peers)} python {shlex.join(script)}")
    else:
        lines.append(f"    {INITIAL_PEERS_ENV}={shlex.quote(peers)} python your_script.py")
    lines.append(f'or pass HivemindStrategy(initial_peers="{peers}")')
    if all(_reachability(addr) == 2 for addr in addrs):
        lines.append(
            "(only a loopback address is known: other machines need host_maddrs on a reachable interface)"
        )
    return "\n".join(lines)
