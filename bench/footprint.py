"""What a peer costs its machine beyond the training: processes, memory and CPU time, from /proc.

A peer is its training process and everything it started: hivemind's DHT and averager processes
(forked children) and the p2pd daemon. ``take`` reads them all; ``compare`` turns two readings into
per-peer figures over the window between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Process:
    pid: int
    name: str
    cpu_s: float  # user + system, since it started
    pss_mb: float  # proportional set size: shared pages split among their sharers


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _read(pid: int) -> Process | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    pss_kb = next((float(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0.0)
    return Process(pid, name, (int(fields[11]) + int(fields[12])) / TICK, pss_kb / 1024)


def take(root: int) -> dict[int, Process]:
    """The peer whose training process is ``root``: it and all its descendants, by pid."""
    tree, found, stack = _children(), [root], [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return {pid: process for pid in found if (process := _read(pid)) is not None}


def compare(before: dict[int, Process], after: dict[int, Process], root: int, steps: int) -> dict[str, Any]:
    """One peer's footprint over the window between two readings, ``steps`` collaborative steps long.

    CPU time counts the processes alive at both readings (a process that came or went in between is
    left out); memory is the second reading's.
    """
    spent = {pid: after[pid].cpu_s - before[pid].cpu_s for pid in after if pid in before}
    training = spent.get(root, 0.0)
    outside = sum(seconds for pid, seconds in spent.items() if pid != root)
    kinds: dict[str, int] = {}
    for pid, process in after.items():
        kind = "training" if pid == root else "p2pd" if process.name == "p2pd" else "helper"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "processes": kinds,
        "pss_mb": round(sum(p.pss_mb for p in after.values()), 1),
        "pss_mb_outside_training": round(sum(p.pss_mb for pid, p in after.items() if pid != root), 1),
        "cpu_s_training": round(training, 2),
        "cpu_s_outside_training": round(outside, 2),
        "cpu_share_outside_training": round(outside / max(training + outside, 1e-9), 3),
        "cpu_s_outside_training_per_step": round(outside / steps, 3) if steps else None,
    }
