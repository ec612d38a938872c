"""What the low-communication mode learns, against the synchronous mode, per sample trained.

    python bench/quality.py                       # glyphs and charlm, 240 s each mode, on 127.0.0.1
    python bench/quality.py --recipe glyphs --seconds 120 --local-steps 10

Runs `hiveling demo` (a host and two volunteers on loopback) once per mode and follows the host's
training loss (its running average) and held-out accuracy against the samples all three peers have
trained. ``loss_ratio`` is the local mode's loss over the synchronous mode's at the largest sample
count both runs reached (below 1: the local mode learned more from as many samples). In the local
mode the host's loss and accuracy are those of its local parameters, as a volunteer sees them.
Prints one JSON object per recipe and writes bench/quality-<recipe>.png.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def total_samples(members: list[Any]) -> list[tuple[float, float]]:
    """(seconds, samples all peers trained by then), at the host's reports."""

    def at(history: list[tuple[float, int]], when: float) -> float:
        times = [t for t, _ in history]
        index = bisect.bisect_right(times, when) - 1
        return float(history[index][1]) if index >= 0 else 0.0

    host = members[0]
    return [(t, sum(at(m.samples_history, t) for m in members)) for t, _ in host.samples_history]


def curve(members: list[Any]) -> list[tuple[float, float, float | None]]:
    """(samples, loss, accuracy) of the host over the run."""
    host = members[0]
    points = []
    for (_, samples), (_, loss, accuracy) in zip(total_samples(members), host.history, strict=True):
        if loss is not None:
            points.append((samples, loss, accuracy))
    return points


def value_at(points: list[tuple[float, float, float | None]], samples: float, index: int) -> float:
    xs = [p[0] for p in points]
    position = bisect.bisect_left(xs, samples)
    if position >= len(points):
        position = len(points) - 1
    value = points[position][index]
    return math.nan if value is None else float(value)


def run(recipe: str, mode: str, seconds: float, local_steps: int | None) -> list[Any]:
    from hiveling.core.commands.demo import run_demo

    seen: list[Any] = []
    run_demo(seconds=seconds, recipe=recipe, mode=mode, local_steps=local_steps, seen=seen)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", action="append", help="glyphs, charlm (both)")
    parser.add_argument("--seconds", type=float, default=240.0, help="training time per mode (240)")
    parser.add_argument("--local-steps", type=int, default=None, help="default: the recipe's, else 100")
    args = parser.parse_args()
    for recipe in args.recipe or ["glyphs", "charlm"]:
        curves = {
            mode: curve(run(recipe, mode, args.seconds, args.local_steps)) for mode in ("sync", "local")
        }
        reached = min(points[-1][0] for points in curves.values() if points)
        result: dict[str, Any] = {"recipe": recipe, "seconds": args.seconds, "samples_compared": int(reached)}
        for mode, points in curves.items():
            result[mode] = {
                "samples_at_end": int(points[-1][0]),
                "loss_at_compared": round(value_at(points, reached, 1), 4),
                "accuracy_at_compared": value_at(points, reached, 2),
            }
        result["loss_ratio"] = round(
            result["local"]["loss_at_compared"] / result["sync"]["loss_at_compared"], 3
        )
        result["local_steps"] = args.local_steps
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        draw(recipe, curves, HERE / f"quality-{recipe}.png")
        print(json.dumps(result), flush=True)


def draw(recipe: str, curves: dict[str, list[tuple[float, float, float | None]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (losses, accuracies) = pyplot.subplots(2, 1, sharex=True, figsize=(8, 6), dpi=100)
    names = {"sync": "synchronous", "local": "low-communication"}
    for mode, points in curves.items():
        xs = [p[0] for p in points]
        losses.plot(xs, [p[1] for p in points], label=names[mode])
        accuracies.plot(xs, [math.nan if p[2] is None else 100 * p[2] for p in points], label=names[mode])
    losses.set_title(f"{recipe}: the host's training loss and held-out accuracy, per sample trained")
    losses.set_ylabel("training loss")
    losses.legend()
    accuracies.set_ylabel("held-out accuracy (%)")
    accuracies.set_xlabel("samples trained by the three peers together")
    for axes in (losses, accuracies):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


if __name__ == "__main__":
    main()
