"""Real peers: each one a `python -m tests.support.trial peer` process on 127.0.0.1."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.trial import PeerConfig, PeerProcess


class Peer:
    """A peer process whose events are collected in the background."""

    def __init__(self, config: PeerConfig, env: dict[str, str] | None = None) -> None:
        self.process = PeerProcess(config, env)
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for event in self.process.events():
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        """The first event matching ``predicate``; fails the test on timeout or if the peer exits first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = next((e for e in self.events if predicate(e)), None)
                if match is not None:
                    return match
                if not self._reader.is_alive():
                    pytest.fail(f"peer exited before the expected event:\n{self.process.tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out waiting for a peer event:\n{self.process.tail()}")
                self._changed.wait(remaining)

    def finish(self, timeout: float = 120) -> int:
        self._reader.join(timeout)
        return self.process.stop(timeout=10)

    def address(self) -> str:
        return str(self.wait_for(lambda e: e["type"] == "joined")["addresses"][0])

    def steps(self) -> dict[int, dict[str, Any]]:
        return {e["step"]: e for e in self.events if e["type"] == "step"}


@pytest.fixture
def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_peer() -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def start(config: PeerConfig, env: dict[str, str] | None = None) -> Peer:
        peer = Peer(config, env)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.process.stop(timeout=0.1)


def max_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
