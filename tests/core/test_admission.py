"""Admission tokens and the invite's join secret: signed, bound to a peer, tolerant of skewed clocks."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from hiveling.core.invites.invite import InviteError, OrganizerKey, make_invite, parse_invite
from hiveling.core.invites.keys import load_or_create_secret
from hiveling.core.swarm.admission import CLOCK_SKEW, LIFETIME, Admission, sign_token, why_not_valid

PEER = "/ip4/127.0.0.1/tcp/31337/p2p/QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"


@pytest.fixture(scope="module")
def organizer() -> OrganizerKey:
    return OrganizerKey.generate()


def admission(key: OrganizerKey, signing: bool = True) -> Admission:
    return Admission(
        run_id="abcdefghijklmnop",
        organizer_key=key.public_bytes,
        join_secret=b"s" * 16,
        signing_key=key.private_bytes() if signing else None,
    )


def test_a_token_names_its_peer_and_key_and_only_the_organizer_can_make_one(organizer: OrganizerKey) -> None:
    host = admission(organizer)
    member = admission(organizer, signing=False)
    token = sign_token(host, "QmPeer", b"rsa-key")
    assert why_not_valid(member, token, "QmPeer") is None
    assert why_not_valid(member, token, "QmOther") == "a token of another peer"
    token.public_key = b"another-key"
    assert why_not_valid(member, token) == "a token the organizer did not sign"
    forged = sign_token(admission(OrganizerKey.generate()), "QmPeer", b"rsa-key")
    assert why_not_valid(member, forged, "QmPeer") == "a token the organizer did not sign"
    other_run = sign_token(
        Admission("another-run-id00", organizer.public_bytes, b"s" * 16, organizer.private_bytes()),
        "QmPeer",
        b"k",
    )
    assert why_not_valid(member, other_run, "QmPeer") == "a token the organizer did not sign"
    with pytest.raises(ValueError, match="only the organizer's host"):
        sign_token(member, "QmPeer", b"rsa-key")


def test_clocks_minutes_apart_lock_nobody_out_but_expired_tokens_are_refused(organizer: OrganizerKey) -> None:
    host, member = admission(organizer), admission(organizer, signing=False)
    issued = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    token = sign_token(host, "QmPeer", b"k", now=issued)
    expiry = issued + LIFETIME
    # A member whose clock runs minutes ahead of the host's still takes a token about to expire.
    assert why_not_valid(member, token, now=expiry + CLOCK_SKEW - timedelta(seconds=1)) is None
    assert why_not_valid(member, token, now=expiry + CLOCK_SKEW + timedelta(seconds=1)) == "an expired token"
    assert why_not_valid(member, token, now=expiry + timedelta(hours=5), grace=timedelta(days=1)) is None


def test_an_invite_carries_its_join_secret_and_refuses_one_out_of_range(organizer: OrganizerKey) -> None:
    secret = os.urandom(16)
    made = make_invite(
        organizer, run_name="Closed", recipe="spirals", recipe_version="1.4", hparams={},
        target_batch_size=64, peers=[PEER], expires=timedelta(days=1), join_secret=secret,
    )  # fmt: skip
    parsed = parse_invite(made.token, check_recipe=False)
    assert parsed.join_secret == secret
    assert parsed.spec.join_secret == secret.hex()
    assert parsed.spec.organizer_key == organizer.public_bytes.hex()
    assert secret.hex() not in repr(parsed)
    open_run = make_invite(
        organizer, run_name="Open", recipe="spirals", recipe_version="1.4", hparams={},
        target_batch_size=64, peers=[PEER], expires=timedelta(days=1),
    )  # fmt: skip
    assert parse_invite(open_run.token, check_recipe=False).join_secret is None
    with pytest.raises(InviteError, match="a join secret has 16 to 32 bytes, not 3"):
        make_invite(
            organizer, run_name="Closed", recipe="spirals", recipe_version="1.4", hparams={},
            target_batch_size=64, peers=[PEER], expires=timedelta(days=1), join_secret=b"abc",
        )  # fmt: skip


def test_the_join_secret_is_kept_private_and_stays_the_same(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "join-run.secret"
    first = load_or_create_secret(path)
    assert len(first) == 16
    assert load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
