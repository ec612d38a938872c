"""Faults a volunteer swarm meets, on simulated hosts: does the run hold?

    python bench/faults.py                       # every scenario
    python bench/faults.py --scenario worker-killed --mbit 50

Root only. A host and two headless volunteers run through the real CLI (glyphs recipe, target batch
256, local batch 32, one CPU thread each), each on its own host of bench/netlab.py's lab with a shaped
link. Prints one JSON object per scenario, ``{"scenario", "held", "seconds", "detail"}``, and exits
non-zero if any did not hold.

- ``worker-killed``: kill -9 of a volunteer's worker while the swarm trains. Holds if the host takes a
  collaborative step within 10 s of the kill, its step rate over the 30 s after the kill is at least
  0.7 of the 30 s before, and the restarted worker is back at the swarm's step within 60 s.
- ``cli-killed``: kill -9 of a volunteer's CLI alone (its supervisor). Holds if none of its processes
  (worker, p2pd, averagers) runs 10 s later, and it starts again at once from the same folder.
- ``host-killed``: kill -9 of the host's whole machine. Holds if every volunteer says within 10 s that
  the host is gone, and the volunteers go on stepping together.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import netlab  # noqa: E402

PORT = 31330
Event = dict[str, Any]


class Command:
    """A `hiveling` command on a lab node; its JSON events are collected with their arrival time."""

    def __init__(self, node: netlab.Node, args: list[str], home: Path) -> None:
        self.node = node
        env = dict(os.environ, HIVELING_HOME=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.process = node.start(
            [sys.executable, "-m", "hiveling.core.commands.cli", *args],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        self.events: list[Event] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if isinstance(event, dict):
                    event["received"] = time.time()
                    with self._changed:
                        self.events.append(event)
                        self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float, after: float = 0.0
    ) -> Event | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = next((e for e in self.events if e["received"] >= after and predicate(e)), None)
                if match is not None or time.monotonic() >= deadline:
                    return match
                self._changed.wait(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))

    def step_at(self, moment: float) -> int | None:
        """The step of the last progress event received by ``moment``."""
        steps = [e["step"] for e in self.events if e.get("type") == "progress" and e["received"] <= moment]
        return steps[-1] if steps else None


def is_progress(event: Event) -> bool:
    return event.get("type") == "progress" and isinstance(event.get("step"), int)


class Swarm:
    """A host and volunteers on the lab's nodes, each with its own HIVELING_HOME."""

    def __init__(self, lab: netlab.Lab, folder: Path, volunteers: int, mbit: float) -> None:
        self.lab, self.folder = lab, folder
        node = lab.add_node("host", up_mbit=mbit, down_mbit=mbit)
        address = f"/ip4/{node.address}/tcp/{PORT}"
        self.host = Command(
            node,
            ["host", "--recipe", "glyphs", "--json", "--port", str(PORT), "--announce", address,
             "--target-batch-size", "256", "--batch-size", "32", "--cpu-threads", "1",
             "--progress-interval", "0.5"],
            folder / "host",
        )  # fmt: skip
        invite = self.host.wait_for(lambda e: e.get("type") == "invite", timeout=120)
        if invite is None:
            raise RuntimeError("the host printed no invite within 120 s")
        self.invite = str(invite["token"])
        self.volunteers = [
            self.start_volunteer(lab.add_node(f"volunteer{i}", up_mbit=mbit, down_mbit=mbit), f"volunteer{i}")
            for i in range(volunteers)
        ]

    def start_volunteer(self, node: netlab.Node, name: str) -> Command:
        return Command(
            node,
            ["--headless", "--invite", self.invite, "--json", "--cpu-threads", "1", "--batch-size", "32",
             "--listen", f"/ip4/{node.address}/tcp/0", "--progress-interval", "0.5"],
            self.folder / name,
        )  # fmt: skip

    def wait_until_all_train(self, timeout: float = 180) -> bool:
        everyone = 1 + len(self.volunteers)
        return (
            self.host.wait_for(lambda e: is_progress(e) and e.get("peers", 0) >= everyone, timeout)
            is not None
        )


def worker_pids(node: netlab.Node) -> list[int]:
    found = []
    for pid in node.pids():
        with contextlib.suppress(OSError):
            if b"hiveling.core.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def rate(command: Command, start: float, end: float) -> float:
    first, last = command.step_at(start), command.step_at(end)
    return 0.0 if first is None or last is None else (last - first) / (end - start)


