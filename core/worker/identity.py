"""A run's stable peer identity on this machine, and the lock that keeps it to one worker at a time.

hivemind can ask the swarm whether an identity is already in use, but peers remember a dead
connection for a while, so a worker restarted after a crash or a "pause now" was refused as its own
ghost. The question is really local (the key file lives here): a lock file held for the worker's
lifetime answers it, and the operating system releases it when the process dies, even by kill -9
(forked children, hivemind's DHT and averagers, share it: it is free once the whole group is gone).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

_LOCK_WAIT_SECONDS = 30.0  # a stopping worker's group is killed in seconds; a slow teardown too
_LOCK_POLL_SECONDS = 0.1


class IdentityInUse(Exception):
    """Another process on this machine holds the identity; the message is its process id, if known."""


def ensure_identity(path: Path) -> Path:
    """The identity key at ``path``, generated on first use (or when the file is empty)."""
    if not path.is_file() or path.stat().st_size == 0:
        from hivemind.p2p import P2P

        path.unlink(missing_ok=True)
        P2P.generate_identity(str(path))
    return path


class IdentityLock:
    """An exclusive lock next to an identity file, held until :meth:`release` or the process ends."""

    def __init__(self, identity: Path) -> None:
        self.path = identity.with_name(identity.name + ".lock")
        self._fd: int | None = None

    def acquire(self, wait: float = _LOCK_WAIT_SECONDS) -> None:
        """Takes the lock, waiting up to ``wait`` seconds for a stopped worker's children to exit.

        A worker that is still running (the process that wrote the lock is alive) is not waited for.

        Raises:
            IdentityInUse: another process still holds it.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.set_inheritable(fd, False)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                if time.monotonic() >= deadline or _alive(holder):
                    os.close(fd)
                    raise IdentityInUse(holder) from None
                time.sleep(_LOCK_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Lets go of this process's hold; forked children that share the lock keep it until they end."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def _alive(pid: str) -> bool:
    """Whether the process that wrote ``pid`` into the lock still runs (its forked children may hold
    the lock a while after it exited)."""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
