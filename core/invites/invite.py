"""Invites: one signed, copy-paste-safe string that tells a volunteer's client how to join a run.

An invite looks like ``HIVE1-ABCD...`` (or ``hiveling://join/HIVE1-ABCD...``): the format version,
then upper-case base32 (QR alphanumeric mode, no characters that chat apps or URLs mangle) of::

    length u16 | length check u8 | payload | Ed25519 signature (64) | CRC-16 of everything before

The payload (see :mod:`hiveling.core.invites.wire`) holds the organizer's public key, the run id, the
expiry, the target batch size, run name, recipe, recipe version, hyperparameters (JSON) and the
bootstrap peers. The run id is derived from the key and the run name, so an invite re-signed with
another key cannot pass as the same run. The length tells a cut-off invite from a damaged one, the
checksum a damaged one from a forged one.

:func:`parse_invite` raises nothing but :class:`InviteError`, whose ``reason`` is one of the
``REASONS`` codes and whose message is one line that says what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hiveling.core.invites import wire as invitewire
from hiveling.core.invites.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, OrganizerKey, fingerprint_of
from hiveling.core.run import RunSpec

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "REASONS",
    "Invite",
    "InviteError",
    "OrganizerKey",
    "looks_like_invite",
    "make_invite",
    "parse_invite",
    "run_id_for",
]

FORMAT_VERSION: Final = 1
LINK_PREFIX: Final = "hiveling://join/"
UPGRADE_COMMAND: Final = "pip install -U hiveling"

# InviteError.reason codes.
NOT_INVITE: Final = "not_invite"
TRUNCATED: Final = "truncated"
CORRUPTED: Final = "corrupted"
BAD_SIGNATURE: Final = "bad_signature"
EXPIRED: Final = "expired"
NEWER_FORMAT: Final = "newer_format"
RECIPE: Final = "recipe"  # recipe not installed, incompatible version, or unknown hyperparameter
NO_PEERS: Final = "no_peers"
INVALID: Final = "invalid"  # make_invite was given something an invite cannot carry
OUT_OF_RANGE: Final = "out_of_range"  # signed, but carries a value make_invite would have refused
REASONS: Final = (
    NOT_INVITE,
    TRUNCATED,
    CORRUPTED,
    BAD_SIGNATURE,
    EXPIRED,
    NEWER_FORMAT,
    RECIPE,
    NO_PEERS,
    OUT_OF_RANGE,
)

MAX_PEERS: Final = 16
MAX_NAME_CHARS: Final = 64
# A million samples per step and a million steps are far beyond any volunteer run; larger values are
# mistakes or attacks (a target no swarm reaches freezes it; a huge last step overflows counters).
MAX_TARGET_BATCH_SIZE: Final = 1 << 20
MAX_LAST_STEP: Final = 1 << 30
MAX_LOCAL_STEPS: Final = 100_000
MIN_JOIN_SECRET: Final = 16
MAX_JOIN_SECRET: Final = 32
_BASE32: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_HEADER_SIZE: Final = 3  # length u16 + its check byte
_CRC_SIZE: Final = 2
_MIN_BODY: Final = PUBLIC_KEY_SIZE + invitewire.RUN_ID_SIZE + SIGNATURE_SIZE
_MAX_BODY: Final = 0xFFFF
_SIGNING_CONTEXT: Final = b"hiveling invite\0"
_RUN_ID_CONTEXT: Final = b"hiveling run\0"
_TOKEN = re.compile(r"HIVE(\d{1,6})-(.*)", re.DOTALL)
_ASK_AGAIN = "ask the organizer to send the invite again"


class InviteError(ValueError):
    """An invite that cannot be used; ``reason`` is one of ``REASONS`` (or ``"invalid"`` from make)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Invite:
    version: int
    run_id: str
    run_name: str
    organizer_key: bytes  # raw Ed25519 public key
    recipe: str
    recipe_version: str
    hparams: Mapping[str, Any] = field(hash=False)
    target_batch_size: int
    peers: tuple[str, ...]  # after parse_invite: only those this client can use, in the invite's order
    expires: datetime  # aware, UTC, whole seconds
    token: str  # the canonical text: "HIVE1-" and upper-case base32
    last_step: int | None = None  # the collaborative step at which the run ends; None: no planned end
    local_steps: int | None = None  # the low-communication mode's local steps; None: synchronous
    #: What admits a peer to a closed run: volunteers present it to the host (None: an open run).
    join_secret: bytes | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """The organizer's key in a form people compare, e.g. ``"K7Q2-M5XD-4HTR"``."""
        return fingerprint_of(self.organizer_key)

    @property
    def link(self) -> str:
        return LINK_PREFIX + self.token

    @property
    def spec(self) -> RunSpec:
        """The run this invite describes, as a worker trains it."""
        return RunSpec(
            run_id=self.run_id,
            run_name=self.run_name,
            recipe=self.recipe,
            recipe_version=self.recipe_version,
            target_batch_size=self.target_batch_size,
            hparams=dict(self.hparams),
            peers=tuple(self.peers),
            last_step=self.last_step,
            local_steps=self.local_steps,
            organizer_key=self.organizer_key.hex(),
            join_secret=self.join_secret.hex() if self.join_secret else None,
        )


