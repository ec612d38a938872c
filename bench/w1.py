"""Benchmark W1: HivemindStrategy against plain Lightning, printed as JSON.

    python bench/w1.py                      # baseline, 1, 2 and 4 peers with the strategy's defaults
    python bench/w1.py --peers 2 --duration 40 --option matchmaking_time=2.0

The first peer starts the collaboration and the others join through its address, as machines running
the same script do (no extra bootstrap node).

Every peer is its own process on 127.0.0.1 with one torch thread. Throughput counts the samples
trained by all peers in the window where all of them run (after a warm-up), so start-up is excluded.
The baseline (plain Lightning, one process, same workload) runs in the same session.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JOIN_STEPS = 3
sys.path.insert(0, str(HERE))


def run_peer(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl
    import numpy as np
    import torch
    from workload import TARGET_BATCH_SIZE, BatchClock, DigitsMLP, make_loader

    from hiveling.core import HivemindStrategy

    torch.set_num_threads(1)
    if os.environ.get("W1_LOG_DIR"):
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(0)  # every peer starts from the same initialization
    model = DigitsMLP()
    started = Path(args.out).with_suffix(".started")
    clock = BatchClock(
        Path(args.stop_file), limit=args.duration + 300, started=started if args.peer_index < 0 else None
    )
    snapshots: dict[int, Any] = {}
    step_times: dict[int, float] = {}
    averaged: dict[int, bool] = {}  # False: the round failed (local gradients) or found the peer out of step
    failed_rounds = [0]
    resynced_rounds = [0]
    blocked: list[tuple[float, float]] = []
    options = json.loads(args.options)

    class Snapshots(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            strategy = trainer.strategy
            assert isinstance(strategy, HivemindStrategy)
            assert strategy.hivemind_optimizer is not None
            hm = strategy.hivemind_optimizer

            def record(opt: torch.optim.Optimizer, *_: Any) -> None:
                epoch = int(hm.state_averager.local_epoch)
                flat = torch.cat(
                    [p.detach().reshape(-1).cpu() for g in opt.param_groups for p in g["params"]]
                )
                snapshots[epoch] = flat.numpy().copy()
                step_times[epoch] = time.time()
                averaged[epoch] = bool(getattr(hm, "step_averaged", True))
                failed_rounds[0] = int(getattr(hm, "failed_rounds", 0))
                resynced_rounds[0] = int(getattr(hm, "resynced_rounds", 0))
                if epoch >= 1 and not started.exists():
                    started.write_text(str(epoch))

            hm.opt.register_step_post_hook(record)
            if args.peer_index == 0:  # the first peer is the one the others join through
                address = Path(args.out).with_suffix(".address")
                address.with_suffix(".tmp").write_text(",".join(strategy.join_addresses()))
                address.with_suffix(".tmp").rename(address)

            def timed(method: Any) -> Any:
                def run(*args: Any, **kwargs: Any) -> Any:
                    if timing:  # nested: the outer call counts this time
                        return method(*args, **kwargs)
                    timing.append(True)
                    began = time.time()
                    try:
                        return method(*args, **kwargs)
                    finally:
                        blocked.append((began, time.time()))
                        timing.clear()

                return run

            timing: list[bool] = []
            hm._update_global_epoch = timed(hm._update_global_epoch)
            # With overlapped averaging, a step's update is applied between two later batches.
            hm.finish_pending_update = timed(hm.finish_pending_update)

    if args.peer_index < 0:
        callbacks: list[pl.Callback] = [clock]
        strategy: Any = "auto"
    else:
        callbacks = [clock, Snapshots()]
        strategy = HivemindStrategy(
            target_batch_size=TARGET_BATCH_SIZE,
            run_id="w1",
            initial_peers=args.initial_peers or None,
            host_maddrs=["/ip4/127.0.0.1/tcp/0"],
            **options,
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        max_epochs=-1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, make_loader(seed=max(args.peer_index, 0) + 1))
    out = Path(args.out)
    np.savez(out.with_suffix(".npz"), **{str(k): v for k, v in snapshots.items()})
    out.write_text(
        json.dumps(
            {
                "ends": clock.ends,
                "sizes": clock.sizes,
                "step_times": step_times,
                "blocked": blocked,
                "averaged": averaged,
                "failed_rounds": failed_rounds[0],
                "resynced_rounds": resynced_rounds[0],
            }
        )
    )


def read_cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def measure(
    n_peers: int, duration: float, warmup: float, options: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    """n_peers == 0 runs the plain Lightning baseline."""
    import footprint
    import numpy as np
    from workload import IDEAL_PER_PEER, samples_in_window

    initial_peers = ""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs, outs = [], []
    stop_file = workdir / f"stop{n_peers}"
    for index in range(max(n_peers, 1)):
        out = workdir / f"peer{n_peers}_{index}.json"
        outs.append(out)
        cmd = [
            sys.executable,
            __file__,
            "peer",
            "--peer-index",
            str(index if n_peers else -1),
            "--duration",
            str(duration),
            "--out",
            str(out),
            "--initial-peers",
            initial_peers,
            "--options",
            json.dumps(options),
            "--stop-file",
            str(stop_file),
        ]
        log_dir = os.environ.get("W1_LOG_DIR")
        stderr: Any = subprocess.PIPE
        if log_dir:  # keep each peer's log (e.g. with HIVEMIND_LOGLEVEL=DEBUG) for a closer look
            stderr = open(Path(log_dir) / f"peer{n_peers}_{index}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr))
        if index == 0 and n_peers > 1:
            # Others join a running collaboration (as volunteers do) and download its state on arrival.
            deadline = time.time() + 120
            while (
                not out.with_suffix(".started").exists()
                and procs[0].poll() is None
                and time.time() < deadline
            ):
                time.sleep(0.1)
            address = out.with_suffix(".address")
            if not address.exists():
                _, err = procs[0].communicate(timeout=120) if procs[0].poll() is not None else (None, b"")
                raise RuntimeError("the first peer did not start:\n" + (err or b"").decode(errors="replace"))
            initial_peers = address.read_text()
    # Measure from when the last peer has taken part in a collaborative step (joins excluded)...
    markers = [out.with_suffix(".started") for out in outs]
    deadline = time.time() + 180
    while (
        not all(m.exists() for m in markers)
        and all(p.poll() is None for p in procs)
        and time.time() < deadline
    ):
        time.sleep(0.1)
    window_start = time.time() + warmup
    time.sleep(warmup)
    cpu_before = read_cpu_times()
    prints_before = [footprint.take(proc.pid) for proc in procs]
    time.sleep(duration)
    cpu_after = read_cpu_times()
    prints_after = [footprint.take(proc.pid) for proc in procs]
    stop_file.write_text("stop")  # ...to when all of them are told to stop.
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            errors.append((err or b"").decode(errors="replace")[-2000:])
    if errors:
        raise RuntimeError("peer failed:\n" + "\n".join(errors))

    records = [json.loads(out.read_text()) for out in outs]
    start = window_start
    stop = min(r["ends"][-1] for r in records)
    samples = sum(samples_in_window(r["ends"], r["sizes"], start, stop) for r in records)
    throughput = samples / (stop - start)
    busy = (cpu_after[0] - cpu_before[0]) / max(cpu_after[1] - cpu_before[1], 1.0)
    result: dict[str, Any] = {
        "peers": n_peers,
        "machine_cpu_busy": round(busy, 3),
        "window_s": round(stop - start, 2),
        "samples_per_s": round(throughput, 1),
        "share_of_ideal": round(throughput / (IDEAL_PER_PEER * max(n_peers, 1)), 3),
    }
    if n_peers > 0:
        snaps = [dict(np.load(out.with_suffix(".npz"))) for out in outs]
        common = sorted(set.intersection(*(set(s) for s in snaps)), key=int)
        diffs = [
            max(float(np.abs(s[k] - snaps[0][k]).max()) for s in snaps[1:]) if n_peers > 1 else 0.0
            for k in common
        ]
        # The first common steps are the join itself (the newcomer downloads state mid-step).
        settled = diffs[JOIN_STEPS:]
        result["collaborative_steps"] = len(common)
        result["max_param_diff_after_join"] = max(settled) if settled else None
        result["steps_differing_over_1e-6_after_join"] = sum(d > 1e-6 for d in settled)
        # A failed round may leave its step apart (local gradients); the next step must agree again.
        steps_both_took = {int(k) for k in common}
        failed = {int(k) for r in records for k, ok in r["averaged"].items() if not ok} & steps_both_took
        result["failed_rounds"] = [r["failed_rounds"] for r in records]
        result["resynced_rounds"] = [r.get("resynced_rounds", 0) for r in records]
        result["steps_with_a_failed_round"] = sorted(failed)
        result["steps_differing_over_1e-6_not_after_a_failure"] = [
            int(k)
            for k, d in zip(common[JOIN_STEPS:], settled, strict=True)
            if d > 1e-6 and int(k) not in failed
        ]
        in_window = [[(b, e) for b, e in r["blocked"] if start <= b and e <= stop] for r in records]
        blocked_s = [sum(e - b for b, e in spans) for spans in in_window]
        # Share of each peer's time spent waiting in the collaborative step (averaging, optimizer step)
        # rather than training; the rest is training plus per-batch overhead.
        result["share_blocked_in_step"] = round(sum(blocked_s) / len(blocked_s) / (stop - start), 3)
        steps = [sum(1 for t in r["step_times"].values() if start < float(t) <= stop) for r in records]
        result["mean_blocked_per_step_s"] = round(sum(blocked_s) / max(sum(steps), 1), 3)
        # Training speed between collaborative steps: batches during which no step ran.
        plain = []
        for r, spans in zip(records, in_window, strict=True):
            ends = [e for e in r["ends"] if start < e <= stop]
            for a, b in zip(ends, ends[1:], strict=False):
                if not any(a < s_end and s_begin < b for s_begin, s_end in spans):
                    plain.append(b - a)
        windows = [[e for e in r["ends"] if start < e <= stop] for r in records]
        every = [float(np.mean(np.diff(ends))) for ends in windows if len(ends) > 1]
        if every:
            result["mean_batch_s"] = round(float(np.mean(every)), 4)  # all batches, steps included
        if plain:
            result["median_batch_s_outside_steps"] = round(float(np.median(plain)), 4)
            result["mean_batch_s_outside_steps"] = round(float(np.mean(plain)), 4)
            result["p90_batch_s_outside_steps"] = round(float(np.percentile(plain, 90)), 4)
    peer_steps = [
        sum(1 for t in r.get("step_times", {}).values() if window_start < float(t) <= window_start + duration)
        for r in records
    ]
    # Each peer's processes and their cost over the measuring window (joins excluded).
    result["footprint"] = [
        footprint.compare(before, after, proc.pid, steps)
        for before, after, proc, steps in zip(prints_before, prints_after, procs, peer_steps, strict=True)
    ]
    if n_peers == 0:
        ends = [e for e in records[0]["ends"] if start < e <= stop]
        result["median_batch_s"] = round(float(np.median(np.diff(ends))), 4)
        result["mean_batch_s"] = round(float(np.mean(np.diff(ends))), 4)
    if n_peers > 0:
        times = sorted(float(t) for t in records[0]["step_times"].values() if start < float(t) <= stop)
        if len(times) > 1:
            result["seconds_per_step"] = round((times[-1] - times[0]) / (len(times) - 1), 3)
            # More than target_batch_size: peers learned of the step late and trained on meanwhile.
            result["samples_per_step"] = round(throughput * result["seconds_per_step"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    peer = sub.add_parser("peer")
    peer.add_argument("--peer-index", type=int, required=True)
    peer.add_argument("--duration", type=float, required=True)
    peer.add_argument("--out", required=True)
    peer.add_argument("--initial-peers", default="")
    peer.add_argument("--options", default="{}")
    peer.add_argument("--stop-file", required=True)
    parser.add_argument("--peers", type=int, action="append", help="peer counts to run (default 1, 2, 4)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured, all peers running")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds skipped once all peers joined")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--option", action="append", default=[], help="strategy option as name=python_literal"
    )
    args = parser.parse_args()
    if args.command == "peer":
        run_peer(args)
        return
    options = {}
    for item in args.option:
        name, _, value = item.partition("=")
        options[name] = ast.literal_eval(value)
    results: dict[str, Any] = {"workload": "W1", "options": options, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        baseline = None if args.no_baseline else measure(0, args.duration, args.warmup, options, workdir)
        if baseline:
            results["baseline"] = baseline
        for n in args.peers or [1, 2, 4]:
            run = measure(n, args.duration, args.warmup, options, workdir)
            if baseline:
                run["ratio_to_baseline_per_peer"] = round(
                    run["samples_per_s"] / n / baseline["samples_per_s"], 3
                )
            results["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
