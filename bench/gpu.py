"""The CUDA paths, proved on a machine with an NVIDIA GPU in under five minutes; prints JSON.

    python bench/gpu.py            # every check; exit 0 when all passed
    python bench/gpu.py --only detect,pair

Checks, each with real workers (the same supervisor the tray and the CLI use):
- detect: ``hiveling devices`` finds the GPU, and the worker would train on it;
- pair: a host and a volunteer both on ``cuda:0`` (precision ``16-mixed``) take collaborative steps
  together and end with identical parameters;
- pause: "pause now" leaves the volunteer paused within 2 s with its cached device memory released;
- oom: a local batch far too large for the GPU is halved after each out-of-memory error until it fits,
  and training goes on;
- energy (with pair): the volunteer measures its GPU through NVML (not the CPU-time estimate), reports
  energy above zero and the GPU's temperature.
On a machine without CUDA every check reports ``skipped`` with the reason, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hiveling.core import Supervisor, WorkerOptions, detect_devices
from hiveling.core.commands.host import Host, HostOptions, free_port
from hiveling.core.recipes.catalog import GLYPHS

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
CHECKS = ("detect", "pair", "pause", "oom", "energy")


class Events:
    """A worker's events, kept, with a wait for the first one that matches."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.changed:
            self.items.append({**event, "seen": time.monotonic()})
            self.changed.notify_all()

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((e for e in self.items if match(e)), None)
                if found is not None or time.monotonic() >= deadline:
                    return found
                self.changed.wait(max(0.0, min(1.0, deadline - time.monotonic())))