def worker_killed(swarm: Swarm) -> dict[str, Any]:
    if not swarm.wait_until_all_train():
        return {"held": False, "detail": "the swarm never trained with all its peers"}
    time.sleep(30)  # the rate before the kill
    victim = swarm.volunteers[0]
    pids = worker_pids(victim.node)
    killed_at = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    step = swarm.host.step_at(killed_at) or 0
    next_step = swarm.host.wait_for(
        lambda e: is_progress(e) and e["step"] > step, timeout=60, after=killed_at
    )
    to_next = None if next_step is None else next_step["received"] - killed_at
    time.sleep(max(0.0, killed_at + 30 - time.time()))
    before = rate(swarm.host, killed_at - 30, killed_at)
    after = rate(swarm.host, killed_at, killed_at + 30)
    now_step = swarm.host.step_at(time.time()) or 0
    back = victim.wait_for(
        lambda e: is_progress(e) and e["step"] >= now_step - 1,
        timeout=max(1.0, killed_at + 60 - time.time()),
        after=killed_at,
    )
    ghost = [e["peers"] for e in swarm.host.events if is_progress(e) and killed_at + 10 < e["received"]]
    held = bool(to_next is not None and to_next <= 10 and before > 0 and after >= 0.7 * before and back)
    return {
        "held": held,
        "seconds": None if to_next is None else round(to_next, 1),
        "detail": {
            "killed_pids": pids,
            "steps_per_s_before": round(before, 3),
            "steps_per_s_after": round(after, 3),
            "ratio": round(after / before, 2) if before else None,
            "restarted_worker_caught_up_s": None if back is None else round(back["received"] - killed_at, 1),
            "host_peer_counts_after_10s": sorted(set(ghost)),
        },
    }


def cli_killed(swarm: Swarm) -> dict[str, Any]:
    if not swarm.wait_until_all_train():
        return {"held": False, "detail": "the swarm never trained with all its peers"}
    victim = swarm.volunteers[0]
    killed_at = time.time()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    deadline = killed_at + 10
    left = victim.node.pids()
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = victim.node.pids()
    gone_after = time.time() - killed_at
    names = {}
    for pid in left:
        with contextlib.suppress(OSError):
            names[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    again = swarm.start_volunteer(victim.node, "volunteer0")
    restarted_at = time.time()
    training = again.wait_for(lambda e: is_progress(e) and e.get("peers", 0) >= 2, timeout=90)
    return {
        "held": not left and training is not None,
        "seconds": round(gone_after, 1),
        "detail": {
            "left_running_after_10s": names,
            "restart_trains_with_others_after_s": None
            if training is None
            else round(training["received"] - restarted_at, 1),
        },
    }


def host_killed(swarm: Swarm) -> dict[str, Any]:
    if not swarm.wait_until_all_train():
        return {"held": False, "detail": "the swarm never trained with all its peers"}
    time.sleep(10)
    killed_at = time.time()
    swarm.host.node.kill()

    def says_host_gone(event: Event) -> bool:
        text = json.dumps(event).lower()
        return event.get("type") in ("log", "state", "error") and "host" in text

    told = [v.wait_for(says_host_gone, timeout=max(0.5, killed_at + 10 - time.time()), after=killed_at)
            for v in swarm.volunteers]  # fmt: skip
    time.sleep(max(0.0, killed_at + 40 - time.time()))
    rates = [rate(v, killed_at + 10, killed_at + 40) for v in swarm.volunteers]
    return {
        "held": all(told) and all(r > 0 for r in rates),
        "seconds": None,
        "detail": {
            "volunteers_told_within_10s": [t is not None for t in told],
            "what_they_said": [
                None if t is None else {k: t.get(k) for k in ("type", "state", "message")} for t in told
            ],  # fmt: skip
            "volunteer_steps_per_s_10_to_40s_after": [round(r, 3) for r in rates],
        },
    }


SCENARIOS = {"worker-killed": worker_killed, "cli-killed": cli_killed, "host-killed": host_killed}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--mbit", type=float, default=50.0, help="each link's rate, both ways (50)")
    args = parser.parse_args()
    why = netlab.unavailable()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    failed = 0
    for name in args.scenario or list(SCENARIOS):
        began = time.time()
        with tempfile.TemporaryDirectory() as folder, netlab.Lab() as lab:
            swarm = Swarm(lab, Path(folder), volunteers=2, mbit=args.mbit)
            outcome = SCENARIOS[name](swarm)
            for command in [swarm.host, *swarm.volunteers]:
                with contextlib.suppress(ProcessLookupError):
                    command.process.send_signal(signal.SIGINT)
            lab_description = lab.describe()["delay_and_loss"]
        result = {"scenario": name, "held": outcome["held"], "seconds": outcome.get("seconds")}
        result |= {"detail": outcome["detail"], "lab": lab_description, "took_s": round(time.time() - began)}
        print(json.dumps(result), flush=True)
        failed += not outcome["held"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
