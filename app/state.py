"""What the tray shows, reduced from the worker's events: pure Python, no Qt, so it is tested alone.

The worker (through the supervisor) says what it is doing; the app adds why it holds training back
("by you", "on battery", "snoozed until 15:30"). :class:`AppState` combines both into one of five
looks, a one-line status ("Training: 412 samples/s, 7 peers, step 1,204"), which menu entries make
sense, chart history and this machine's contribution.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Literal

# The icon's looks, in the order a volunteer meets them.
LOOKS: Final = ("not_joined", "connecting", "training", "paused", "error")
Look = Literal["not_joined", "connecting", "training", "paused", "error"]

ACTIVE: Final = frozenset({"starting", "connecting", "training", "restarting"})
HISTORY_POINTS: Final = 720  # chart points kept per series (an hour at one progress event per 5 s)
# The same error is announced again only after this long, so a crash loop does not flood the desktop.
NOTICE_REPEAT_SECONDS: Final = 600.0


@dataclass(frozen=True)
class MenuState:
    """Which tray menu entries do something right now."""

    can_start: bool = False
    can_pause_now: bool = False
    can_pause_step: bool = False
    can_snooze: bool = False


@dataclass(frozen=True)
class Notice:
    """A desktop notification the app should show once."""

    title: str
    message: str
    error: bool = False


@dataclass(frozen=True)
class Progress:
    step: int | None = None
    peers: int | None = None
    local_sps: float | None = None
    collab_sps: float | None = None
    samples_accumulated: int | None = None
    target_batch_size: int | None = None
    eta_seconds: float | None = None
    loss: float | None = None
    session_samples: int | None = None
    total_samples: int | None = None
    #: The low-communication mode's local steps between exchanges; None: synchronous steps.
    local_steps: int | None = None
    energy_wh: float | None = None  # this session
    energy_total_wh: float | None = None  # this run, on this computer
    energy_estimated: bool = False
    temperature: float | None = None  # the hottest device, °C
    governor: str | None = None  # what the energy governor is doing, when it slows training


@dataclass
class History:
    """Recent values for the charts as (unix time, value); ``version`` grows with every new point."""

    local_sps: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    collab_sps: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    loss: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    peers: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    temperature: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    version: int = 0

    def add(self, when: float, progress: Progress) -> None:
        pairs = (
            (self.local_sps, progress.local_sps),
            (self.collab_sps, progress.collab_sps),
            (self.loss, progress.loss),
            (self.peers, progress.peers),
            (self.temperature, progress.temperature),
        )
        for series, value in pairs:
            if value is not None:
                series.append((when, float(value)))
        self.version += 1


class AppState:
    """The state the tray renders. ``version`` grows whenever anything visible changed."""

    def __init__(self) -> None:
        self.run_name: str | None = None
        self.run_id: str | None = None
        self.worker: str | None = None  # the worker's last state (events.STATES); None: no worker
        self.worker_reason: str | None = None
        #: Who paused the worker, when it is paused: "user" (a pause command) or "governor" (an energy
        #: limit, which resumes by itself: the app's own holds must still pause it).
        self.paused_by: str | None = None
        self.hold: str | None = None  # why the app keeps training paused, in words
        self.error: str | None = None  # the last fatal error's one-line message, until training resumes
        self.warning: str | None = None  # the last error that training survived
        self.finished = False
        self.progress = Progress()
        self.history = History()
        self.device: str | None = None  # the training device's name, as the worker said hello
        self.device_id: str | None = None  # the same as torch names it: "cuda:0", "cpu", "mps"
        self.base_seconds = 0.0  # this machine's training time for the run before this session
        self.price_per_kwh: float | None = None  # from the settings: energy shown as a cost too
        self.currency = ""
        self.version = 0
        self._training_since: float | None = None
        self._trained_seconds = 0.0
        self._announce_join = False
        self._stopping = False
        self._notices: list[Notice] = []
        self._noticed: dict[str, float] = {}

    # -- inputs ---------------------------------------------------------------------------------

    def join(self, run_name: str, run_id: str | None = None, *, announce: bool = True) -> None:
        """A run was chosen (by the Join dialog, or the saved invite at start): forget the old one."""
        self.run_name, self.run_id = run_name, run_id
        self.worker = self.worker_reason = self.error = self.warning = None
        self.finished = False
        self.progress = Progress()
        self.history = History()
        self.base_seconds = 0.0
        self._training_since = None
        self._trained_seconds = 0.0
        self._announce_join = announce
        self._changed()

    def set_hold(self, reason: str | None) -> bool:
        """Holds training back for ``reason`` (None lets it go); True when that changed anything."""
        if reason == self.hold:
            return False
        self.hold = reason
        self._changed()
        return True

    def expect_stop(self) -> None:
        """The app itself is stopping the worker, so its goodbye is not a finished run."""
        self._stopping = True

    def apply(self, event: dict[str, Any], now: float | None = None) -> bool:
        """Folds one worker/supervisor event in; True when something visible changed."""
        when = _number(event.get("time"))
        when = when if when is not None else (now if now is not None else time.time())
        kind = event.get("type")
        if kind == "hello":
            return self._on_hello(event)
        if kind == "state":
            return self._on_state(event, when)
        if kind == "progress":
            return self._on_progress(event, when)
        if kind == "error":
            return self._on_error(event, when)
        if kind == "bye":
            return self._on_bye(event, when)
        return False  # log lines and unknown types do not change what the tray shows

    def take_notices(self) -> list[Notice]:
        notices, self._notices = self._notices, []
        return notices

    # -- outputs --------------------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self.run_name is not None

    @property
    def look(self) -> Look:
        return self._summary()[0]

    @property
    def status_line(self) -> str:
        """One line that says what is happening and why: the tooltip's first line, the menu's top."""
        return self._summary()[1]

    @property
    def tooltip(self) -> str:
        line = self.status_line
        return f"{line}\nRun: {self.run_name}" if self.run_name else line

    @property
    def menu(self) -> MenuState:
        if not self.joined:
            return MenuState()
        worker = self.worker
        running = worker in ACTIVE or worker == "pausing"
        return MenuState(
            can_start=self.hold is not None or not running,
            # "Pause now" may also hurry a pending "pause after this step".
            can_pause_now=running and (self.hold is None or worker == "pausing"),
            can_pause_step=self.hold is None and worker == "training",
            can_snooze=worker != "failed",
        )

    def session_seconds(self, now: float | None = None) -> float:
        """Training time of this session so far (paused time does not count)."""
        running = 0.0
        if self._training_since is not None:
            running = max(0.0, (now if now is not None else time.time()) - self._training_since)
        return self._trained_seconds + running

    def total_seconds(self, now: float | None = None) -> float:
        return self.base_seconds + self.session_seconds(now)

    # -- reducers -------------------------------------------------------------------------------

    def _on_hello(self, event: dict[str, Any]) -> bool:
        before = (self.run_name, self.run_id, self.device, self.device_id)
        if isinstance(event.get("run_name"), str):
            self.run_name = event["run_name"]
        if isinstance(event.get("run_id"), str):
            self.run_id = event["run_id"]
        device = event.get("device")
        if isinstance(device, dict):
            self.device_id = _torch_device(device.get("kind"), device.get("index"))
            device = device.get("name") or device.get("kind")
        if isinstance(device, str) and device:
            self.device = device
        if before == (self.run_name, self.run_id, self.device, self.device_id):
            return False
        self._changed()
        return True

    def _on_state(self, event: dict[str, Any], when: float) -> bool:
        state = event.get("state")
        if not isinstance(state, str):
            return False
        reason = event.get("reason") if isinstance(event.get("reason"), str) else None
        if reason is not None and reason.strip().lower() == state:
            reason = None  # "paused: paused" says nothing
        if (state, reason) == (self.worker, self.worker_reason):
            return False
        self._account(state, when)
        self.worker, self.worker_reason = state, reason
        by = event.get("by")
        self.paused_by = by if state == "paused" and isinstance(by, str) else None
        if state == "training":
            self.error = None
            self.finished = False
            if self._announce_join:
                self._announce_join = False
                self._notify(Notice("Joined", f"Training with the run {self.run_name or ''}".strip()), when)
        elif state == "failed" and self.error is None:  # an error event has said why already
            self.error = reason or "the worker stopped"
            self._notify(Notice("Hiveling stopped training", self.error, error=True), when)
        elif state in ("starting", "connecting"):
            self._stopping = False
        elif state == "stopped" and event.get("outcome") == "finished":
            self._finish(when, notify=not event.get("again"))
        self._changed()
        return True

    def _on_progress(self, event: dict[str, Any], when: float) -> bool:
        self.progress = Progress(
            step=_integer(event.get("step")),
            peers=_integer(event.get("peers")),
            local_sps=_number(event.get("local_sps")),
            collab_sps=_number(event.get("collab_sps")),
            samples_accumulated=_integer(event.get("samples_accumulated")),
            target_batch_size=_integer(event.get("target_batch_size")),
            eta_seconds=_number(event.get("eta_seconds")),
            loss=_number(event.get("loss")),
            session_samples=_integer(event.get("session_samples")),
            total_samples=_integer(event.get("total_samples")),
            local_steps=_integer(event.get("local_steps")) if event.get("mode") == "local" else None,
            energy_wh=_number(event.get("energy_wh")),
            energy_total_wh=_number(event.get("energy_total_wh")),
            energy_estimated=event.get("energy_estimated") is True,
            temperature=_hottest(event.get("temperatures")),
            governor=event.get("governor") if isinstance(event.get("governor"), str) else None,
        )
        self.history.add(when, self.progress)
        self._changed()
        return True

    def _on_error(self, event: dict[str, Any], when: float) -> bool:
        message = event.get("message")
        if not isinstance(message, str) or not message:
            message = str(event.get("code") or "unknown error")
        line = message.splitlines()[0]
        if event.get("fatal") is False:
            self.warning = line  # training goes on: tell the volunteer once, keep the look
        else:
            self.error = line
        self._notify(Notice("Hiveling", line, error=True), when, key=str(event.get("code")))
        self._changed()
        return True

    def _on_bye(self, event: dict[str, Any], when: float) -> bool:
        self._account("stopped", when)
        ended = event.get("exit_code") == 0 and not self._stopping and self.hold is None
        changed = self._finish(when) if ended or event.get("outcome") == "finished" else False
        self._stopping = False
        # "bye" carries a code, not words; a stopped, paused or failed state said it better already.
        if self.worker not in ("stopped", "paused", "failed"):
            self.worker, self.worker_reason = "stopped", None
            changed = True
        if changed:
            self._changed()
        return changed

    def _finish(self, when: float, notify: bool = True) -> bool:
        if self.finished:
            return False
        self.finished = True
        if notify:  # not again each time the app starts a worker for a run that finished long ago
            name = self.run_name or "The run"
            self._notify(Notice("Run finished", f"{name} has finished. Thank you for your help!"), when)
        return True

    def _account(self, state: str, when: float) -> None:
        if state == "training" and self._training_since is None:
            self._training_since = when
        elif state != "training" and self._training_since is not None:
            self._trained_seconds += max(0.0, when - self._training_since)
            self._training_since = None

    def _notify(self, notice: Notice, when: float, key: str | None = None) -> None:
        key = key or notice.title + notice.message
        last = self._noticed.get(key)
        if notice.error and last is not None and when - last < NOTICE_REPEAT_SECONDS:
            return
        self._noticed[key] = when
        self._notices.append(notice)

    def _changed(self) -> None:
        self.version += 1

    def _summary(self) -> tuple[Look, str]:
        worker, hold = self.worker, self.hold
        if not self.joined:
            return "not_joined", "Not joined: choose “Join a run…” to start helping"
        if worker == "failed":
            return "error", f"Error: {self.error or self.worker_reason or 'the worker stopped'}"
        if self.error and worker in (None, "stopped"):
            return "error", f"Error: {self.error}"
        if hold is not None and worker not in ("training", "connecting", "starting", "restarting"):
            verb = "Pausing" if worker == "pausing" else "Paused"
            return "paused", f"{verb}: {hold}"
        if worker == "training":
            return "training", f"Training: {self._progress_words()}"
        if worker in ("starting", "connecting", None):
            return "connecting", f"Connecting: {self.worker_reason or 'looking for peers'}"
        if worker == "restarting":
            why = f" ({self.worker_reason})" if self.worker_reason else ""
            return "connecting", f"Connecting: restarting the worker{why}"
        if worker == "pausing":
            return "paused", f"Pausing: {self.worker_reason or 'after this step'}"
        if worker == "paused":
            return "paused", f"Paused: {self.worker_reason or 'waiting for the worker'}"
        if worker == "stopping":
            return "paused", "Stopping…"
        if self.finished:
            return "paused", "Stopped: the run has finished"
        return "paused", f"Stopped: {self.worker_reason or 'choose Start to train again'}"

    def _progress_words(self) -> str:
        p = self.progress
        if p.step is None and p.local_sps is None:
            return "waiting for the first step"
        parts = []
        if p.local_sps is not None:
            parts.append(f"{format_rate(p.local_sps)} samples/s")
        if p.peers is not None:
            parts.append(f"{p.peers} peer" + ("" if p.peers == 1 else "s"))
        if p.step is not None:
            parts.append(f"step {p.step:,}")
        words = ", ".join(parts)
        return f"{words} · {p.governor}" if p.governor else words


def format_rate(value: float) -> str:
    """Samples per second the way people read them: 412, 41.2, 4.12."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_duration(seconds: float | None) -> str:
    """A rough duration: "45 s", "12 min", "3 h 20 min", "2 days 4 h"; "unknown" for None."""
    if seconds is None or seconds < 0:
        return "unknown"
    if seconds < 1:
        return "under a second"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def format_time_trained(seconds: float) -> str:
    """Minutes and seconds under an hour (a first session must not read as "0.00 h"), then hours."""
    if seconds < 3600:
        minutes, rest = divmod(int(max(0.0, seconds)), 60)
        return f"{minutes} min {rest} s" if minutes else f"{rest} s"
    return f"{seconds / 3600:,.1f} h"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _hottest(value: object) -> float | None:
    if not isinstance(value, dict):
        return None
    found = [number for number in map(_number, value.values()) if number is not None]
    return max(found) if found else None


def _torch_device(kind: object, index: object) -> str | None:
    if kind in ("cuda", "rocm"):
        return f"cuda:{index if isinstance(index, int) else 0}"
    if kind in ("cpu", "mps"):
        return str(kind)
    return None
