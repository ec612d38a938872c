"""The organizer's signing key: an Ed25519 key kept in a PEM file only its owner can read.

Every invite of a run is signed with this key, and the run id is derived from its public half, so
losing the file means the next invite starts a new run. Problems with the file raise
:class:`OrganizerKeyError`, whose message is one line that says what to do.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

logger = logging.getLogger(__name__)

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


class OrganizerKeyError(ValueError):
    """An organizer key file that cannot be read, written or used; the message says how to fix it."""


def fingerprint_of(public_key: bytes) -> str:
    """A short, human-comparable form of a public key, e.g. ``"K7Q2-M5XD-4HTR"`` (60 bits of SHA-256)."""
    digest = base64.b32encode(hashlib.sha256(public_key).digest()).decode("ascii")
    return "-".join(digest[i : i + 4] for i in range(0, 12, 4))


def _unwritable(path: Path, error: OSError) -> OrganizerKeyError:
    return OrganizerKeyError(
        f"cannot write organizer key {path} ({error.strerror or error}); choose a writable folder"
    )


class OrganizerKey:
    """Wraps an Ed25519 private key; :meth:`sign` is all an invite needs from it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key

    @classmethod
    def generate(cls) -> OrganizerKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> OrganizerKey:
        """The key stored at ``path``; OrganizerKeyError when it is missing, unreadable or not a key."""
        path = Path(path)
        try:
            data = path.read_bytes()
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise OrganizerKeyError(
                f"organizer key {path} does not exist; create one with load_or_create or check the path"
            ) from None
        except OSError as error:
            raise OrganizerKeyError(
                f"cannot read organizer key {path} ({error.strerror or error}); check the file's permissions"
            ) from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise OrganizerKeyError(
                f"organizer key {path} is damaged or not an unencrypted PEM key; restore it from a backup "
                "(a new key starts a new run: old invites stop working)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise OrganizerKeyError(
                f"organizer key {path} is a {type(key).__name__.removeprefix('_')}, not an Ed25519 key; "
                "point Hiveling at the key it created or move this file away"
            )
        if stat.S_IMODE(mode) & 0o077:
            logger.warning("Organizer key %s is readable by other users; run: chmod 600 %s", path, path)
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> OrganizerKey:
        """The key at ``path``, or a new one saved there (mode 0600) when no file exists yet."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        if not key._write(path):  # created meanwhile by another process: use theirs
            return cls.load(path)
        logger.info("Created organizer key %s (fingerprint %s)", path, key.fingerprint)
        return key

    def save(self, path: Path) -> None:
        """Writes the key as PEM with mode 0600; never replaces an existing file."""
        path = Path(path)
        if not self._write(path):
            raise OrganizerKeyError(
                f"{path} already exists; choose another path or move the old key away (and keep a backup)"
            )

    def _write(self, path: Path) -> bool:
        """False when ``path`` exists; the file appears whole or not at all."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
        except OSError as error:
            raise _unwritable(path, error) from None
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            os.link(tmp, path)  # unlike rename, fails when the target exists
        except FileExistsError:
            return False
        except OSError as error:
            raise _unwritable(path, error) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return True

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key that invites carry."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def private_bytes(self) -> bytes:
        """The raw private key, for the host's worker, which signs its run's admission tokens."""
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_bytes)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"OrganizerKey({self.fingerprint})"


def load_or_create_secret(path: Path, size: int = 16) -> bytes:
    """A run's join secret, kept beside the organizer key (mode 0600) so a restarted host's invite is
    the same; created on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError:
        raise OrganizerKeyError(f"{path} is damaged: delete it to close the run with a new invite") from None
    secret = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(secret.hex() + "\n")
    return secret