def run_id_for(public_key: bytes, run_name: str) -> str:
    """The run id an organizer key gives a run name: 16 lower-case base32 characters."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an organizer public key has {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}")
    digest = hashlib.sha256(_RUN_ID_CONTEXT + public_key + run_name.encode("utf-8")).digest()
    return base64.b32encode(digest[: invitewire.RUN_ID_SIZE]).decode("ascii").lower()


def looks_like_invite(text: str) -> bool:
    """Whether ``text`` starts like an invite or an invite link (says nothing about its validity)."""
    cleaned = _clean(text)
    return bool(_TOKEN.match(cleaned.removeprefix(LINK_PREFIX.upper())))


def invite_for(
    key: OrganizerKey, spec: RunSpec, peers: Sequence[str], expires: datetime | timedelta
) -> Invite:
    """The signed invite to ``spec``, reached through ``peers`` (``spec.peers`` is not used)."""
    return make_invite(
        key,
        run_name=spec.run_name,
        recipe=spec.recipe,
        recipe_version=spec.recipe_version,
        hparams=spec.hparams,
        target_batch_size=spec.target_batch_size,
        peers=peers,
        expires=expires,
        last_step=spec.last_step,
        local_steps=spec.local_steps,
        join_secret=bytes.fromhex(spec.join_secret) if spec.join_secret else None,
    )


def make_invite(
    key: OrganizerKey,
    *,
    run_name: str,
    recipe: str,
    recipe_version: str,
    hparams: Mapping[str, Any],
    target_batch_size: int,
    peers: Sequence[str],
    expires: datetime | timedelta,
    last_step: int | None = None,
    local_steps: int | None = None,
    join_secret: bytes | None = None,
) -> Invite:
    """A signed invite; InviteError (reason ``"invalid"``) names the argument that cannot be carried.

    ``expires`` is a moment (a naive one is local time) or a duration from now; it is kept to the
    second. ``hparams`` are the recipe's hyperparameters that differ from its defaults (JSON values).
    ``last_step``, when given, is the collaborative step at which volunteers stop: the run is finished.
    ``local_steps``, when given, makes the run use the low-communication mode. ``join_secret``, when
    given, closes the run: only peers that present it to the host are admitted.
    """
    from hiveling.core.swarm.peers import PeerAddressError, check_multiaddr

    now = datetime.now(UTC)
    _check_carried(run_name, recipe, recipe_version, target_batch_size, last_step, local_steps, join_secret)
    if not all(isinstance(name, str) for name in hparams):
        raise InviteError(INVALID, "hyperparameter names must be texts")
    try:
        hparams_json = json.dumps(
            dict(hparams), separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as error:
        raise InviteError(
            INVALID, f"hyperparameters must be JSON values (numbers, strings, booleans, lists): {error}"
        ) from None
    unique_peers = list(dict.fromkeys(peers if not isinstance(peers, str) else [peers]))
    if not unique_peers:
        raise InviteError(INVALID, "an invite needs at least one peer address; start the run's host first")
    if len(unique_peers) > MAX_PEERS:
        raise InviteError(
            INVALID, f"an invite carries at most {MAX_PEERS} peers; pass the best-reachable few"
        )
    for peer in unique_peers:
        try:
            check_multiaddr(peer, "peer", need_peer_id=True)
        except PeerAddressError as error:
            raise InviteError(INVALID, str(error)) from None
    if isinstance(expires, timedelta):
        expires = now + expires
    expires = expires.astimezone(UTC).replace(microsecond=0)
    if expires <= now:
        raise InviteError(INVALID, f"the expiry {_format_time(expires)} is not in the future")
    if expires.timestamp() > invitewire.MAX_TIME:
        raise InviteError(INVALID, "the expiry is too far in the future; choose a date before 2106")

    fields = invitewire.Fields(
        organizer_key=key.public_bytes,
        run_id=base64.b32decode(run_id_for(key.public_bytes, run_name).upper()),
        expires=int(expires.timestamp()),
        target_batch_size=target_batch_size,
        run_name=run_name,
        recipe=recipe,
        recipe_version=recipe_version,
        hparams_json=hparams_json,
        peers=tuple(unique_peers),
        last_step=last_step,
        local_steps=local_steps,
        join_secret=join_secret,
    )
    payload = invitewire.encode(fields)
    signature = key.sign(_signed_message(FORMAT_VERSION, payload))
    if len(payload) + SIGNATURE_SIZE > _MAX_BODY:
        raise InviteError(INVALID, "the invite is too large; pass fewer peers or hyperparameters")
    body = _frame(payload + signature)
    token = f"HIVE{FORMAT_VERSION}-{_b32encode(body)}"
    return _invite(fields, json.loads(hparams_json), tuple(unique_peers), token)


def parse_invite(
    text: str, *, now: datetime | None = None, check_recipe: bool = True, check_expiry: bool = True
) -> Invite:
    """The invite in ``text``, verified; raises only InviteError.

    Tolerates white space and line breaks anywhere, lower case, the ``hiveling://join/`` link form and
    surrounding blanks. ``peers`` of the result are only the addresses this client can use.
    ``now`` (default: the clock) decides expiry; a naive ``now`` is local time.
    ``check_recipe=False`` skips the installed-recipe check (for tools that only display an invite).
    ``check_expiry=False`` is for a machine that already joined: the expiry limits joining, not staying.
    """
    body, version = _unframe(text)
    signed, signature = body[:-SIGNATURE_SIZE], body[-SIGNATURE_SIZE:]
    try:
        Ed25519PublicKey.from_public_bytes(signed[:PUBLIC_KEY_SIZE]).verify(
            signature, _signed_message(version, signed)
        )
    except (InvalidSignature, ValueError):
        raise InviteError(
            BAD_SIGNATURE,
            "this invite's signature does not match: it was changed after the organizer signed it; "
            + _ASK_AGAIN,
        ) from None
    try:
        fields = invitewire.decode(signed)
        hparams = json.loads(fields.hparams_json)
    except (invitewire.FormatError, ValueError, RecursionError) as error:
        raise InviteError(
            CORRUPTED,
            f"this invite is signed but cannot be read ({error}); ask the organizer to make it again "
            f"with the current Hiveling, or run {UPGRADE_COMMAND}",
        ) from None
    if not isinstance(hparams, dict):
        raise InviteError(CORRUPTED, f"this invite's hyperparameters are not a JSON object; {_ASK_AGAIN}")
    try:
        # The organizer signed these values, but they are still input: held to make_invite's limits.
        _check_carried(
            fields.run_name,
            fields.recipe,
            fields.recipe_version,
            fields.target_batch_size,
            fields.last_step,
            fields.local_steps,
            fields.join_secret,
        )
        _check_finite(hparams)
    except InviteError as error:
        raise InviteError(
            OUT_OF_RANGE,
            f"this invite cannot be used: {error}; ask the organizer for a new invite made with the current "
            "Hiveling",
        ) from None
    claimed = base64.b32encode(fields.run_id).decode("ascii").lower()
    actual = run_id_for(fields.organizer_key, fields.run_name)
    if claimed != actual:
        raise InviteError(
            BAD_SIGNATURE,
            f"this invite claims run {claimed} but was signed by a key that does not own it (a forgery or "
            "an edited invite); get the invite from the organizer directly",
        )
    token = f"HIVE{version}-{_b32encode(_frame(body))}"
    invite = _invite(fields, hparams, fields.peers, token)

    now = (now or datetime.now(UTC)).astimezone(UTC)
    if check_expiry and now >= invite.expires:
        raise InviteError(
            EXPIRED,
            f"this invite expired on {_format_time(invite.expires)}; ask the organizer for a new invite",
        )
    usable = _usable_peers(invite.peers)
    if check_recipe:
        _check_recipe(invite)
    return invite if usable == invite.peers else replace(invite, peers=usable)


def _invite(fields: invitewire.Fields, hparams: dict[str, Any], peers: tuple[str, ...], token: str) -> Invite:
    return Invite(
        version=FORMAT_VERSION,
        run_id=base64.b32encode(fields.run_id).decode("ascii").lower(),
        run_name=fields.run_name,
        organizer_key=fields.organizer_key,
        recipe=fields.recipe,
        recipe_version=fields.recipe_version,
        hparams=MappingProxyType(hparams),
        target_batch_size=fields.target_batch_size,
        peers=peers,
        expires=datetime.fromtimestamp(fields.expires, UTC),
        token=token,
        last_step=fields.last_step,
        local_steps=fields.local_steps,
        join_secret=fields.join_secret,
    )


def _usable_peers(peers: Sequence[str]) -> tuple[str, ...]:
    from hiveling.core.swarm.peers import PeerAddressError, check_multiaddr

    usable, problems = [], []
    for peer in peers:
        try:
            check_multiaddr(peer, "invite peer", need_peer_id=True)
        except PeerAddressError as error:
            problems.append(str(error))
            logger.warning("Skipping a peer of the invite: %s", error)
        else:
            usable.append(peer)
    if not usable:
        first = problems[0] if problems else "it lists none"
        raise InviteError(
            NO_PEERS,
            f"this invite has no peer address this client can use ({first}); ask the organizer for an "
            "invite with a /tcp address of a running peer",
        )
    return tuple(usable)


def _check_recipe(invite: Invite) -> None:
    from hiveling.core.recipes import RecipeError, find_recipe

    try:
        find_recipe(invite.recipe, invite.recipe_version).hyperparameters(invite.hparams)
    except RecipeError as error:
        raise InviteError(RECIPE, str(error)) from None


def _check_carried(
    run_name: str,
    recipe: str,
    recipe_version: str,
    target_batch_size: int,
    last_step: int | None,
    local_steps: int | None,
    join_secret: bytes | None = None,
) -> None:
    """The limits of what an invite carries, the same when made and when read (InviteError INVALID)."""
    if join_secret is not None and not MIN_JOIN_SECRET <= len(join_secret) <= MAX_JOIN_SECRET:
        raise InviteError(
            INVALID, f"a join secret has {MIN_JOIN_SECRET} to {MAX_JOIN_SECRET} bytes, not {len(join_secret)}"
        )
    for what, value in (("run name", run_name), ("recipe", recipe), ("recipe version", recipe_version)):
        _check_name(what, value)
    if isinstance(target_batch_size, bool) or not isinstance(target_batch_size, int):
        raise InviteError(INVALID, f"target batch size must be a whole number, not {target_batch_size!r}")
    if not 1 <= target_batch_size <= MAX_TARGET_BATCH_SIZE:
        raise InviteError(
            INVALID,
            f"target batch size must be from 1 to {MAX_TARGET_BATCH_SIZE:,}, not {target_batch_size:,}",
        )
    if last_step is not None and (
        isinstance(last_step, bool) or not isinstance(last_step, int) or not 1 <= last_step <= MAX_LAST_STEP
    ):
        raise InviteError(
            INVALID, f"the last step must be a whole number from 1 to {MAX_LAST_STEP:,}, not {last_step!r}"
        )
    if local_steps is not None and (
        isinstance(local_steps, bool)
        or not isinstance(local_steps, int)
        or not 1 <= local_steps <= MAX_LOCAL_STEPS
    ):
        raise InviteError(
            INVALID, f"local steps must be a whole number from 1 to {MAX_LOCAL_STEPS:,}, not {local_steps!r}"
        )


def _check_finite(value: Any) -> None:
    """JSON allows no NaN or infinity, but Python's reader accepts them: hyperparameters must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InviteError(INVALID, f"a hyperparameter is {value}, not a finite number")
    if isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, list):
        for item in value:
            _check_finite(item)


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InviteError(INVALID, f"the {what} must be a non-empty text, not {value!r}")
    if value != value.strip() or any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InviteError(INVALID, f"the {what} {value!r} has leading/trailing blanks or control characters")
    if len(value) > MAX_NAME_CHARS:
        raise InviteError(INVALID, f"the {what} is longer than {MAX_NAME_CHARS} characters; shorten it")


