"""Runs the training worker as a child process: start, pause, resume, stop, and restart after crashes.

The CLI and the tray app both drive a :class:`Supervisor`. It passes every worker event to its
``on_event`` callback (from a background thread) and adds its own: ``state`` "restarting"/"failed" and
an ``error`` "crash_loop" carrying the last lines of the worker's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from hiveling.core.worker.command import WorkerOptions
from hiveling.core.worker.events import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    Event,
    PauseWhen,
    decode,
    make_command,
    make_event,
)
from hiveling.core.worker.launcher import Launcher, LocalLauncher

logger = logging.getLogger(__name__)
worker_log = logging.getLogger("hiveling.worker")


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0
    crash_loop_count: int = 5  # this many crashes ...
    crash_loop_window: float = 300.0  # ... within this many seconds: give up
    stable_after: float = 120.0  # a worker that ran this long starts the backoff afresh

    def delay(self, consecutive_crashes: int) -> float:
        return float(min(self.max_delay, self.first_delay * self.factor ** max(0, consecutive_crashes - 1)))


class Supervisor:
    """Keeps one worker process running as asked; thread-safe."""

    #: "Pause now" must free the device within 2 s: a worker that has not paused by then is stopped.
    pause_deadline = 1.5
    #: stop(): how long each of command, SIGTERM and SIGKILL may take.
    stop_grace = 15.0  # a worker's clean exit (last round, averagers, DHT) takes seconds on a slow machine

    def __init__(
        self,
        options: WorkerOptions,
        on_event: Callable[[Event], None],
        *,
        policy: RestartPolicy | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.options = options
        #: Where the worker runs: a child process here, or inside WSL2 on Windows (``launcher.py``).
        self.launcher: Launcher = launcher or LocalLauncher()
        self.on_event = on_event
        self.policy = policy or RestartPolicy()
        self.state = "stopped"
        self.hello: Event | None = None
        self.last_progress: Event | None = None
        self.exit_code: int | None = None
        self._stderr: deque[str] = deque(maxlen=200)
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._wanted = "stopped"  # what the user asked for: "running", "paused" or "stopped"
        self._crashes: deque[float] = deque()
        self._consecutive = 0
        self._wake = threading.Event()
        self._manager: threading.Thread | None = None
        self._paused_without_worker = False
        self._pause_requested = 0.0

    # --- what the user asks ------------------------------------------------------------------------

    def start(self) -> None:
        if self._wanted == "paused":
            self.resume()
            return
        with self._lock:
            if self._wanted == "running" and self._manager is not None and self._manager.is_alive():
                return
            self._wanted = "running"
            self._paused_without_worker = False
            self._crashes.clear()
            self._consecutive = 0
        self._start_manager()

    def _start_manager(self) -> None:
        """A new manager thread, once the previous one (and so its worker) is gone: never two workers."""
        previous = self._manager
        if previous is not None and previous is not threading.current_thread():
            self._wake.set()
            previous.join(self.stop_grace * 3 + 10)
        with self._lock:
            if self._wanted != "running":
                return
            self._paused_without_worker = False
            self._wake.clear()
            self._manager = threading.Thread(target=self._manage, name="hiveling-supervisor", daemon=True)
            self._manager.start()

    def pause(self, when: PauseWhen = "now") -> None:
        with self._lock:
            # "Pause now" may also hurry a pending "pause after this step".
            upgrade = self._wanted == "paused" and when == "now" and self.state != "paused"
            if self._wanted != "running" and not upgrade:
                return
            self._wanted = "paused"
            self._pause_requested = time.monotonic()
            self._send(make_command("pause", when=when))
        if when == "now":
            threading.Thread(target=self._enforce_pause, name="hiveling-pause", daemon=True).start()

    def resume(self) -> None:
        with self._lock:
            if self._wanted != "paused":
                return
            self._wanted = "running"
            restart = self._paused_without_worker
            if not restart:
                self._send(make_command("resume"))
        self._set_state("starting", "resuming")
        if restart:
            self._start_manager()

    def stop(self, timeout: float | None = None) -> None:
        """Stops the worker: the stop command, then SIGTERM, then SIGKILL to its whole process group."""
        grace = self.stop_grace if timeout is None else timeout
        with self._lock:
            self._wanted = "stopped"
            self._wake.set()
            proc = self._proc
            self._send(make_command("stop"))
        if proc is not None:
            self._escalate(proc, grace)
        manager = self._manager
        if manager is not None and manager is not threading.current_thread():
            manager.join(grace + 10)
        if self._paused_without_worker or self.state not in ("stopped", "failed"):
            self._set_state("stopped", "stopped")
        self._paused_without_worker = False

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the supervisor to be done with its worker; True when it is."""
        manager = self._manager
        if manager is not None and manager is not threading.current_thread():
            manager.join(timeout)
            return not manager.is_alive()
        return True

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def log_tail(self, lines: int = 50) -> list[str]:
        return list(self._stderr)[-lines:]

    # --- the worker process ------------------------------------------------------------------------

    def _manage(self) -> None:
        """Runs the worker, and again after a crash, until asked to stop or the crashes loop."""
        while True:
            with self._lock:
                if self._manager is not threading.current_thread() or self._wanted == "stopped":
                    return
                if self._wanted == "paused":  # paused during a restart's backoff
                    self._paused_without_worker = True
                    return
                proc = self._spawn()
            started = time.monotonic()
            code = proc.wait()
            self._kill_group(proc)
            for thread in self._threads:
                thread.join(5)
            self._close(proc)
            with self._lock:
                if self._proc is proc:
                    self._proc = None
                self.exit_code = code
                wanted = self._wanted
                if self._paused_without_worker or (wanted == "paused" and code != EXIT_OK):
                    self._paused_without_worker = True
                    return  # stopped (or died) while paused: resume() starts a new worker
            if wanted == "stopped" or code == EXIT_OK:
                with self._lock:
                    self._wanted = "stopped"
                if self.state != "stopped":
                    self._set_state("stopped", "the worker ended")
                return
            if code == EXIT_BAD_INPUT:
                self._set_state("failed", "the worker cannot run with these settings")
                with self._lock:
                    self._wanted = "stopped"
                return
            if not self._may_restart(time.monotonic() - started):
                return
            delay = self.policy.delay(self._consecutive)
            self._set_state(
                "restarting", f"the worker stopped unexpectedly (exit {code}); restarting in {delay:.0f} s"
            )
            if self._wake.wait(delay):
                return

    def _may_restart(self, ran_for: float) -> bool:
        now = time.monotonic()
        self._consecutive = 1 if ran_for >= self.policy.stable_after else self._consecutive + 1
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.policy.crash_loop_window:
            self._crashes.popleft()
        if len(self._crashes) < self.policy.crash_loop_count:
            return True
        tail = self.log_tail(20)
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        window = self.policy.crash_loop_window
        self._emit(
            make_event(
                "error",
                code="crash_loop",
                message=f"The worker crashed {len(self._crashes)} times in {window:.0f} s and was given up; "
                f"last log line: {last.strip()[:200]}",
                fatal=True,
                log_tail=tail,
            )
        )
        self._set_state("failed", "the worker keeps crashing; see the log")
        with self._lock:
            self._wanted = "stopped"
        return False

    def _spawn(self) -> subprocess.Popen[bytes]:
        launcher = self.launcher
        proc = subprocess.Popen(
            launcher.command(self.options),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launcher.environment(self.options, dict(os.environ)),
            **launcher.popen_options(),
        )
        self._proc = proc
        self._threads = [
            threading.Thread(target=self._read_events, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._read_log, args=(proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return proc

    def _read_events(self, stream: IO[bytes]) -> None:
        for line in stream:
            event = decode(line)
            if event is None:
                continue
            kind = event["type"]
            if kind == "hello":
                self.hello = event
            elif kind == "progress":
                self.last_progress = event
            elif kind == "state":
                self.state = str(event.get("state"))
            self._emit(event)

    def _read_log(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr.append(line)
            worker_log.info("%s", line)

    def _send(self, command: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write(command.encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def _enforce_pause(self) -> None:
        asked = self._pause_requested
        deadline = time.monotonic() + self.pause_deadline
        while time.monotonic() < deadline:
            if self.state == "paused" or self._wanted != "paused" or self._pause_requested != asked:
                return
            time.sleep(0.05)
        with self._lock:
            if self._wanted != "paused" or self.state == "paused":
                return
            proc = self._proc
            self._paused_without_worker = True
        if proc is not None:
            self._escalate(proc, 0.2, polite=False)
        with self._lock:
            if self._wanted != "paused":
                return
        self._set_state("paused", "paused (the worker was stopped to free the device at once)")

    def _escalate(self, proc: subprocess.Popen[bytes], grace: float, polite: bool = True) -> None:
        for sig in (None, signal.SIGTERM, signal.SIGKILL) if polite else (signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    self.launcher.signal(proc, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        self._kill_group(proc)

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        """The worker is gone; make sure nothing it started (p2pd) outlives it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.launcher.signal(proc, signal.SIGKILL)

    @staticmethod
    def _close(proc: subprocess.Popen[bytes]) -> None:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _set_state(self, state: str, reason: str) -> None:
        self.state = state
        self._emit(make_event("state", state=state, reason=reason, source="supervisor"))

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:
            logger.exception("An event handler failed on %s", event.get("type"))
