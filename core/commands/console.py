"""What the commands share on the console: exit codes, usage errors, event printing, signal waits."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import timedelta
from typing import Any, NoReturn

from hiveling.core.worker.events import Event

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad flag or bad input: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class Output:
    """Prints events as human lines or JSON, from the supervisor's thread; remembers how it ended."""

    def __init__(self, as_json: bool, price_per_kwh: float | None = None, currency: str = "") -> None:
        self.as_json = as_json
        self.price_per_kwh = price_per_kwh  # turns the energy on progress lines into a cost
        self.currency = currency
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.fatal: Event | None = None
        self.last_progress: Event | None = None
        self.bye_code: int | None = None
        self.finished = False  # the worker reached the run's last step

    def __call__(self, event: Event) -> None:
        from hiveling.core.commands.report import describe_event

        kind = event.get("type")
        if kind == "progress":
            self.last_progress = event
        if kind == "error" and event.get("fatal"):
            self.fatal = event
        if kind == "state" and event.get("state") == "stopped" and event.get("outcome") == "finished":
            self.finished = True
        with self.lock:
            if self.as_json:
                print(json.dumps(event), flush=True)
            else:
                line = describe_event(event, self.price_per_kwh, self.currency)
                if line:
                    print(line, flush=True)
        if (
            kind == "state"
            and event.get("state") in ("stopped", "failed")
            and event.get("source") == "supervisor"
        ):
            self.done.set()
        if kind == "bye":
            self.bye_code = event.get("exit_code")
            if self.bye_code in (0, 2):
                self.done.set()

    def say(self, line: str) -> None:
        if not self.as_json:
            with self.lock:
                print(line, flush=True)


def wait_for_signal_or(done: threading.Event) -> bool:
    """Blocks until ``done`` or SIGINT/SIGTERM; True when a signal asked us to stop."""
    asked = threading.Event()

    def handler(*_: Any) -> None:
        asked.set()
        done.set()

    def still_stopping(*_: Any) -> None:
        print("Still stopping the worker; it is stopped for good within a few seconds.", file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    while not done.wait(0.5):
        pass
    # The caller stops the worker next: a second Ctrl-C must not abandon it half-stopped.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, still_stopping)
    return asked.is_set()


def expires_in(days: float) -> timedelta:
    if not 0 < days <= 36500:  # also refuses nan
        raise UsageError(f"--expires-days must be between 0 and 36500, got {days}")
    return timedelta(days=days)
