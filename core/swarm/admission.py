"""Admission: only holders of a run's invite take part in its DHT, its averaging and its state.

The organizer's host is the authority. What each layer protects:

- **Tokens.** A volunteer asks the host for a token over libp2p (``ISSUE``), presenting the invite's
  join secret. The token names the peer id libp2p authenticated for that call and the RSA key the
  peer signs its DHT requests with, expires after ``LIFETIME`` and is signed with the organizer's
  Ed25519 key, which every member knows from the invite. A member renews by presenting its token
  instead of the secret, so a new invite (a new secret) admits no new peer with the old one but
  keeps every member training.
- **DHT.** hivemind's authorizer protocol: every request and response carries the sender's token and
  is signed with the token's RSA key. A peer without a token can neither read nor write the run's
  records; its requests are refused and the refusals logged (at most once a minute).
- **Averaging and state downloads.** Each averager RPC's caller is the peer id libp2p authenticated;
  before serving a peer it has not seen, an averager asks that peer for its token (``SHOW``) and
  checks that it names that peer id. A peer without one cannot join a group, send parts of an
  average or download the state.

Clocks may differ by minutes between machines: tokens are accepted ``CLOCK_SKEW`` past their expiry
and requests ``CLOCK_SKEW`` away from the local time; members renew after half a lifetime measured
on their own clock. hivemind's ``AccessToken`` message carries both requests and tokens, so no
protocol definitions of our own travel on the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hivemind.dht import DHT, DHTNode
from hivemind.p2p import P2P, P2PContext, PeerID
from hivemind.proto.auth_pb2 import AccessToken
from hivemind.utils.auth import TokenAuthorizerBase
from hivemind.utils.crypto import RSAPrivateKey
from hivemind.utils.multiaddr import Multiaddr

log = logging.getLogger(__name__)

ISSUE = "hiveling.admission.issue"  # served by the host: a token for the caller
SHOW = "hiveling.admission.show"  # served by every member: its own token
LIFETIME = timedelta(minutes=30)
CLOCK_SKEW = timedelta(minutes=10)
# A member whose token expired (its machine slept, the host was away) may still renew with it.
RENEWABLE_FOR = timedelta(days=1)
_TOKEN_DOMAIN = b"hiveling-token-v1\0"


class AdmissionError(RuntimeError):
    """This peer was not admitted; the message says why and what to do."""


class AdmissionRefused(AdmissionError):
    """The host answered, and said no: asking again changes nothing."""


@dataclass(frozen=True)
class Admission:
    """A closed run's credentials: what the invite gives every member, and the host's signing key."""

    run_id: str
    organizer_key: bytes  # raw Ed25519 public key
    join_secret: bytes
    signing_key: bytes | None = None  # raw Ed25519 private key: the host only

    @property
    def is_authority(self) -> bool:
        return self.signing_key is not None


def _token_message(run_id: str, peer_id: str, public_key: bytes, expires: str) -> bytes:
    return b"\0".join((_TOKEN_DOMAIN + run_id.encode(), peer_id.encode(), public_key, expires.encode()))


def sign_token(
    admission: Admission, peer_id: str, public_key: bytes, now: datetime | None = None
) -> AccessToken:
    """A token for ``peer_id`` whose DHT requests are signed with ``public_key`` (the host only)."""
    if admission.signing_key is None:
        raise ValueError("only the organizer's host signs tokens")
    expires = ((now or datetime.now(UTC)) + LIFETIME).replace(microsecond=0).isoformat()
    key = Ed25519PrivateKey.from_private_bytes(admission.signing_key)
    signature = key.sign(_token_message(admission.run_id, peer_id, public_key, expires))
    return AccessToken(username=peer_id, public_key=public_key, expiration_time=expires, signature=signature)


def why_not_valid(
    admission: Admission,
    token: AccessToken,
    peer_id: str | None = None,
    now: datetime | None = None,
    grace: timedelta = CLOCK_SKEW,
) -> str | None:
    """None for a token the organizer signed for ``peer_id`` (any peer: None) that has not expired
    more than ``grace`` ago; otherwise why not, in words."""
    if not token.signature:
        return "no token"
    if peer_id is not None and token.username != peer_id:
        return "a token of another peer"
    try:
        expires = datetime.fromisoformat(token.expiration_time)
        Ed25519PublicKey.from_public_bytes(admission.organizer_key).verify(
            token.signature,
            _token_message(admission.run_id, token.username, token.public_key, token.expiration_time),
        )
    except (ValueError, InvalidSignature):
        return "a token the organizer did not sign"
    if expires.tzinfo is None or expires + grace < (now or datetime.now(UTC)):
        return "an expired token"
    return None


class RunAuthorizer(TokenAuthorizerBase):  # type: ignore[misc]
    """hivemind's DHT authorization with the run's tokens. Lives in the DHT process: the token is put
    in by :func:`settle` (and renewed the same way), never fetched from here."""

    _MAX_CLIENT_SERVICER_TIME_DIFF = CLOCK_SKEW
    _REFUSAL_LOG_PERIOD = 60.0

    def __init__(self, admission: Admission, private_key: RSAPrivateKey) -> None:
        super().__init__(private_key)
        self.admission = admission
        self.peer_id: str | None = None
        self._last_refusal_log = -self._REFUSAL_LOG_PERIOD
        self._refused = 0

    @property
    def token(self) -> AccessToken | None:
        return self._local_access_token

    def install(self, token: AccessToken) -> None:
        self._local_access_token = token

    async def get_token(self) -> AccessToken:
        if self.admission.is_authority and self.peer_id is not None:
            return sign_token(self.admission, self.peer_id, self.local_public_key.to_bytes())
        if self._local_access_token is None:
            raise AdmissionError("this peer has no token yet")
        return self._local_access_token

    def is_token_valid(self, access_token: AccessToken) -> bool:
        return why_not_valid(self.admission, access_token) is None

    def does_token_need_refreshing(self, access_token: AccessToken) -> bool:
        if not self.admission.is_authority:
            return False  # renewed from the training process
        expires = datetime.fromisoformat(access_token.expiration_time)
        return expires - datetime.now(UTC) < LIFETIME / 2

    async def validate_request(self, request: Any) -> bool:
        valid = bool(await super().validate_request(request))
        if not valid:
            self._refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= self._REFUSAL_LOG_PERIOD:
                log.warning(
                    "Refused %d DHT request(s) from peers without a valid token for this run (invite "
                    "missing, revoked or expired)",
                    self._refused,
                )
                self._last_refusal_log, self._refused = now, 0
        return valid


def rsa_public_bytes(key: RSAPrivateKey) -> bytes:
    return bytes(key.get_public_key().to_bytes())


# In the DHT process, through DHT.run_coroutine.


async def settle(token: bytes | None, initial_peers: Sequence[str], _dht: DHT, node: DHTNode) -> None:
    """Puts this peer's token in (the host: none, it signs its own), serves ``SHOW`` (and ``ISSUE`` on
    the host), then joins the DHT through ``initial_peers``, as hivemind's bootstrap would have.
    Tokens cross the process boundary serialized: protobuf messages do not pickle."""
    authorizer = node.protocol.authorizer
    assert isinstance(authorizer, RunAuthorizer)
    authorizer.peer_id = node.peer_id.to_base58()
    if token is not None:
        authorizer.install(AccessToken.FromString(token))
    await authorizer.refresh_token_if_needed()

    async def show(_: AccessToken, __: P2PContext) -> AccessToken:
        await authorizer.refresh_token_if_needed()
        return authorizer.token or AccessToken()

    await node.p2p.add_protobuf_handler(SHOW, show, AccessToken)
    if authorizer.admission.is_authority:
        await node.p2p.add_protobuf_handler(ISSUE, partial(_issue, authorizer.admission), AccessToken)
    peers = {PeerID.from_base58(Multiaddr(address)["p2p"]) for address in initial_peers}
    peers.discard(node.peer_id)
    if peers:
        answers = await asyncio.gather(*(node.protocol.call_ping(peer) for peer in peers))
        if all(answer is None for answer in answers):
            raise AdmissionError("none of the run's peers answered with a valid token")
        await node.find_nearest_nodes([node.node_id])


async def renew(token: bytes, _dht: DHT, node: DHTNode) -> None:
    authorizer = node.protocol.authorizer
    assert isinstance(authorizer, RunAuthorizer)
    authorizer.install(AccessToken.FromString(token))


async def _issue(admission: Admission, request: AccessToken, context: P2PContext) -> AccessToken:
    """The host's answer to a token request: a token, or an empty one whose username says why not."""
    caller = context.remote_id.to_base58()
    try:
        asked = json.loads(request.username or "{}")
        secret = bytes.fromhex(str(asked.get("secret", "")))
        previous = AccessToken.FromString(bytes.fromhex(str(asked.get("renew", ""))))
    except (ValueError, TypeError, AttributeError):
        return _refusal("a malformed token request")
    if secret:
        if secret != admission.join_secret:
            log.warning("Refused peer %s: its invite is not (or no longer) this run's", caller)
            return _refusal("this invite no longer admits new peers: ask the organizer for the current one")
    elif why_not_valid(admission, previous, caller, grace=RENEWABLE_FOR) is not None:
        log.warning("Refused peer %s: nothing to renew", caller)
        return _refusal("nothing to renew: join with the run's invite")
    return sign_token(admission, caller, request.public_key)


