"""Where the worker process runs: on this machine, or inside WSL2 when this machine runs Windows.

hivemind's daemon has no Windows build, so on Windows the tray runs natively and the worker runs in a
WSL2 distribution, started through ``wsl.exe``. The supervisor asks its launcher for the command line,
the environment and how to signal the worker; the worker's events and commands do not change, since
``wsl.exe`` carries stdin, stdout and stderr through. A worker takes its stdin closing as ``stop``, so
ending ``wsl.exe`` ends the worker inside; a worker that hangs is killed inside the distribution.

What this module does not do (see ``packaging/README.md``): install WSL, a distribution or Hiveling
inside it. It finds what is there and says in one line what is missing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Any, Protocol

from hiveling.core.worker.command import WorkerOptions, worker_command


class Launcher(Protocol):
    """How the supervisor starts and signals a worker."""

    def command(self, options: WorkerOptions) -> list[str]: ...

    def environment(self, options: WorkerOptions, base: dict[str, str]) -> dict[str, str]: ...

    def popen_options(self) -> dict[str, Any]: ...

    def signal(self, process: subprocess.Popen[bytes], sig: int) -> None: ...


class LocalLauncher:
    """The worker is a child process of this one, in its own process group (with its p2pd)."""

    def command(self, options: WorkerOptions) -> list[str]:
        return worker_command(options)

    def environment(self, options: WorkerOptions, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PYTHONUNBUFFERED": "1", **options.env}

    def popen_options(self) -> dict[str, Any]:
        return {"start_new_session": True}  # the worker and its p2pd daemon are signalled as one group

    def signal(self, process: subprocess.Popen[bytes], sig: int) -> None:
        os.killpg(process.pid, sig)


class WslError(Exception):
    """WSL cannot run the worker; the message says what to do."""


@dataclass(frozen=True)
class WslDistribution:
    name: str
    state: str  # "Running", "Stopped", ...
    version: int  # 1 or 2
    default: bool


@dataclass(frozen=True)
class WslLauncher:
    """The worker runs in a WSL2 distribution where Hiveling is installed for ``python``."""

    distribution: str
    python: str = "python3"
    wsl: str = "wsl.exe"

    def command(self, options: WorkerOptions) -> list[str]:
        inner = worker_command(options, executable=[self.python, "-m", "hiveling.core.worker"])
        variables = {"PYTHONUNBUFFERED": "1", **{k: wsl_value(v) for k, v in options.env.items()}}
        assignments = [f"{name}={value}" for name, value in sorted(variables.items())]
        # `env` sets the worker's variables inside the distribution: Windows' own are not passed in.
        return [
            self.wsl,
            "--distribution",
            self.distribution,
            "--cd",
            "~",
            "--exec",
            "env",
            *assignments,
            *inner,
        ]

    def environment(self, options: WorkerOptions, base: dict[str, str]) -> dict[str, str]:
        return dict(base)  # wsl.exe's own environment; the worker's is in the command line

    def popen_options(self) -> dict[str, Any]:
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        return {"creationflags": flags} if flags else {}

    def kill_command(self) -> list[str]:
        """Kills every Hiveling worker of this user in the distribution (one runs per machine)."""
        return [
            self.wsl,
            "--distribution",
            self.distribution,
            "--exec",
            "pkill",
            "-KILL",
            "-f",
            "hiveling.core.worker",
        ]

    def signal(self, process: subprocess.Popen[bytes], sig: int) -> None:
        # Ending wsl.exe closes the worker's stdin, which the worker takes as "stop".
        process.terminate()
        if sig == getattr(signal, "SIGKILL", 9):
            subprocess.run(self.kill_command(), capture_output=True, timeout=30, check=False)


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_WSL_SHARE = re.compile(r"^\\\\wsl(?:\$|\.localhost)\\[^\\]+(\\.*)?$", re.IGNORECASE)


def to_wsl_path(path: str) -> str:
    r"""A Windows path as the distribution sees it: ``C:\Users\ann`` is ``/mnt/c/Users/ann``, and
    ``\\wsl$\Ubuntu\home\ann`` (or ``\\wsl.localhost\...``) is ``/home/ann``."""
    share = _WSL_SHARE.match(path)
    if share:
        return (share.group(1) or "\\").replace("\\", "/")
    if _DRIVE.match(path):
        windows = PureWindowsPath(path)
        drive = windows.drive[0].lower()
        return "/".join([f"/mnt/{drive}", *windows.parts[1:]])
    return path


def wsl_value(value: str) -> str:
    """An environment value for the worker inside WSL: Windows paths translated, others as they are."""
    return to_wsl_path(value) if _DRIVE.match(value) or _WSL_SHARE.match(value) else value


def parse_distributions(raw: bytes) -> list[WslDistribution]:
    """``wsl.exe --list --verbose`` (UTF-16 on Windows) as distributions; empty when there are none."""
    text = (
        raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:4] else raw.decode()
    )
    distributions = []
    for line in text.replace("\x00", "").splitlines()[1:]:
        default = line.lstrip().startswith("*")
        fields = line.replace("*", " ", 1).split()
        if len(fields) >= 3 and fields[-1].isdigit():
            distributions.append(WslDistribution(" ".join(fields[:-2]), fields[-2], int(fields[-1]), default))
    return distributions


def choose_distribution(distributions: list[WslDistribution], wanted: str | None = None) -> WslDistribution:
    """The distribution to run the worker in: ``wanted``, else the default, else the first WSL2 one."""
    if not distributions:
        raise WslError(
            "WSL has no Linux distribution: run `wsl --install -d Ubuntu` in PowerShell, restart, then "
            "start Hiveling again"
        )
    if wanted is not None:
        chosen = next((d for d in distributions if d.name.lower() == wanted.lower()), None)
        if chosen is None:
            names = ", ".join(d.name for d in distributions)
            raise WslError(f"WSL has no distribution {wanted!r} (it has {names}): choose one of those")
    else:
        candidates = [d for d in distributions if d.version == 2]
        chosen = next((d for d in candidates if d.default), candidates[0] if candidates else distributions[0])
    if chosen.version != 2:
        raise WslError(
            f"the WSL distribution {chosen.name} runs under WSL 1, which has no GPU and no Linux networking: "
            f"run `wsl --set-version {chosen.name} 2` in PowerShell"
        )
    return chosen


def default_launcher() -> Launcher:
    """The launcher for this machine: a local process, or on Windows a worker in WSL2."""
    if sys.platform != "win32":
        return LocalLauncher()
    try:
        listed = subprocess.run(
            ["wsl.exe", "--list", "--verbose"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        raise WslError(
            "Hiveling trains inside WSL2 on Windows, and WSL is not installed: run `wsl --install` in an "
            "administrator PowerShell, restart, then start Hiveling again"
        ) from None
    chosen = choose_distribution(
        parse_distributions(listed.stdout), os.environ.get("HIVELING_WSL_DISTRIBUTION")
    )
    return WslLauncher(chosen.name)
