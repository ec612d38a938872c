"""The worker's event protocol: one JSON object per line on stdout, commands as JSON lines on stdin.

Every event carries ``v`` (the protocol version) and ``type``. Readers ignore unknown types and
unknown fields; the version changes only when a change would break an existing reader.

Events (fields beyond ``v``/``type``/``time``):
    hello     versions, peer_id, run_id, run_name, recipe, device, batch_size, addresses, role,
              energy_source (how energy is measured, in words), energy_estimated
    state     state (one of STATES), reason (human text or null). From the worker, "pausing" adds
              step, and "paused" adds step, unused_samples (trained here but in no collaborative
              step), device_memory_bytes and by ("user", or "governor": an energy limit, which
              resumes it by itself); "stopped" adds outcome ("stopped", "finished": the run's
              last step) and step, and again=true when the run had finished before this start;
              "stopping" (training has ended, the network not yet) adds step, loss, accuracy and
              fingerprints (collaborative step -> parameter fingerprint, the last 20 steps)
    progress  step, peers, local_sps, collab_sps, samples_accumulated, target_batch_size,
              eta_seconds, loss, accuracy (held-out, 0 to 1, or null), session_samples,
              total_samples, total_seconds, batch_size; while non-zero, skipped_batches (gradients
              not finite, left out), failed_rounds (stepped on local gradients), rejected_rounds
              (averaged gradients not finite, not applied); in the low-communication mode also
              mode="local" and local_steps, and step, samples_accumulated, target_batch_size and
              eta_seconds count exchanges (outer steps) and the samples toward the next one;
              energy_wh (this session), energy_total_wh (this run on this machine), energy_today_wh,
              energy_estimated, power_w, temperatures ({"gpu": °C, "cpu": °C} where exposed), and
              with a limit set, duty (share of time training) and governor (what it does, or null);
              at the host, swarm_energy_wh and swarm_energy_peers (the run's total)
    log       level, message
    error     code, message (one line that says how to fix it), fatal
    bye       exit_code, reason
Commands: {"cmd": "pause", "when": "now" | "step"}, {"cmd": "resume"}, {"cmd": "stop"}.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Final, Literal

PROTOCOL_VERSION: Final = 1
EVENT_TYPES: Final = ("hello", "state", "progress", "log", "error", "bye")
# "restarting" and "failed" come from the supervisor, the others from the worker.
STATES: Final = (
    "starting",
    "connecting",
    "training",
    "pausing",
    "paused",
    "stopping",
    "stopped",
    "restarting",
    "failed",
)
COMMANDS: Final = ("pause", "resume", "stop")

# Worker exit codes. The supervisor restarts a worker that crashed, never one that was given bad input.
EXIT_OK: Final = 0
EXIT_CRASH: Final = 1
EXIT_BAD_INPUT: Final = 2
PauseWhen = Literal["now", "step"]

Event = dict[str, Any]


def make_event(type_: str, **fields: Any) -> Event:
    """An event dict ready for :func:`encode`."""
    return {"v": PROTOCOL_VERSION, "type": type_, "time": round(time.time(), 3), **fields}


def encode(event: Event) -> str:
    """One line of JSON, newline included; NaN and infinities become null (JSON has neither)."""
    try:
        text = json.dumps(event, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(event), separators=(",", ":"), allow_nan=False, default=str)
    return text + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def decode(line: str | bytes) -> Event | None:
    """The event on ``line``, or None for anything that is not a JSON object with a string ``type``."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return None
    return value


def make_command(cmd: str, **fields: Any) -> str:
    if cmd not in COMMANDS:
        raise ValueError(f"unknown worker command {cmd!r}; expected one of {', '.join(COMMANDS)}")
    return json.dumps({"cmd": cmd, **fields}) + "\n"


def decode_command(line: str) -> dict[str, Any] | None:
    """The command on ``line``, or None when it is not one the worker knows."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("cmd") not in COMMANDS:
        return None
    return value


class LineReader:
    """Turns chunks of a byte stream into events, keeping a partial last line for the next chunk."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [event for line in lines if (event := decode(line)) is not None]
