"""Peer addresses: reading ``INITIAL_PEERS``, checking multiaddrs, and telling others how to join."""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence

INITIAL_PEERS_ENV = "INITIAL_PEERS"

# The p2pd daemon shipped with hivemind 1.1.12 refuses to start with these transports.
_UNSUPPORTED_PROTOCOLS = ("quic", "quic-v1", "webtransport")
# Multiaddr protocols and the kind of value each takes (None: no value). Checked here, without hivemind,
# so that the tray app can validate invites without loading torch.
_PROTOCOLS: dict[str, str | None] = {
    "ip4": "ip4",
    "ip6": "ip6",
    "dns": "host",
    "dns4": "host",
    "dns6": "host",
    "dnsaddr": "host",
    "tcp": "port",
    "udp": "port",
    "p2p": "peer",
    "ipfs": "peer",
    "sni": "host",
    "certhash": "text",
    "ws": None,
    "wss": None,
    "tls": None,
    "noise": None,
    "http": None,
    "https": None,
    "p2p-circuit": None,
    "quic": None,
    "quic-v1": None,
    "webtransport": None,
    "webrtc": None,
    "webrtc-direct": None,
}
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58 = set(_BASE58_ALPHABET)


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
    protocols = _protocols(addr, what)
    for proto in _UNSUPPORTED_PROTOCOLS:
        if proto in protocols:
            raise PeerAddressError(
                f"{what}: {addr!r} uses /{proto}, which hivemind 1.1.12's p2pd rejects; use a /tcp address"
            )
    if need_peer_id and "p2p" not in protocols and "ipfs" not in protocols:
        raise PeerAddressError(
            f"{what}: {addr!r} has no /p2p/<peer id> part; copy the full address printed by the first peer"
        )


def _protocols(addr: str, what: str) -> list[str]:
    """The protocol names of ``addr``, checking each value; PeerAddressError on anything malformed."""
    parts = addr.split("/")[1:]
    names: list[str] = []
    index = 0
    while index < len(parts):
        name = parts[index]
        if name not in _PROTOCOLS:
            raise PeerAddressError(f"{what}: {addr!r} is not a valid multiaddr (unknown protocol /{name})")
        names.append(name)
        kind = _PROTOCOLS[name]
        index += 1
        if kind is None:
            continue
        if index >= len(parts) or not parts[index]:
            raise PeerAddressError(f"{what}: {addr!r} is not a valid multiaddr (/{name} needs a value)")
        if not _valid_value(kind, parts[index]):
            raise PeerAddressError(
                f"{what}: {addr!r} is not a valid multiaddr ({parts[index]!r} is not a valid /{name} value)"
            )
        index += 1
    return names


def _is_peer_id(value: str) -> bool:
    """A base58 multihash: sha2-256 (Qm..., RSA keys) or identity (12D3KooW..., Ed25519 keys)."""
    if not 32 <= len(value) <= 128 or not set(value) <= _BASE58:
        return False
    number = 0
    for char in value:
        number = number * 58 + _BASE58_ALPHABET.index(char)
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(value) - len(value.lstrip("1"))) + raw
    if len(raw) < 2:
        return False
    code, size = raw[0], raw[1]
    return code in (0x00, 0x12) and size == len(raw) - 2 and (code != 0x12 or size == 32)


def _valid_value(kind: str, value: str) -> bool:
    if kind in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return False
        return ip.version == (4 if kind == "ip4" else 6)
    if kind == "port":
        return value.isdigit() and int(value) <= 65535
    if kind == "peer":
        return _is_peer_id(value)
    if kind == "host":
        return all(label and len(label) <= 63 for label in value.rstrip(".").split(".")) and len(value) <= 253
    return True


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
