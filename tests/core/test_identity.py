"""The identity lock: one worker per peer identity on this machine, released however the holder ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hiveling.core.worker.identity import IdentityInUse, IdentityLock, ensure_identity

HOLD = """
import sys, time
from pathlib import Path
from hiveling.core.worker.identity import IdentityLock
IdentityLock(Path(sys.argv[1])).acquire(wait=0)
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    identity = tmp_path / "peer.identity"
    first, second = IdentityLock(identity), IdentityLock(identity)
    first.acquire(wait=0)
    with pytest.raises(IdentityInUse):
        second.acquire(wait=0)
    first.release()
    second.acquire(wait=0)
    second.release()


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    identity = tmp_path / "peer.identity"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(identity)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(IdentityInUse):
            IdentityLock(identity).acquire(wait=0)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        lock = IdentityLock(identity)
        lock.acquire(wait=5)
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.timeout(30)
def test_a_running_holder_is_refused_at_once_and_a_stopped_ones_children_are_waited_for(
    tmp_path: Path,
) -> None:
    identity = tmp_path / "peer.identity"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(identity)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(IdentityInUse, match=str(holder.pid)):
            IdentityLock(identity).acquire(wait=600)  # a running worker: waiting would not help
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    # A worker that has exited while a child it forked (hivemind's) still holds the lock: wait for it.
    leaver = subprocess.run([sys.executable, "-c", FORK_AND_LEAVE, str(identity)], timeout=30, check=True)
    assert leaver.returncode == 0
    with pytest.raises(IdentityInUse):
        IdentityLock(identity).acquire(wait=0)
    lock = IdentityLock(identity)
    lock.acquire(wait=25)  # the child lets go after about 2 s
    lock.release()


FORK_AND_LEAVE = """
import os, sys, time
from pathlib import Path
from hiveling.core.worker.identity import IdentityLock
IdentityLock(Path(sys.argv[1])).acquire(wait=0)
if os.fork() == 0:
    time.sleep(2)
    os._exit(0)
"""


def test_an_identity_is_made_once_and_an_empty_file_is_replaced(tmp_path: Path) -> None:
    identity = tmp_path / "peer.identity"
    ensure_identity(identity)
    key = identity.read_bytes()
    assert key
    ensure_identity(identity)
    assert identity.read_bytes() == key
    identity.write_bytes(b"")
    ensure_identity(identity)
    assert identity.read_bytes() not in (b"", key)
