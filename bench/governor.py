"""The energy governor on this machine: a power limit that forces a 50% duty cycle, and what it reached.

    python bench/governor.py                  # 40 s unlimited, then 90 s at half the measured power
    python bench/governor.py --seconds 60

One real worker trains the glyphs recipe alone (a host's own worker, on 127.0.0.1, one thread). First
without a limit: its power (here the estimate from CPU time: no powercap or GPU on this machine) and
samples/s. Then with ``--power-limit`` at half that power: the duty cycle and power the governor
settles at, the samples/s it keeps (ratio to the unlimited run), the share of wall time spent
training (``utilisation``: the duty), and the time until the power stayed within the governor's band
(90-100% of the limit) for good. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def run(seconds: float, power_limit: str | None, home: Path) -> list[dict[str, Any]]:
    """Progress events of one worker over ``seconds`` of training (from its first progress event)."""
    from hiveling.core.recipes import find_recipe
    from hiveling.core.run import RunSpec
    from hiveling.core.worker.command import WorkerOptions
    from hiveling.core.worker.supervisor import Supervisor

    recipe = find_recipe("glyphs")
    spec = RunSpec(
        run_id=uuid.uuid4().hex[:12],
        run_name="governor bench",
        recipe=recipe.name,
        recipe_version=recipe.version,
        target_batch_size=256,
    )
    events: list[dict[str, Any]] = []
    first = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "progress":
            event["at"] = time.monotonic()
            events.append(event)
            first.set()
        elif event.get("type") == "error":
            print(json.dumps({"error": event.get("message")}), file=sys.stderr)

    options = WorkerOptions(
        run_spec=spec,
        role="host",
        device="cpu",
        batch_size=32,
        cpu_threads=1,
        listen=("/ip4/127.0.0.1/tcp/0",),
        progress_interval=1.0,
        power_limit=power_limit,
        env={"HIVELING_HOME": str(home)},
    )
    supervisor = Supervisor(options, on_event)
    supervisor.start()
    try:
        if not first.wait(180):
            raise RuntimeError("the worker did not start training within 180 s")
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(0.5)
    finally:
        supervisor.stop()
    return [e for e in events if e["at"] - events[0]["at"] >= 4.0]  # past the first reports' start-up


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-seconds", type=float, default=40.0, help="unlimited run (40)")
    parser.add_argument("--seconds", type=float, default=90.0, help="limited run (90)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hiveling-governor-") as folder:
        free = run(args.baseline_seconds, None, Path(folder) / "free")
        watts = statistics.median(e["power_w"] for e in free if e.get("power_w") is not None)
        sps = statistics.median(e["local_sps"] for e in free)
        limit = round(watts / 2, 2)
        limited = run(args.seconds, f"{limit}W", Path(folder) / "limited")
    t0 = limited[0]["at"]
    inside = [limit * 0.85 <= (e.get("power_w") or 0) <= limit * 1.05 for e in limited]
    settled_index = next((i for i in range(len(inside)) if all(inside[i:])), None)
    settle_s = None if settled_index is None else round(limited[settled_index]["at"] - t0, 1)
    after = limited[settled_index:] if settled_index is not None else limited[len(limited) // 2 :]
    result = {
        "bench": "governor",
        "cpu_count": os.cpu_count(),
        "source": "estimate from CPU time (10 W per busy core)",
        "unlimited": {"power_w": round(watts, 2), "samples_per_s": round(sps, 1)},
        "limit_w": limit,
        "limited": {
            "power_w_median": round(statistics.median(e.get("power_w") or 0 for e in after), 2),
            "power_over_limit": round(statistics.median(e.get("power_w") or 0 for e in after) / limit, 3),
            "duty_median": statistics.median(e.get("duty") or 1.0 for e in after),
            "samples_per_s": round(statistics.median(e["local_sps"] for e in after), 1),
            "samples_ratio": round(statistics.median(e["local_sps"] for e in after) / sps, 3),
            "settle_s": settle_s,
            "reason": after[-1].get("governor"),
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
