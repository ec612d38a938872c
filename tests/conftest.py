"""Fixtures shared by every test: no leaked processes, no leaked threads."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Singletons that libraries start once per process and keep until exit, by design.
PROCESS_LIFETIME_THREADS = {"hivemind.utils.mpfuture.BACKEND"}


def is_process_lifetime(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None)
    owner = type(getattr(target, "__self__", None)).__name__
    # multiprocessing's resource sharer serves file descriptors of shared tensors until exit.
    return (
        thread.name in PROCESS_LIFETIME_THREADS or owner == "_ResourceSharer" or in_hivemind_executor(thread)
    )


def in_hivemind_executor(thread: threading.Thread) -> bool:
    """A worker of the executor hivemind creates once per process, on first use, and never shuts down
    (its progress tracker's fetches enter a lock through it)."""
    wrapper = getattr(sys.modules.get("hivemind.utils.asyncio"), "_AsyncContextWrapper", None)
    executor = getattr(wrapper, "CONTEXT_EXECUTOR", None)
    args = getattr(thread, "_args", ())
    reference = args[0] if args else None  # a pool worker's first argument: its executor, weakly
    return executor is not None and callable(reference) and reference() is executor


def descendants(pid: int) -> set[int]:
    """PIDs of every living descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


# Every process this test process starts inherits it, p2pd daemons included: the leak check tells
# our own orphaned daemons from those of another test process (xdist) or of a run beside the suite.
SESSION_VARIABLE = "HIVELING_TEST_SESSION"
SESSION_MARK = f"{SESSION_VARIABLE}={os.getpid()}".encode()


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_VARIABLE] = str(os.getpid())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, the longest-bounded ahead: xdist hands out tests in this order, so the two
    workers share the long ones instead of one of them ending the run alone with a demo."""

    def expected_cost(item: pytest.Item) -> float:
        if item.get_closest_marker("slow") is None:
            return 0.0
        bound = item.get_closest_marker("timeout")
        return float(bound.args[0]) if bound is not None and bound.args else 1.0

    items.sort(key=expected_cost, reverse=True)  # stable: the same order in every xdist worker


def p2pd_processes() -> set[int]:
    """This test process's p2pd daemons, orphaned ones included (they are no longer our descendants)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "p2pd" and SESSION_MARK + b"\0" in (
                    (entry / "environ").read_bytes() + b"\0"
                ):
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def wait_until(condition: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(condition())  # type: ignore[operator]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves child processes, p2pd daemons or threads behind; kill the processes."""
    before_children = descendants(os.getpid())
    before_p2pd = p2pd_processes()
    before_threads = {t.ident for t in threading.enumerate()}
    yield
    leaked: set[int] = set()

    def settled() -> bool:
        nonlocal leaked
        leaked = (descendants(os.getpid()) - before_children) | (p2pd_processes() - before_p2pd)
        # torch starts one shared-memory manager per process on first use and keeps it by design.
        leaked = {pid for pid in leaked if not _cmdline(pid).startswith("torch_shm_manager")}
        return not leaked

    if not wait_until(settled, timeout=15):
        names = {pid: _cmdline(pid) for pid in leaked}
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"test leaked processes: {names}")
    new_threads: list[threading.Thread] = []

    def threads_done() -> bool:
        nonlocal new_threads
        new_threads = [
            t
            for t in threading.enumerate()
            if t.ident not in before_threads and t.is_alive() and not is_process_lifetime(t)
        ]
        return not new_threads

    assert wait_until(threads_done, timeout=10), f"test leaked threads: {[t.name for t in new_threads]}"


@pytest.fixture
def hiveling_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HIVELING_HOME for this test: settings, logs, identities and checkpoints under tmp_path."""
    home = tmp_path / "hiveling-home"
    monkeypatch.setenv("HIVELING_HOME", str(home))
    return home


@pytest.fixture
def local_invite(tmp_path: Path) -> Iterator[str]:
    """The invite of a real host on 127.0.0.1 (glyph recipe, target batch 256), stopped afterwards."""
    from tests.support.cli import start_local_host

    host, token = start_local_host(tmp_path / "host-home")
    try:
        yield token
    finally:
        host.stop()
