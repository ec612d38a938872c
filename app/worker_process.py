"""The worker as the GUI sees it: a :class:`Supervisor` whose events arrive as a Qt signal.

The supervisor calls back from its reader threads; :class:`WorkerBridge` queues each event onto the Qt
thread. :class:`ReplaySupervisor` stands in for the real worker by replaying a recorded event stream
(``tests/fixtures/events/*.jsonl``) through the protocol's line reader: GUI tests, screenshots and
demos run without torch.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from hiveling.core import Event, LineReader, Settings, make_event

logger = logging.getLogger(__name__)
worker_log = logging.getLogger("hiveling.worker")

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class SupervisorLike(Protocol):
    state: str

    def start(self) -> None: ...
    def pause(self, when: Any = "now") -> None: ...
    def resume(self) -> None: ...
    def stop(self, timeout: float | None = None) -> None: ...
    def log_tail(self, lines: int = 50) -> list[str]: ...


SupervisorFactory = Callable[[Any, Callable[[Event], None]], SupervisorLike]


def worker_options(settings: Settings, token: str, env: Mapping[str, str] | None = None) -> Any:
    """The supervisor's WorkerOptions for ``settings`` and an invite token."""
    from hiveling.core import WorkerOptions

    return WorkerOptions(
        invite=token,
        device=settings.device or "auto",
        memory_cap_gb=settings.memory_cap_gb,
        cpu_threads=settings.cpu_threads,
        temperature_limit_c=settings.temperature_limit_c,
        power_limit=settings.power_limit,
        daily_energy_wh=settings.daily_energy_wh,
        env=dict(env or {}),
    )


def real_supervisor(options: Any, on_event: Callable[[Event], None]) -> SupervisorLike:
    from hiveling.core import Supervisor

    return Supervisor(options, on_event)


class WorkerBridge(QObject):
    """Owns at most one supervisor; ``received`` fires on the Qt thread for every event it reports."""

    received = Signal(object)
    _arrived = Signal(object)

    def __init__(self, factory: SupervisorFactory | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._factory = factory or real_supervisor
        self._supervisor: SupervisorLike | None = None
        self.options: Any = None
        # Queued explicitly: the supervisor emits from its own threads.
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @property
    def started(self) -> bool:
        return self._supervisor is not None

    def start(self, options: Any) -> None:
        """Starts a worker with ``options`` (stopping the one running first, if any)."""
        self.stop()
        self.options = options
        self._supervisor = self._factory(options, self._forward)
        self._supervisor.start()

    def pause(self, when: str = "now") -> None:
        if self._supervisor is not None:
            self._supervisor.pause(when)

    def resume(self) -> None:
        if self._supervisor is not None:
            self._supervisor.resume()

    def stop(self, timeout: float | None = None) -> None:
        """Blocks until the worker is gone (stop command, then terminate, then kill)."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop(timeout)

    def log_tail(self, lines: int = 50) -> list[str]:
        return self._supervisor.log_tail(lines) if self._supervisor is not None else []

    def _forward(self, event: Event) -> None:
        """Runs on the supervisor's threads: queue the event for the Qt thread."""
        try:
            self._arrived.emit(event)
        except RuntimeError:  # the bridge is gone (the app quit) while a worker still spoke
            logger.debug("Dropped a %s event after the app closed", event.get("type"))

    def _deliver(self, event: Event) -> None:
        if event.get("type") == "log":
            level = LOG_LEVELS.get(str(event.get("level")).lower(), logging.INFO)
            worker_log.log(level, "%s", event.get("message"))
        self.received.emit(event)


class ReplaySupervisor(QObject):
    """Plays a recorded event stream as if a worker sent it, and answers pause/resume/stop like one.

    The file is fed to :class:`LineReader` in small chunks, so partial lines, junk and unknown events
    take the same path as a real worker's output. Events are paced by a single-shot timer on the Qt
    thread; the stream pauses while paused and ends where the file ends.
    """

    def __init__(
        self,
        path: Path,
        on_event: Callable[[Event], None],
        *,
        interval_ms: int = 50,
        chunk_size: int = 97,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.on_event = on_event
        self.state = "stopped"
        self.commands: list[str] = []
        self._events: deque[Event] = deque(read_stream(path.read_bytes(), chunk_size))
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._play)
        self._paused = False

    def start(self) -> None:
        self.commands.append("start")
        self._paused = False
        self._timer.start()

    def pause(self, when: Any = "now") -> None:
        self.commands.append(f"pause:{when}")
        self._paused = True
        self._timer.stop()
        if when == "step":
            self._emit(make_event("state", state="pausing", reason="pausing after this step"))
        self._emit(make_event("state", state="paused", reason="paused"))

    def resume(self) -> None:
        self.commands.append("resume")
        if not self._paused:
            return
        self._paused = False
        self._emit(make_event("state", state="training", reason=None))
        self._timer.start()

    def stop(self, timeout: float | None = None) -> None:
        self.commands.append("stop")
        self._timer.stop()
        self._events.clear()
        if self.state != "stopped":
            self._emit(make_event("state", state="stopped", reason="stopped"))
            self._emit(make_event("bye", exit_code=0, reason="stopped"))

    def log_tail(self, lines: int = 50) -> list[str]:
        return [f"replaying a recorded event stream ({len(self._events)} events left)"][-lines:]

    def _play(self) -> None:
        if self._paused or not self._events:
            return
        self._emit(self._events.popleft())
        if self._events:
            self._timer.start()

    def _emit(self, event: Event) -> None:
        if event.get("type") == "state":
            self.state = str(event.get("state"))
        elif event.get("type") == "bye":
            self.state = "stopped"
        self.on_event(event)


def read_stream(data: bytes, chunk_size: int = 4096) -> list[Event]:
    """The events in a recorded stream, read the way the supervisor reads a worker: chunk by chunk."""
    reader = LineReader()
    events: list[Event] = []
    for start in range(0, len(data), chunk_size):
        events.extend(reader.feed(data[start : start + chunk_size]))
    events.extend(reader.feed(b"\n"))  # a last line without its newline
    return events


def replay_factory(path: Path, interval_ms: int = 50) -> SupervisorFactory:
    def factory(options: Any, on_event: Callable[[Event], None]) -> SupervisorLike:
        return ReplaySupervisor(path, on_event, interval_ms=interval_ms)

    return factory
