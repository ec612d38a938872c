"""The bytes of an invite's payload: a tight layout, so that an invite fits a small QR code.

Layout (``str`` is a varint length and UTF-8, ``varint`` is unsigned LEB128)::

    organizer key (32) | run id (10) | expires u32 (Unix seconds) | target batch size varint |
    run name str | recipe str | recipe version str | hyperparameters str (JSON) |
    peer count varint | peers... | last step varint (optional; 0 or absent: no end) |
    local steps varint (optional; 0 or absent: synchronous) | join secret (optional; a length varint
    and its bytes: absent, the run is open to anyone who knows its peers) |
    fields added by later clients (ignored)

A peer is a component count and that many components of a multiaddr, each a tag and its value in
binary (an IPv4 address takes 4 bytes, a peer id its 34-byte multihash, a peer id seen earlier in the
same invite one byte). Count 0 means the address follows as plain text: the fallback for protocols
this layout does not know, so any address survives the round trip unchanged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

RUN_ID_SIZE: Final = 10
KEY_SIZE: Final = 32
MAX_TIME: Final = 2**32 - 1

_TEXT: Final = 0
_IP4, _IP6, _TCP, _DNS, _DNS4, _DNS6, _DNSADDR, _P2P, _P2P_AGAIN = range(1, 10)
_NAMES: Final = {"dns": _DNS, "dns4": _DNS4, "dns6": _DNS6, "dnsaddr": _DNSADDR}
_TAG_NAMES: Final = {tag: name for name, tag in _NAMES.items()}
_BASE58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class FormatError(ValueError):
    """Bytes that are not a payload of this layout."""


@dataclass(frozen=True)
class Fields:
    organizer_key: bytes
    run_id: bytes
    expires: int
    target_batch_size: int
    run_name: str
    recipe: str
    recipe_version: str
    hparams_json: str
    peers: tuple[str, ...]
    last_step: int | None = None
    local_steps: int | None = None
    join_secret: bytes | None = None


def encode(fields: Fields) -> bytes:
    if len(fields.organizer_key) != KEY_SIZE or len(fields.run_id) != RUN_ID_SIZE:
        raise ValueError("the organizer key must have 32 bytes and the run id 10")
    out = bytearray(fields.organizer_key + fields.run_id + fields.expires.to_bytes(4, "big"))
    _put_varint(out, fields.target_batch_size)
    for text in (fields.run_name, fields.recipe, fields.recipe_version, fields.hparams_json):
        _put_text(out, text)
    _put_varint(out, len(fields.peers))
    seen: list[bytes] = []
    for peer in fields.peers:
        out += _encode_peer(peer, seen)
    # Trailing fields are written only when set (0 stands for "not set" before a later one):
    # invites that use neither keep their bytes.
    if fields.last_step or fields.local_steps or fields.join_secret:
        _put_varint(out, fields.last_step or 0)
    if fields.local_steps or fields.join_secret:
        _put_varint(out, fields.local_steps or 0)
    if fields.join_secret:
        _put_varint(out, len(fields.join_secret))
        out += fields.join_secret
    return bytes(out)


def decode(data: bytes) -> Fields:
    reader = _Reader(data)
    key = reader.take(KEY_SIZE)
    run_id = reader.take(RUN_ID_SIZE)
    expires = int.from_bytes(reader.take(4), "big")
    target_batch_size = reader.varint()
    run_name, recipe, recipe_version, hparams_json = (reader.text() for _ in range(4))
    count = reader.varint()
    if count > len(data):
        raise FormatError(f"it claims {count} peers")
    seen: list[bytes] = []
    peers = tuple(_decode_peer(reader, seen) for _ in range(count))
    last_step = (reader.varint() or None) if reader.pos < len(data) else None
    local_steps = (reader.varint() or None) if reader.pos < len(data) else None
    join_secret = reader.take(reader.varint()) or None if reader.pos < len(data) else None
    return Fields(
        key, run_id, expires, target_batch_size, run_name, recipe, recipe_version, hparams_json, peers,
        last_step, local_steps, join_secret,
    )  # fmt: skip


def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet), the text form of libp2p peer ids."""
    value = int.from_bytes(data, "big")
    chars = []
    while value:
        value, digit = divmod(value, 58)
        chars.append(_BASE58[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(chars))


def b58decode(text: str) -> bytes:
    value = 0
    for ch in text:
        digit = _BASE58.find(ch)
        if digit < 0:
            raise ValueError(f"{ch!r} is not a base58 character")
        value = value * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + value.to_bytes((value.bit_length() + 7) // 8, "big")


def _encode_peer(peer: str, seen: list[bytes]) -> bytes:
    """The compact form of ``peer`` when it decodes back to the same text, else its text form."""
    attempt = list(seen)
    try:
        compact = _encode_components(peer, attempt)
        if _decode_peer(_Reader(compact), list(seen)) == peer:
            seen[:] = attempt
            return compact
    except (ValueError, OverflowError):
        pass
    out = bytearray([_TEXT])
    _put_text(out, peer)
    return bytes(out)


def _encode_components(peer: str, seen: list[bytes]) -> bytes:
    parts = peer.split("/")
    if parts[0] != "" or len(parts) % 2 == 0 or not 1 <= len(parts) // 2 < 128:
        raise ValueError("not /protocol/value pairs")
    out = bytearray([len(parts) // 2])
    for name, value in zip(parts[1::2], parts[2::2], strict=True):
        if name == "ip4":
            out += bytes([_IP4]) + ipaddress.IPv4Address(value).packed
        elif name == "ip6":
            out += bytes([_IP6]) + ipaddress.IPv6Address(value).packed
        elif name == "tcp":
            out += bytes([_TCP]) + int(value).to_bytes(2, "big")
        elif name in _NAMES:
            out.append(_NAMES[name])
            _put_text(out, value)
        elif name == "p2p":
            peer_id = b58decode(value)
            if peer_id in seen:
                out.append(_P2P_AGAIN)
                _put_varint(out, seen.index(peer_id))
            else:
                seen.append(peer_id)
                out.append(_P2P)
                _put_varint(out, len(peer_id))
                out += peer_id
        else:
            raise ValueError(f"no compact form for /{name}")
    return bytes(out)


def _decode_peer(reader: _Reader, seen: list[bytes]) -> str:
    count = reader.take(1)[0]
    if count == _TEXT:
        return reader.text()
    parts = [""]
    for _ in range(count):
        tag = reader.take(1)[0]
        if tag == _IP4:
            parts += ["ip4", str(ipaddress.IPv4Address(reader.take(4)))]
        elif tag == _IP6:
            parts += ["ip6", str(ipaddress.IPv6Address(reader.take(16)))]
        elif tag == _TCP:
            parts += ["tcp", str(int.from_bytes(reader.take(2), "big"))]
        elif tag in _TAG_NAMES:
            parts += [_TAG_NAMES[tag], reader.text()]
        elif tag == _P2P:
            peer_id = reader.take(reader.varint())
            seen.append(peer_id)
            parts += ["p2p", b58encode(peer_id)]
        elif tag == _P2P_AGAIN:
            index = reader.varint()
            if index >= len(seen):
                raise FormatError(f"a peer refers to peer id {index}, which is not there")
            parts += ["p2p", b58encode(seen[index])]
        else:
            raise FormatError(f"unknown address part {tag}")
    return "/".join(parts)


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("a varint cannot be negative")
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _put_text(out: bytearray, text: str) -> None:
    data = text.encode("utf-8")
    _put_varint(out, len(data))
    out += data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise FormatError("it ends early")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def varint(self) -> int:
        value = 0
        for shift in range(0, 63, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise FormatError("a number is too long")

    def text(self) -> str:
        try:
            return self.take(self.varint()).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("a text is not UTF-8") from None
