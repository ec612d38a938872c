"""Invites: round trip, every refusal with its fix-it message, tampering, truncation, tolerance, fuzzing."""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hiveling.core.invites import wire as invitewire
from hiveling.core.invites.invite import (
    Invite,
    InviteError,
    OrganizerKey,
    looks_like_invite,
    make_invite,
    parse_invite,
    run_id_for,
)
from hiveling.core.invites.keys import OrganizerKeyError
from hiveling.core.recipes import find_recipe

PEER = "QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"
OTHER_PEER = "QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
PUBLIC = f"/ip4/203.0.113.5/tcp/31337/p2p/{PEER}"
LAN = f"/ip4/192.168.1.20/tcp/31337/p2p/{PEER}"
QUIC = f"/ip4/203.0.113.5/udp/31337/quic/p2p/{PEER}"
EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
BEFORE = EXPIRES - timedelta(days=1)
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def fixed_key(seed: int) -> OrganizerKey:
    """Ed25519 signatures are deterministic: a fixed key makes every token of these tests fixed."""
    return OrganizerKey(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


KEY = fixed_key(1)
OTHER_KEY = fixed_key(2)


def make(key: OrganizerKey = KEY, **overrides: Any) -> Invite:
    arguments: dict[str, Any] = {
        "run_name": "tiny-shakespeare",
        "recipe": "glyphs",
        "recipe_version": "2.0",
        "hparams": {},
        "target_batch_size": 4096,
        "peers": [PUBLIC, LAN],
        "expires": EXPIRES,
    }
    arguments.update(overrides)
    return make_invite(key, **arguments)


def parse(text: str, **kwargs: Any) -> Invite:
    kwargs.setdefault("now", BEFORE)
    return parse_invite(text, **kwargs)


def refusal(text: str, **kwargs: Any) -> InviteError:
    with pytest.raises(InviteError) as caught:
        parse(text, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert message
    return caught.value


# The layout the module documents, written out independently: length u16 | check u8 | body | CRC-16.
def frame(body: bytes) -> str:
    length = len(body).to_bytes(2, "big")
    framed = length + bytes([binascii.crc_hqx(length, 0x1D0F) & 0xFF]) + body
    framed += binascii.crc_hqx(framed, 0xFFFF).to_bytes(2, "big")
    return "HIVE1-" + base64.b32encode(framed).decode().rstrip("=")


def unframe(token: str) -> bytes:
    chars = token.removeprefix("HIVE1-")
    return base64.b32decode(chars + "=" * (-len(chars) % 8))[3:-2]


def signed(key: OrganizerKey, payload: bytes) -> str:
    return frame(payload + key.sign(b"hiveling invite\0" + (1).to_bytes(2, "big") + payload))


def fields_of(invite: Invite, **changes: Any) -> invitewire.Fields:
    values: dict[str, Any] = {
        "organizer_key": invite.organizer_key,
        "run_id": base64.b32decode(invite.run_id.upper()),
        "expires": int(invite.expires.timestamp()),
        "target_batch_size": invite.target_batch_size,
        "run_name": invite.run_name,
        "recipe": invite.recipe,
        "recipe_version": invite.recipe_version,
        "hparams_json": json.dumps(dict(invite.hparams)),
        "peers": invite.peers,
        "last_step": invite.last_step,
        "local_steps": invite.local_steps,
        "join_secret": invite.join_secret,
    }
    values.update(changes)
    return invitewire.Fields(**values)


def test_round_trip_keeps_every_field() -> None:
    hparams = {"lr": 0.001, "layers": 4, "name": "émoji ✓", "sizes": [1, 2], "nested": {"on": True}}
    peers = [
        PUBLIC,
        LAN,
        f"/ip6/2001:db8::1/tcp/31337/p2p/{OTHER_PEER}",
        f"/dns4/peers.example.org/tcp/443/p2p/{OTHER_PEER}",
        f"/ip4/203.0.113.9/udp/4001/p2p/{OTHER_PEER}",  # no compact form: travels as text
    ]
    invite = make(hparams=hparams, peers=peers)
    parsed = parse(invite.token, check_recipe=False)
    assert parsed == invite
    assert hash(parsed) == hash(invite)
    assert parsed.token == invite.token
    assert parsed.token.startswith("HIVE1-")
    assert parsed.version == 1
    assert parsed.run_name == "tiny-shakespeare"
    assert parsed.run_id == run_id_for(KEY.public_bytes, "tiny-shakespeare")
    assert parsed.organizer_key == KEY.public_bytes
    assert parsed.fingerprint == KEY.fingerprint
    assert (parsed.recipe, parsed.recipe_version, parsed.target_batch_size) == ("glyphs", "2.0", 4096)
    assert dict(parsed.hparams) == hparams
    assert parsed.peers == tuple(peers)
    assert parsed.expires == EXPIRES
    assert parsed.expires.tzinfo is not None
    assert parsed.link == "hiveling://join/" + invite.token
    with pytest.raises(TypeError):
        parsed.hparams["lr"] = 1  # type: ignore[index]


def test_run_id_depends_on_key_and_name() -> None:
    run_id = run_id_for(KEY.public_bytes, "a")
    assert len(run_id) == 16
    assert run_id == run_id.lower()
    assert run_id == run_id_for(KEY.public_bytes, "a")
    assert run_id != run_id_for(KEY.public_bytes, "b")
    assert run_id != run_id_for(OTHER_KEY.public_bytes, "a")


def test_fingerprint_is_short_and_tells_keys_apart() -> None:
    fingerprint = make().fingerprint
    assert len(fingerprint) == 14
    assert fingerprint.count("-") == 2
    assert fingerprint == fingerprint.upper()
    assert fingerprint != make(OTHER_KEY).fingerprint


def test_expiry_from_timedelta_is_whole_seconds_in_utc() -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    invite = make(expires=timedelta(days=7))
    assert invite.expires.microsecond == 0
    assert invite.expires.utcoffset() == timedelta(0)
    assert start + timedelta(days=7) <= invite.expires <= start + timedelta(days=7, seconds=2)
    assert parse_invite(invite.token).run_id == invite.run_id  # real clock


def spaced(token: str, every: int, gap: str) -> str:
    return gap.join(token[i : i + every] for i in range(0, len(token), every))


@pytest.mark.parametrize(
    "variant",
    [
        lambda t: t.lower(),
        lambda t: f"  \n\t{t}  \r\n",
        lambda t: spaced(t, 1, " "),
        lambda t: spaced(t, 60, "\n"),
        lambda t: spaced(t, 7, "\r\n  "),
        lambda t: spaced(t, 9, "\u200b"),  # zero-width spaces some chat apps insert
        lambda t: spaced(t, 10, "\u00a0"),
        lambda t: "hiveling://join/" + t,
        lambda t: "HIVELING://JOIN/" + t.lower(),
        lambda t: " hiveling://join/\n" + spaced(t, 50, "\n") + "\n",
        lambda t: t + "===",
    ],
)
def test_tolerates_blanks_line_breaks_case_and_link_form(variant: Any) -> None:
    invite = make()
    assert parse(variant(invite.token)) == invite


def test_looks_like_invite() -> None:
    invite = make()
    assert looks_like_invite(invite.token)
    assert looks_like_invite(invite.link)
    assert looks_like_invite(" hive1-abc")
    assert looks_like_invite("HIVE2-ABC")
    assert not looks_like_invite("https://example.org")
    assert not looks_like_invite("HIVE")


@pytest.mark.parametrize("text", ["", "  \n ", "hello", "https://example.org/join", "AEBAGBAF", "HIVEX-ABC"])
def test_not_an_invite(text: str) -> None:
    error = refusal(text)
    assert error.reason == "not_invite"
    assert "HIVE1-" in str(error)


def test_not_text_is_not_an_invite() -> None:
    with pytest.raises(InviteError) as caught:
        parse_invite(b"HIVE1-AAAA")  # type: ignore[arg-type]
    assert caught.value.reason == "not_invite"


def test_every_cut_of_a_valid_invite_is_truncated_not_corrupted() -> None:
    token = make().token
    for text in (token, "hiveling://join/" + token):
        for cut in range(4, len(text)):
            error = refusal(text[:cut])
            assert error.reason == "truncated", (cut, str(error))
            assert "copy the whole invite" in str(error)
    assert "5 of" in str(refusal(token[:11]))  # how much is missing, when known


def test_every_changed_character_is_corrupted() -> None:
    token = make().token
    for position in range(len("HIVE1-"), len(token)):
        replacement = BASE32[(BASE32.index(token[position]) + 7) % 32]
        error = refusal(token[:position] + replacement + token[position + 1 :])
        assert error.reason == "corrupted", (position, str(error))
        assert "copy it again" in str(error)


@pytest.mark.parametrize(("character", "shown"), [("0", "'0'"), ("!", "'!'"), ("8", "'8'")])
def test_a_character_no_invite_has_is_named(character: str, shown: str) -> None:
    token = make().token
    error = refusal(token[:40] + character + token[41:])
    assert error.reason == "corrupted"
    assert shown in str(error)


def test_extra_characters_after_the_invite_are_corrupted() -> None:
    token = make().token
    for extra in ("A", "AB", "ABCDEFGHIJ"):
        error = refusal(token + extra)
        assert error.reason == "corrupted"
        assert "too many" in str(error)


def test_newer_format_asks_for_an_upgrade() -> None:
    token = make().token
    error = refusal(token.replace("HIVE1-", "HIVE2-"))
    assert error.reason == "newer_format"
    assert "pip install -U hiveling" in str(error)
    assert refusal("hiveling://join/hive17-anything").reason == "newer_format"
    assert refusal(token.replace("HIVE1-", "HIVE0-")).reason == "corrupted"


def test_a_changed_payload_with_a_fixed_checksum_fails_the_signature() -> None:
    invite = make()
    body = bytearray(unframe(invite.token))
    name_at = body.index(b"tiny-shakespeare")
    for offset in (name_at, name_at + 5, 40, 45):  # run name, run id, expiry
        tampered = bytearray(body)
        tampered[offset] ^= 0x01
        error = refusal(frame(bytes(tampered)))
        assert error.reason == "bad_signature", offset
        assert "ask the organizer" in str(error)


def test_another_key_in_place_of_the_organizers_fails_the_signature() -> None:
    body = unframe(make().token)
    error = refusal(frame(OTHER_KEY.public_bytes + body[32:]))
    assert error.reason == "bad_signature"


def test_resigning_with_another_key_cannot_keep_the_run_id() -> None:
    original = make()
    forged = invitewire.encode(fields_of(original, organizer_key=OTHER_KEY.public_bytes))
    error = refusal(signed(OTHER_KEY, forged))
    assert error.reason == "bad_signature"
    assert original.run_id in str(error)
    assert "organizer directly" in str(error)
    # Signed properly by the other key, the same name is simply another run.
    own = make(OTHER_KEY)
    assert parse(own.token).run_id != original.run_id
    assert parse(own.token).fingerprint != original.fingerprint


def test_a_signed_payload_this_client_cannot_read_is_corrupted() -> None:
    error = refusal(signed(KEY, KEY.public_bytes + b"\x00" * 12))
    assert error.reason == "corrupted"
    assert "pip install -U hiveling" in str(error)
    for hparams_json in (
        "[1, 2]",
        "{",
        '{"a":' * 5_000 + "1" + "}" * 5_000,  # deeper than Python's recursion limit
        '{"n": 1' + "0" * 5000 + "}",
    ):
        payload = invitewire.encode(fields_of(make(), hparams_json=hparams_json))
        assert refusal(signed(KEY, payload)).reason == "corrupted"


def test_fields_a_later_client_appends_are_ignored() -> None:
    for invite, unset in (
        (make(), b"\x00\x00\x00"),
        (make(last_step=7), b"\x00\x00"),
        (make(local_steps=50), b"\x00"),
        (make(join_secret=b"s" * 16), b""),
    ):
        # After the peers come the last step, the local steps and the join secret's length (0: none),
        # then whatever later clients add.
        longer = invitewire.encode(fields_of(invite)) + unset + b"\x07later"
        parsed = parse(signed(KEY, longer))
        assert parsed.run_id == invite.run_id
        assert parsed.peers == invite.peers
        assert parsed.last_step == invite.last_step
        assert parsed.local_steps == invite.local_steps
        assert parsed.join_secret == invite.join_secret


def test_a_low_communication_run_carries_its_local_steps_to_the_worker() -> None:
    local = make(local_steps=50, last_step=None)
    parsed = parse(local.token)
    assert parsed == local
    assert parsed.local_steps == 50
    assert parsed.last_step is None
    assert parsed.spec.local_steps == 50
    assert "low-communication" in parsed.spec.mode_words
    assert make().spec.local_steps is None
    assert parse(make(local_steps=50, last_step=9).token).last_step == 9
    # The synchronous mode's invites keep their bytes.
    assert invitewire.encode(fields_of(make())) == invitewire.encode(fields_of(local, local_steps=None))
    for bad in (0, -3, True, 1.5):
        with pytest.raises(InviteError, match="local steps"):
            make(local_steps=bad)


def test_a_run_with_an_end_carries_its_last_step_and_one_without_keeps_its_bytes() -> None:
    open_ended = make()
    bounded = make(last_step=5_000)
    assert open_ended.last_step is None
    assert parse(bounded.token).last_step == 5_000
    assert parse(bounded.token) == bounded
    # The last step costs two bytes, and only to runs that have one: the older layout is unchanged.
    payload = invitewire.encode(fields_of(open_ended))
    assert payload == invitewire.encode(fields_of(bounded, last_step=None))
    assert len(invitewire.encode(fields_of(bounded))) == len(payload) + 2


def test_expiry_is_checked_against_now() -> None:
    token = make().token
    assert parse(token, now=EXPIRES - timedelta(seconds=1)).expires == EXPIRES
    for now in (EXPIRES, EXPIRES + timedelta(days=400)):
        error = refusal(token, now=now)
        assert error.reason == "expired"
        assert "2030-01-02 03:04 UTC" in str(error)
        assert "new invite" in str(error)
    local = EXPIRES.astimezone(datetime.now().astimezone().tzinfo)
    assert refusal(token, now=local).reason == "expired"  # any time zone compares in UTC


def test_a_machine_that_already_joined_stays_after_the_expiry() -> None:
    later = EXPIRES + timedelta(days=400)
    assert parse_invite(make().token, now=later, check_expiry=False).expires == EXPIRES


def test_unknown_recipe_says_what_to_install() -> None:
    error = refusal(make(recipe="nosuchrecipe").token)
    assert error.reason == "recipe"
    assert "pip install" in str(error)
    assert "nosuchrecipe" in str(error)
    assert parse(make(recipe="nosuchrecipe").token, check_recipe=False).recipe == "nosuchrecipe"


def test_incompatible_recipe_version_says_what_to_update() -> None:
    major = int(find_recipe("glyphs").version.split(".")[0])
    error = refusal(make(recipe_version=f"{major + 1}.0").token)
    assert error.reason == "recipe"
    assert "update Hiveling" in str(error)
    assert parse(make(recipe_version=f"{major}.99").token).recipe_version == f"{major}.99"


def test_unknown_hyperparameter_is_a_recipe_problem() -> None:
    error = refusal(make(hparams={"no_such_knob": 0.1}).token)
    assert error.reason == "recipe"
    assert "'no_such_knob'" in str(error)


def test_unusable_peers_are_dropped_and_none_usable_is_refused() -> None:
    invite = make()
    mixed = invitewire.encode(fields_of(invite, peers=(QUIC, LAN)))
    assert parse(signed(KEY, mixed)).peers == (LAN,)
    only_quic = invitewire.encode(fields_of(invite, peers=(QUIC, "not-an-address")))
    error = refusal(signed(KEY, only_quic))
    assert error.reason == "no_peers"
    assert "/quic" in str(error)
    assert "/tcp" in str(error)
    none = invitewire.encode(fields_of(invite, peers=()))
    assert refusal(signed(KEY, none)).reason == "no_peers"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"run_name": ""}, "run name"),
        ({"run_name": " padded"}, "blanks"),
        ({"run_name": "x" * 65}, "64"),
        ({"recipe": "a\nb"}, "control"),
        ({"target_batch_size": 0}, "from 1 to"),
        ({"target_batch_size": 2.5}, "whole number"),
        ({"hparams": {"lr": float("nan")}}, "JSON"),
        ({"hparams": {"f": object()}}, "JSON"),
        ({"hparams": {1: 2}}, "names must be texts"),
        ({"peers": []}, "at least one peer"),
        ({"peers": [QUIC]}, "/tcp"),
        ({"peers": ["/ip4/1.2.3.4/tcp/1"]}, "/p2p"),
        ({"peers": [f"/ip4/10.0.0.{i}/tcp/1/p2p/{PEER}" for i in range(17)]}, "at most 16"),
        ({"expires": timedelta(seconds=-1)}, "future"),
        ({"expires": datetime(2020, 1, 1, tzinfo=UTC)}, "future"),
        ({"expires": datetime(2200, 1, 1, tzinfo=UTC)}, "2106"),
        ({"last_step": 0}, "last step"),
        ({"last_step": True}, "last step"),
        ({"last_step": 2.5}, "last step"),
    ],
)
def test_make_invite_refuses_what_an_invite_cannot_carry(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(InviteError) as caught:
        make(**overrides)
    assert caught.value.reason == "invalid"
    assert words in str(caught.value)


def test_duplicate_peers_are_carried_once() -> None:
    assert make(peers=[PUBLIC, PUBLIC, LAN]).peers == (PUBLIC, LAN)


# Fuzzing: whatever the text, parse_invite answers with an Invite or an InviteError.
REFUSALS = {"not_invite", "truncated", "corrupted", "bad_signature", "expired", "newer_format", "no_peers"}


def parse_or_refuse(text: str) -> None:
    error: InviteError | None = None
    try:
        parse_invite(text, now=BEFORE, check_recipe=False)
    except InviteError as raised:
        error = raised
    if error is not None:
        assert error.reason in REFUSALS
        assert "\n" not in str(error)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = make(hparams={"lr": 0.001}).token


@FUZZ
@given(st.text())
def test_fuzz_any_text(text: str) -> None:
    parse_or_refuse(text)


@FUZZ
@given(st.text(alphabet=BASE32 + "hive1-:/ \n=0"))
def test_fuzz_invite_like_text(text: str) -> None:
    parse_or_refuse("HIVE1-" + text)
    parse_or_refuse(text)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(TOKEN)), st.sampled_from(["insert", "delete", "replace"]), st.characters()
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_mutated_tokens(edits: list[tuple[int, str, str]]) -> None:
    text = TOKEN
    for position, kind, character in edits:
        if kind == "insert":
            text = text[:position] + character + text[position:]
        elif kind == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + character + text[position + 1 :]
    parse_or_refuse(text)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_signed_payloads(rest: bytes) -> None:
    """Past checksum and signature: the payload reader too must only ever refuse with InviteError."""
    parse_or_refuse(signed(KEY, KEY.public_bytes + rest))


