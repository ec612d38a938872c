"""Whether a TCP port is free here, and which process holds it when it is not (Linux's /proc)."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # the state column of /proc/net/tcp


@dataclass(frozen=True)
class PortHolder:
    pid: int
    command: str  # its command line, shortened
    #: The process that started it, and so on up (hivemind's daemon is its worker's child).
    parents: tuple[tuple[int, str], ...] = ()

    @property
    def hiveling_host(self) -> int | None:
        """The PID of the Hiveling host worker this port belongs to, if it does."""
        for pid, command in ((self.pid, self.command), *self.parents):
            if "hiveling.core.worker" in command and "--role host" in command:
                return pid
        return None


def port_in_use(address: str, port: int) -> bool:
    """Whether binding ``address:port`` fails because something listens there.

    A plain bind, without SO_REUSEPORT: hivemind's daemon sets it, so two daemons can both listen on
    one port, and only a bind like this one notices the first.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def port_holder(port: int, proc: Path = Path("/proc")) -> PortHolder | None:
    """The process listening on TCP ``port``, where /proc tells (Linux, and processes we may see)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        if _open_sockets(entry) & inodes:
            pid = int(entry.name)
            parents: list[tuple[int, str]] = []
            parent = _parent(proc, pid)
            while parent > 1 and len(parents) < 3:
                parents.append((parent, _command(proc, parent)))
                parent = _parent(proc, parent)
            return PortHolder(pid, _command(proc, pid), tuple(parents))
    return None


def _command(proc: Path, pid: int) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return (
        raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:4096]
    )  # a run spec comes before the role


def _parent(proc: Path, pid: int) -> int:
    try:
        return int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _open_sockets(process: Path) -> set[str]:
    found: set[str] = set()
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:  # gone, or not ours to see
        return found
    for descriptor in descriptors:
        try:
            found.add(str(descriptor.readlink()))
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
    return found
