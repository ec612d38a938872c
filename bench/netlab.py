"""The internet on one machine: every peer on its own simulated host, with a shaped home link.

    with Lab() as lab:
        host = lab.add_node("host", up_mbit=50, down_mbit=50)
        process = host.start(["hiveling", "host", ...])
        lab.cut(host); lab.restore(host); host.kill()

Each node is a Linux network namespace with one interface, ``eth0`` (10.77.0.N/24), whose other end
sits in the lab's own "switch" namespace, attached to a bridge. Nothing is added to the machine's own
namespace, and every address a peer can reach belongs to a namespace the lab created.

Shaping uses token buckets (``tbf``), the kernel's own: a node's upload on its ``eth0``, its download
on the switch's end of its link (where packets leave the bridge toward it), so no ``ifb`` is needed.
Delay and loss need ``netem``; where the kernel has none (``Lab.has_netem``), they are not simulated,
and every result must say so (``Lab.describe``).

A cut link drops every packet silently in both directions (the switch's end leaves the bridge), as a
dead home router does: the peer's sockets see no error, only silence. ``restore`` puts it back.

Tearing down kills every process in the lab's namespaces and deletes the namespaces, which deletes
their interfaces and queues: on exit of the ``with`` block, on an exception, on Ctrl-C and on SIGTERM.
Namespaces left by a lab whose process was killed with SIGKILL are removed by the next lab
(``remove_stale``). Root only; ``unavailable()`` says why a lab cannot run here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

PREFIX = "hvl"
SUBNET = "10.77.0"


def unavailable() -> str | None:
    """Why a lab cannot run on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, as CI does)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian: apt-get install iproute2)"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


def _tc(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["tc", "-n", namespace, *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"tc -n {namespace} {' '.join(args)}: {done.stderr.strip()}")
    return done


def lab_namespaces(owner: int | None = None) -> list[str]:
    """Namespaces of the lab run by ``owner`` (a PID), or of every lab."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    mark = f"{PREFIX}{owner}-" if owner is not None else PREFIX
    return [name for name in names if name.startswith(mark) and "-" in name]


def _owner(namespace: str) -> int | None:
    head = namespace.removeprefix(PREFIX).split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _kill_namespace(namespace: str) -> None:
    """Kill every process in ``namespace``, then delete it (its interfaces and queues go with it)."""
    for _ in range(20):
        listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        pids = [int(pid) for pid in listed.stdout.split() if pid.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


def remove_stale() -> list[str]:
    """Remove the namespaces of labs whose process is gone (one killed with SIGKILL); their names."""
    stale = []
    for namespace in lab_namespaces():
        owner = _owner(namespace)
        if owner is not None and not Path(f"/proc/{owner}").exists():
            _kill_namespace(namespace)
            stale.append(namespace)
    return stale


def _burst_bytes(mbit: float) -> int:
    # At least 10 ms of traffic, and never under a few full-size packets: a smaller bucket cannot
    # reach its rate with the kernel's timer granularity.
    return max(int(mbit * 1e6 / 8 / 100), 4 * 1514)


@dataclass
class Node:
    """One simulated host: a namespace with one shaped link to the lab's switch."""

    lab: Lab
    name: str
    index: int
    namespace: str
    up_mbit: float | None
    down_mbit: float | None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}"

    @property
    def switch_port(self) -> str:
        return f"p{self.index}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this node's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def start(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        stdout: IO[Any] | int | None = subprocess.PIPE,
        stderr: IO[Any] | int | None = None,
        stdin: IO[Any] | int | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this node (its own session, so that ``kill`` reaches its whole tree)."""
        process = subprocess.Popen(
            self.command(argv), env=env, stdout=stdout, stderr=stderr, stdin=stdin, start_new_session=True
        )
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)

    def pids(self) -> list[int]:
        """Every process running in this node's namespace."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split() if pid.isdigit()]

    def kill(self) -> None:
        """kill -9 of everything running on this node, as when its power goes."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            if process.poll() is None:  # still entering the namespace: not in its list yet
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def shape(self, up_mbit: float | None, down_mbit: float | None) -> None:
        """Limit this node's upload and download (None: unlimited, the veth's own speed)."""
        self.up_mbit, self.down_mbit = up_mbit, down_mbit
        for namespace, device, mbit in (
            (self.namespace, "eth0", up_mbit),
            (self.lab.switch, self.switch_port, down_mbit),
        ):
            _tc(namespace, "qdisc", "del", "dev", device, "root", check=False)
            if mbit is None:
                continue
            _tc(
                namespace, "qdisc", "add", "dev", device, "root", "tbf",
                "rate", f"{mbit}mbit", "burst", str(_burst_bytes(mbit)), "latency", "100ms",
            )  # fmt: skip

    def delay(self, milliseconds: float, loss_percent: float = 0.0) -> None:
        """Add one-way delay (and loss) to this node's upload; needs netem (``Lab.has_netem``)."""
        if not self.lab.has_netem:
            raise RuntimeError("this kernel has no netem: delay and loss cannot be simulated here")
        rate = [] if self.up_mbit is None else ["rate", f"{self.up_mbit}mbit"]
        _tc(self.namespace, "qdisc", "del", "dev", "eth0", "root", check=False)
        _tc(
            self.namespace, "qdisc", "add", "dev", "eth0", "root", "netem",
            "delay", f"{milliseconds}ms", "loss", f"{loss_percent}%", *rate,
        )  # fmt: skip