def _refusal(reason: str) -> AccessToken:
    return AccessToken(username=reason)


# In the training process.


async def request_token(
    dht: DHT,
    admission: Admission,
    public_key: bytes,
    peers: Sequence[str],
    previous: AccessToken | None = None,
) -> AccessToken:
    """Asks the run's peers, the host first, for a token through the DHT's own libp2p daemon (the
    token names its peer id). Raises :class:`AdmissionError` with the host's reason."""
    asked = (
        {"renew": previous.SerializeToString().hex()} if previous else {"secret": admission.join_secret.hex()}
    )
    request = AccessToken(username=json.dumps(asked), public_key=public_key)
    p2p = await dht.replicate_p2p()
    reasons = []
    for address in peers:
        maddr = Multiaddr(address)
        peer = PeerID.from_base58(maddr["p2p"])
        try:
            await p2p._client.connect(peer, [maddr.decapsulate(f"/p2p/{maddr['p2p']}")])
            answer = await asyncio.wait_for(p2p.call_protobuf_handler(peer, ISSUE, request, AccessToken), 15)
        except Exception as error:  # an unreachable or non-host peer: try the next one
            reasons.append(f"{peer.to_base58()[-8:]}: {error or type(error).__name__}")
            continue
        problem = why_not_valid(admission, answer, p2p.peer_id.to_base58())
        if problem is None:
            return answer
        raise AdmissionRefused(
            f"The organizer's host did not admit this computer: {answer.username or problem}."
        )
    raise AdmissionError(
        "Could not reach the organizer's host to be admitted to the run "
        f"({'; '.join(reasons) or 'no peer address'}): check that the host is running."
    )


