"""The worker's command line: what it is asked to do, as arguments (no process is started here)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hiveling.core.run import RunSpec


@dataclass(frozen=True)
class WorkerOptions:
    """What the worker is asked to do; :func:`worker_command` turns it into a command line."""

    invite: str | None = None
    run_spec: RunSpec | None = None  # the host's own worker trains without an invite
    role: str = "volunteer"
    organizer_key: str | None = None  # the key file: the host's worker signs admission tokens
    device: str = "auto"
    batch_size: int | None = None
    memory_cap_gb: float | None = None
    cpu_threads: int | None = None
    listen: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    checkpoint_every: int | None = None
    max_step: int | None = None
    progress_interval: float = 2.0
    # The energy governor's limits (None: none).
    temperature_limit_c: float | None = None
    power_limit: str | None = None  # "120W" or "60%"
    daily_energy_wh: float | None = None
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def worker_command(options: WorkerOptions, executable: list[str] | None = None) -> list[str]:
    """The worker's command line (pure): ``executable`` with the worker's arguments; by default the same
    executable as ours, frozen builds included."""
    if executable is not None:
        cmd = list(executable)
    elif getattr(sys, "frozen", False):
        cmd = [sys.executable, "worker"]
    else:
        cmd = [sys.executable, "-m", "hiveling.core.worker"]
    if options.run_spec is not None:
        cmd += ["--run-spec", json.dumps(options.run_spec.to_dict(), separators=(",", ":"))]
    elif options.invite is not None:
        cmd += ["--invite", options.invite]
    else:
        raise ValueError("WorkerOptions needs an invite or a run_spec")
    cmd += ["--role", options.role, "--device", options.device]
    if options.organizer_key is not None:
        cmd += ["--organizer-key", options.organizer_key]
    for flag, value in (
        ("--batch-size", options.batch_size),
        ("--memory-cap-gb", options.memory_cap_gb),
        ("--cpu-threads", options.cpu_threads),
        ("--checkpoint-every", options.checkpoint_every),
        ("--max-step", options.max_step),
        ("--temperature-limit", options.temperature_limit_c),
        ("--power-limit", options.power_limit),
        ("--daily-energy-wh", options.daily_energy_wh),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    for addr in options.listen:
        cmd += ["--listen", addr]
    for addr in options.announce:
        cmd += ["--announce", addr]
    if options.progress_interval != 2.0:
        cmd += ["--progress-interval", str(options.progress_interval)]
    if options.strategy_options:
        cmd += ["--options", json.dumps(dict(options.strategy_options), separators=(",", ":"))]
    return cmd