def state(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == "state" and e.get("state") == name


def cuda_device() -> Any:
    return next((d for d in detect_devices() if d.kind == "cuda"), None)


def check_detect() -> dict[str, Any]:
    device = cuda_device()
    if device is None:
        return {"ok": False, "why": "no CUDA device detected"}
    return {"ok": True, "device": device.label, "free_gib": round((device.free_memory or 0) / 2**30, 1)}


def start_pair(root: Path, host_events: Events, volunteer_events: Events) -> tuple[Host, Supervisor]:
    host = Host(
        HostOptions(
            recipe="glyphs",
            run_name="gpu check",
            target_batch_size=1024,
            port=free_port(),
            local=True,
            device="cuda:0",
            progress_interval=0.5,
            env={"HIVELING_HOME": str(root / "host")},
        ),
        host_events,
        key_path=root / "organizer.key",
    )
    host.start()
    if not host.invite_ready.wait(120) or host.invite is None:
        host.stop()
        raise RuntimeError(f"the host did not start: {host.error}")
    volunteer = Supervisor(
        WorkerOptions(
            invite=host.invite.token,
            device="cuda:0",
            listen=LOOPBACK,
            progress_interval=0.5,
            env={"HIVELING_HOME": str(root / "volunteer")},
        ),
        volunteer_events,
    )
    volunteer.start()
    return host, volunteer


def check_pair_and_pause(root: Path, run_pause: bool) -> dict[str, dict[str, Any]]:
    host_events, volunteer_events = Events(), Events()
    host, volunteer = start_pair(root, host_events, volunteer_events)
    results: dict[str, dict[str, Any]] = {}
    try:
        hello = volunteer_events.wait(lambda e: e.get("type") == "hello", 120)
        together = volunteer_events.wait(
            lambda e: (
                e.get("type") == "progress" and (e.get("peers") or 0) >= 2 and (e.get("step") or 0) >= 3
            ),
            120,
        )
        results["pair"] = {
            "ok": together is not None,
            "volunteer_device": None if hello is None else hello.get("device"),
            "volunteer_batch": None if hello is None else hello.get("batch_size"),
            "step": None if together is None else together.get("step"),
        }
        if together is not None:
            results["energy"] = check_energy(hello, volunteer_events)
        if run_pause and together is not None:
            asked = time.monotonic()
            volunteer.pause("now")
            paused = volunteer_events.wait(state("paused"), 10)
            took = None if paused is None else round(paused["seen"] - asked, 2)
            held = None if paused is None else paused.get("device_memory_bytes")
            results["pause"] = {
                "ok": took is not None and took <= 2.0 and (held or 0) < 64 * 2**20,
                "seconds": took,
                "device_memory_bytes_after": held,
                "by": None if paused is None else paused.get("source", "worker"),
            }
            volunteer.resume()
            volunteer_events.wait(lambda e: e.get("type") == "progress" and e["seen"] > asked + 1, 60)
    finally:
        for stop in (volunteer.stop, host.stop):
            stop()
    prints = [
        next((e.get("fingerprints") for e in reversed(events.items) if e.get("fingerprints")), None) or {}
        for events in (host_events, volunteer_events)
    ]
    common = sorted(set(prints[0]) & set(prints[1]), key=int)
    if "pair" in results:
        if common:
            a, b = prints[0][common[-1]], prints[1][common[-1]]
            difference = max(abs(x - y) for x, y in zip(a, b, strict=True)) / (1 + abs(a[1]))
            results["pair"]["relative_difference"] = difference
            results["pair"]["ok"] = results["pair"]["ok"] and difference <= 1e-6
        else:
            results["pair"]["ok"] = False
            results["pair"]["why"] = "no collaborative step reported by both"
    return results


def check_energy(hello: dict[str, Any] | None, events: Events) -> dict[str, Any]:
    """NVML measures the training GPU: energy above zero, a temperature, the source said so."""
    latest = events.wait(
        lambda e: (
            e.get("type") == "progress" and (e.get("energy_wh") or 0) > 0 and bool(e.get("temperatures"))
        ),
        30,
    )
    source = None if hello is None else hello.get("energy_source")
    return {
        "ok": latest is not None and bool(source) and "NVML" in str(source),
        "source": source,
        "energy_wh": None if latest is None else latest.get("energy_wh"),
        "power_w": None if latest is None else latest.get("power_w"),
        "temperatures": None if latest is None else latest.get("temperatures"),
        "estimated": None if latest is None else latest.get("energy_estimated"),
    }


def check_oom(root: Path) -> dict[str, Any]:
    events = Events()
    device = cuda_device()
    free = device.free_memory or device.total_memory or 0
    per_sample = GLYPHS.needs.bytes_per_sample
    batch = 1 << max(10, (2 * free // per_sample).bit_length())  # two to four times what fits
    with tempfile.TemporaryDirectory(dir=root) as folder:
        host = Host(
            HostOptions(
                recipe="glyphs",
                run_name="oom check",
                port=free_port(),
                local=True,
                device="cuda:0",
                batch_size=batch,
                progress_interval=0.5,
                env={"HIVELING_HOME": folder},
            ),
            events,
            key_path=Path(folder) / "organizer.key",
        )
        host.start()
        try:
            trained = events.wait(lambda e: e.get("type") == "progress", 240)
        finally:
            host.stop()
    retries = [e["message"] for e in events.items if "out of device memory" in str(e.get("message"))]
    return {
        "ok": trained is not None and bool(retries),
        "asked_batch": batch,
        "trained_batch": None if trained is None else trained.get("batch_size"),
        "retries": retries,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated: {', '.join(CHECKS)}")
    wanted = set(parser.parse_args().only.split(","))
    started = time.monotonic()
    results: dict[str, Any] = {}
    if cuda_device() is None:
        results = {name: {"ok": None, "skipped": "no CUDA device on this machine"} for name in wanted}
    else:
        with tempfile.TemporaryDirectory(prefix="hiveling-gpu-") as folder:
            root = Path(folder)
            if "detect" in wanted:
                results["detect"] = check_detect()
            if wanted & {"pair", "pause", "energy"}:
                results.update(check_pair_and_pause(root, "pause" in wanted))
            if "oom" in wanted:
                results["oom"] = check_oom(root)
    results["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))
    return 0 if all(r.get("ok") is not False for r in results.values() if isinstance(r, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