class Lab:
    """Namespaces joined by a bridge; torn down on exit, on an exception, on Ctrl-C and on SIGTERM."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.switch = f"{PREFIX}{self.owner}-sw"
        self.nodes: dict[str, Node] = {}
        self.has_netem = False
        self._previous_term: Any = None
        self._up = False

    def __enter__(self) -> Lab:
        why = unavailable()
        if why:
            raise RuntimeError(f"cannot build the network lab: {why}")
        remove_stale()
        self._previous_term = signal.getsignal(signal.SIGTERM)
        if threading_is_main():
            signal.signal(signal.SIGTERM, _raise_interrupt)  # teardown runs as for Ctrl-C
        self._up = True
        try:
            _ip("netns", "add", self.switch)
            _ip("link", "set", "lo", "up", namespace=self.switch)
            _ip("link", "add", "br0", "type", "bridge", namespace=self.switch)
            _ip("link", "set", "br0", "up", namespace=self.switch)
            self.has_netem = self._probe_netem()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _probe_netem(self) -> bool:
        done = _tc(self.switch, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
        if done.returncode == 0:
            _tc(self.switch, "qdisc", "del", "dev", "lo", "root", check=False)
        return done.returncode == 0

    def add_node(self, name: str, up_mbit: float | None = None, down_mbit: float | None = None) -> Node:
        """A new host on the lab's switch, with its upload and download limited as given."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists already")
        index = len(self.nodes) + 1
        if index > 250:
            raise ValueError("a lab holds at most 250 nodes")
        node = Node(self, name, index, f"{PREFIX}{self.owner}-n{index}", None, None)
        self.nodes[name] = node
        _ip("netns", "add", node.namespace)
        _ip("link", "set", "lo", "up", namespace=node.namespace)
        # Both ends are created inside the lab's namespaces: nothing appears in the machine's own.
        _ip(
            "link", "add", node.switch_port, "type", "veth", "peer", "name", "eth0", "netns", node.namespace,
            namespace=self.switch,
        )  # fmt: skip
        _ip("link", "set", node.switch_port, "master", "br0", "up", namespace=self.switch)
        _ip("addr", "add", f"{node.address}/24", "dev", "eth0", namespace=node.namespace)
        _ip("link", "set", "eth0", "up", namespace=node.namespace)
        node.shape(up_mbit, down_mbit)
        return node

    def cut(self, node: Node) -> None:
        """Drop every packet to and from ``node``, silently (its link leaves the bridge)."""
        _ip("link", "set", node.switch_port, "nomaster", namespace=self.switch)

    def restore(self, node: Node) -> None:
        _ip("link", "set", node.switch_port, "master", "br0", namespace=self.switch)

    def describe(self) -> dict[str, Any]:
        """What the lab simulates, for every result it produces."""
        return {
            "links": {n.name: {"up_mbit": n.up_mbit, "down_mbit": n.down_mbit} for n in self.nodes.values()},
            "shaping": "tbf on each end of a veth pair (upload at the node, download at the switch)",
            "delay_and_loss": "netem available"
            if self.has_netem
            else "not simulated: this kernel has no netem",
        }

    def close(self) -> None:
        if not self._up:
            return
        self._up = False
        for node in self.nodes.values():
            _kill_namespace(node.namespace)
            for process in node.processes:
                # One started a moment ago may not have entered the namespace yet (`ip netns exec` is
                # still starting): the namespace's list of processes misses it, its own group does not.
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        _kill_namespace(self.switch)
        if threading_is_main() and self._previous_term is not None:
            signal.signal(signal.SIGTERM, self._previous_term)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