@FUZZ
@given(st.binary(min_size=1, max_size=200), st.integers(0, 10**6))
def test_fuzz_signed_payloads_with_valid_start(tail: bytes, cut: int) -> None:
    valid = invitewire.encode(fields_of(make()))
    cut %= len(valid)
    parse_or_refuse(signed(KEY, valid[:cut] + tail))


def test_organizer_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "organizer.pem"
    key = OrganizerKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert OrganizerKey.load_or_create(path).public_bytes == key.public_bytes
    assert OrganizerKey.load(path).fingerprint == key.fingerprint
    assert sorted(p.name for p in path.parent.iterdir()) == ["organizer.pem"]  # no temporary left
    assert len(key.public_bytes) == 32


def test_organizer_key_problems_are_one_clear_line(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pem"
    OrganizerKey.generate().save(whole)
    with pytest.raises(OrganizerKeyError, match="already exists"):
        OrganizerKey.generate().save(whole)
    cases = {
        "missing.pem": None,
        "garbage.pem": b"not a key at all",
        "truncated.pem": whole.read_bytes()[:60],
        "ec.pem": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    words = {"missing.pem": "does not exist", "garbage.pem": "damaged", "truncated.pem": "damaged"}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(OrganizerKeyError) as caught:
            OrganizerKey.load(path)
        assert "\n" not in str(caught.value)
        assert str(path) in str(caught.value)
        assert words.get(name, "not an Ed25519 key") in str(caught.value)
    (tmp_path / "dir.pem").mkdir()
    with pytest.raises(OrganizerKeyError, match="cannot read"):
        OrganizerKey.load(tmp_path / "dir.pem")


def test_organizer_key_where_no_folder_can_be(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OrganizerKeyError, match="writable folder"):
        OrganizerKey.load_or_create(tmp_path / "a-file" / "organizer.pem")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_organizer_key_in_an_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(OrganizerKeyError, match="writable folder"):
            OrganizerKey.load_or_create(folder / "organizer.pem")
    finally:
        folder.chmod(0o700)


PROBE = """
import json, sys
import hiveling.core.invites.invite, hiveling.core.invites.qr
heavy = sorted(name for name in ("torch", "hivemind", "lightning") if name in sys.modules)
print(json.dumps(heavy))
"""


def test_importing_invite_and_qr_loads_no_training_stack() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"target_batch_size": 0}, "target batch size must be from 1 to 1,048,576, not 0"),
        ({"target_batch_size": 2**40}, "target batch size must be from 1 to 1,048,576"),
        ({"last_step": 2**40}, "the last step must be a whole number from 1 to"),
        ({"local_steps": 2**31}, "local steps must be a whole number from 1 to 100,000"),
        ({"run_name": "\x1b[31mRED\x1b[0m"}, r"'\x1b[31mRED\x1b[0m' has leading/trailing blanks or control"),
        ({"run_name": "run\nForged second line"}, "control characters"),
        ({"run_name": "x" * 65}, "longer than 64 characters"),
        ({"run_name": " padded"}, "leading/trailing blanks"),
        ({"hparams_json": '{"lr": NaN}'}, "a hyperparameter is nan, not a finite number"),
        ({"hparams_json": '{"lr": Infinity}'}, "a hyperparameter is inf, not a finite number"),
    ],
)
def test_a_signed_invite_is_still_held_to_make_invites_limits(changes: dict[str, Any], words: str) -> None:
    """An organizer's key can sign anything: what the invite carries is checked as input."""
    invite = make()
    if "run_name" in changes:  # the run id a key gives a run name: the invite is otherwise consistent
        changes["run_id"] = base64.b32decode(run_id_for(KEY.public_bytes, changes["run_name"]).upper())
    error = refusal(signed(KEY, invitewire.encode(fields_of(invite, **changes))))
    assert error.reason == "out_of_range"
    assert words in str(error)
    assert "\x1b" not in str(error), "nothing an invite carries reaches a terminal raw"
    assert "ask the organizer for a new invite" in str(error)


@pytest.mark.parametrize(
    ("hparams", "words"),
    [
        ({"dropout": 2}, "dropout must be between 0 and 0.9, not 2"),
        ({"hidden": 0}, "hidden must be between 1 and 8192, not 0"),
        ({"lr": 1e9}, "lr must be between 1e-07 and 1, not 1000000000.0"),
    ],
)
def test_hyperparameters_a_model_cannot_be_built_with_are_refused_when_the_invite_is_read(
    hparams: dict[str, Any], words: str
) -> None:
    invite = make()
    error = refusal(signed(KEY, invitewire.encode(fields_of(invite, hparams_json=json.dumps(hparams)))))
    assert error.reason == "recipe"
    assert words in str(error)
