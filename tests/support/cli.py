"""Real `hiveling` commands as child processes, their JSON events collected in the background."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

Event = dict[str, Any]


class Cli:
    """``python -m hiveling.core.cli ARGS`` with its own HIVELING_HOME; stdout events are collected."""

    def __init__(self, args: Sequence[str], home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hiveling.core.commands.cli", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "HIVELING_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        self.events: list[Event] = []
        self.stderr: deque[str] = deque(maxlen=200)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.lines.append(line)
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def tail(self) -> str:
        log = self.home / "logs" / "hiveling.log"
        worker = log.read_text(errors="replace").splitlines()[-60:] if log.is_file() else []
        return "\n".join([*list(self.stderr)[-20:], "--- log:", *worker, "--- stdout:", *self.lines[-20:]])

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 90, after: int = 0) -> Event:
        """The first event from index ``after`` on that matches; fails the test on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = next((e for e in self.events[after:] if predicate(e)), None)
                if match is not None:
                    return match
                if not self._threads[0].is_alive():
                    pytest.fail(f"the command exited before the expected event:\n{self.tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out waiting for an event:\n{self.tail()}")
                self._changed.wait(min(remaining, 1.0))

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(10)
        return code

    def stop(self) -> int:
        """SIGINT (a user's Ctrl-C), then SIGTERM, then SIGKILL to the whole process group."""
        for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else os.kill(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.wait()


def start_local_host(home: Path, *extra: str) -> tuple[Cli, str]:
    """A real host on 127.0.0.1 training the glyph recipe; returns it and its invite."""
    host = Cli(
        [
            "host",
            "--recipe",
            "glyphs",
            "--local",
            "--json",
            "--checkpoint-every",
            "5",
            "--progress-interval",
            "0.5",
            "--target-batch-size",
            "256",
            "--batch-size",
            "32",
            *extra,
        ],
        home,
    )
    invite = host.wait_for(lambda e: e.get("type") == "invite", timeout=120)
    return host, str(invite["token"])