def _signed_message(version: int, payload: bytes) -> bytes:
    return _SIGNING_CONTEXT + version.to_bytes(2, "big") + payload


def _length_check(length: bytes) -> int:
    return binascii.crc_hqx(length, 0x1D0F) & 0xFF


def _frame(body: bytes) -> bytes:
    length = len(body).to_bytes(2, "big")
    framed = length + bytes([_length_check(length)]) + body
    return framed + binascii.crc_hqx(framed, 0xFFFF).to_bytes(_CRC_SIZE, "big")


def _unframe(text: str) -> tuple[bytes, int]:
    """The signed body and format version of ``text``; InviteError for anything else."""
    if not isinstance(text, str):
        raise InviteError(NOT_INVITE, f"expected the invite as text, not {type(text).__name__}")
    full = _clean(text)
    link = LINK_PREFIX.upper()
    cleaned = full.removeprefix(link)
    match = _TOKEN.fullmatch(cleaned)
    if match is None:
        if not full:
            raise InviteError(NOT_INVITE, "there is no invite here; paste the invite (it starts with HIVE1-)")
        first = f"HIVE{FORMAT_VERSION}-"
        if len(full) >= 4 and (first.startswith(full) or (link + first).startswith(full)):
            raise InviteError(TRUNCATED, _truncated_message())
        raise InviteError(
            NOT_INVITE,
            "this is not a Hiveling invite (an invite starts with HIVE1- or hiveling://join/); "
            "copy the whole invite the organizer sent",
        )
    version = int(match.group(1))
    if version > FORMAT_VERSION:
        raise InviteError(
            NEWER_FORMAT,
            f"this invite uses format {version}, newer than this Hiveling understands ({FORMAT_VERSION}); "
            f"upgrade Hiveling: {UPGRADE_COMMAND}",
        )
    if version < 1:
        raise InviteError(
            CORRUPTED, f"this invite names format {version}, which does not exist; {_ASK_AGAIN}"
        )
    chars = match.group(2).rstrip("=")
    for ch in chars:
        if ch not in _BASE32:
            raise InviteError(
                CORRUPTED,
                f"this invite contains {ch!r}, which no invite has (only letters and the digits 2-7); "
                "copy it again exactly",
            )
    header_chars = math.ceil(_HEADER_SIZE * 8 / 5)
    if len(chars) < header_chars:
        raise InviteError(TRUNCATED, _truncated_message())
    header = _b32decode(chars[:header_chars])[:_HEADER_SIZE]
    body_size = int.from_bytes(header[:2], "big")
    if header[2] != _length_check(header[:2]) or body_size < _MIN_BODY:
        raise InviteError(
            CORRUPTED, f"this invite is damaged at its start; copy it again exactly, or {_ASK_AGAIN}"
        )
    total = _HEADER_SIZE + body_size + _CRC_SIZE
    expected_chars = math.ceil(total * 8 / 5)
    if len(chars) < expected_chars:
        raise InviteError(TRUNCATED, _truncated_message(len(chars), expected_chars))
    if len(chars) > expected_chars:
        raise InviteError(
            CORRUPTED,
            f"this invite has {len(chars) - expected_chars} characters too many at its end; "
            "copy exactly the invite, nothing after it",
        )
    framed = _b32decode(chars)
    if binascii.crc_hqx(framed[:-_CRC_SIZE], 0xFFFF) != int.from_bytes(framed[-_CRC_SIZE:], "big"):
        raise InviteError(
            CORRUPTED,
            f"this invite is damaged (its checksum does not match); copy it again exactly, or {_ASK_AGAIN}",
        )
    return framed[_HEADER_SIZE:-_CRC_SIZE], version


def _truncated_message(have: int | None = None, want: int | None = None) -> str:
    count = f" ({have} of {want} characters)" if have is not None else ""
    return f"this invite is cut off{count}; copy the whole invite, up to its last character"


def _clean(text: str) -> str:
    """Upper case, without white space or invisible formatting characters (zero-width spaces...)."""
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) != "Cf").upper()


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _b32decode(chars: str) -> bytes:
    """Bytes of upper-case base32 without padding; trailing bits that make no whole byte are dropped."""
    padded = chars + "A" * (-len(chars) % 8)  # zero bits, cut off again below
    return base64.b32decode(padded)[: len(chars) * 5 // 8]


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