def join(
    dht: DHT, admission: Admission, private_key: RSAPrivateKey, peers: Sequence[str]
) -> AccessToken | None:
    """Gets this peer admitted and into the DHT (the DHT must have been started without peers)."""
    token = None
    if not admission.is_authority:
        token = asyncio.run(request_token(dht, admission, rsa_public_bytes(private_key), peers))
    dht.run_coroutine(partial(settle, token and token.SerializeToString(), list(peers)))
    return token


class Renewal:
    """Renews a member's token in the background, half a lifetime after each one came."""

    def __init__(self, dht: DHT, admission: Admission, token: AccessToken, peers: Sequence[str]) -> None:
        self._dht, self._admission, self._token, self._peers = dht, admission, token, list(peers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hiveling-admission", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wait = LIFETIME.total_seconds() / 2
        while not self._stop.wait(wait):
            try:
                self._token = asyncio.run(
                    request_token(
                        self._dht, self._admission, self._token.public_key, self._peers, self._token
                    )
                )
                self._dht.run_coroutine(partial(renew, self._token.SerializeToString()))
                wait = LIFETIME.total_seconds() / 2
            except Exception as error:
                log.warning("Could not renew this peer's admission (%s); trying again in a minute", error)
                wait = 60.0


class Gate:
    """Which callers an averager serves: those that show a token naming their own peer id."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self._admitted: dict[PeerID, float] = {}  # until (monotonic)
        self._last_refusal_log: dict[PeerID, float] = {}

    async def admits(self, p2p: P2P, caller: PeerID) -> bool:
        now = time.monotonic()
        if self._admitted.get(caller, 0.0) > now:
            return True
        try:
            token = await asyncio.wait_for(
                p2p.call_protobuf_handler(caller, SHOW, AccessToken(), AccessToken), 10
            )
            problem = why_not_valid(self.admission, token, caller.to_base58())
        except Exception as error:
            problem = f"no answer ({error or type(error).__name__})"
        if problem is None:
            self._admitted[caller] = now + LIFETIME.total_seconds() / 2
            return True
        if now - self._last_refusal_log.get(caller, -60.0) >= 60.0:
            self._last_refusal_log[caller] = now
            log.warning("Refused averaging with peer %s: %s", caller.to_base58(), problem)
        return False
