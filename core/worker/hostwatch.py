"""Whether the run's host still answers: a volunteer says so within seconds when it goes quiet.

A host whose machine dies leaves its progress record on the DHT until the record expires, so nothing
in the training loop notices; volunteers would go on (or, alone, wait) without a word.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from hiveling.core.worker.events import Event, make_event

logger = logging.getLogger(__name__)

#: A host whose record is older than this is pinged; hosts report about every half second.
QUIET_AFTER_SECONDS = 4.0
CHECK_EVERY_SECONDS = 1.0


def host_peer_ids(addresses: Iterable[str]) -> list[str]:
    """The peer ids in the invite's host addresses (``.../p2p/<id>``)."""
    found = []
    for address in addresses:
        parts = address.rstrip("/").split("/")
        for name, value in zip(parts, parts[1:], strict=False):
            if name in ("p2p", "ipfs") and value not in found:
                found.append(value)
    return found


async def _answers(peer: Any, _dht: Any, node: Any) -> bool:
    return await node.protocol.call_ping(peer) is not None


class HostWatch:
    """Checks every second whether the host reports or answers a ping; tells the volunteer (a log event
    and the ``host_answers`` field of progress events) when that changes."""

    def __init__(
        self,
        host_ids: list[str],
        dht: Any,
        record_age: Callable[[bytes], float | None],
        others: Callable[[], int],
        emit: Callable[[Event], None],
    ) -> None:
        from hivemind.p2p import PeerID

        self._hosts = [PeerID.from_base58(peer) for peer in host_ids]
        self._dht, self._record_age, self._others, self._emit = dht, record_age, others, emit
        self.host_answers = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="HostWatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _reporting(self) -> bool:
        ages = [self._record_age(peer.to_bytes()) for peer in self._hosts]
        return any(age is not None and age < QUIET_AFTER_SECONDS for age in ages)

    def _pinged(self) -> bool:
        for peer in self._hosts:
            try:
                if self._dht.run_coroutine(functools.partial(_answers, peer)):
                    return True
            except Exception as error:  # a DHT shutting down: not the host's fault
                logger.debug("Pinging the host failed: %r", error)
                if self._stop.is_set():
                    return True
        return False

    def _run(self) -> None:
        while not self._stop.wait(CHECK_EVERY_SECONDS):
            answers = self._reporting() or self._pinged()
            if self._stop.is_set() or answers == self.host_answers:
                continue
            self.host_answers = answers
            level = "info" if answers else "warning"
            self._emit(make_event("log", level=level, topic="host", message=self._say(answers)))

    def _say(self, answers: bool) -> str:
        if answers:
            return "The host answers again."
        others = self._others()
        if others > 0:
            return (
                "The host is not answering (its machine may be off or cut off): training goes on with "
                f"the {others} other volunteer(s); the host catches up when it is back."
            )
        return (
            "The host is not answering and no other volunteer is here: this computer keeps its work "
            "and waits for the host or other volunteers to come back."
        )
