"""Compute utilization and bytes per sample of the two modes, on shaped home links.

    python bench/lowcomm.py                                 # 4 peers; 10M and 50M; 20 and 50 Mbit/s
    python bench/lowcomm.py --millions 10 --mbit 20 --mode local --seconds 120

Root only: every peer is its own host in bench/netlab.py's lab, its upload and download limited to the
given rate, and trains a plain Lightning model of the given size (a stack of square linear layers on
random data) through HivemindStrategy, synchronous (target batch: four batches per peer) or in the
low-communication mode (``--local-steps``). A batch also sleeps ``--accelerator-ms``: the time a
volunteer's GPU would compute, so that four peers on two cores share the machine the way four
machines would not.

Per peer, from the moment every peer has trained a batch, for ``--seconds``:

- ``utilization``: time training over wall time. Time training is the batches' forward and backward
  passes (with their accelerator sleep) plus one optimizer step per update the optimizer made (timed
  on its own before the run: the local steps in the low-communication mode, the collaborative steps
  in the synchronous one); everything else is time the peer waited for the network or spent on the
  collaboration's machinery.
- ``bytes_per_sample``: bytes the peer's interface sent, over the samples it trained.

Prints one JSON object per configuration, then a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

LAYERS = 4
BATCH = 8


def width_for(millions: float) -> int:
    return int((millions * 1e6 / LAYERS) ** 0.5)


def run_peer(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, IterableDataset

    from hiveling.core.swarm.strategy import HivemindStrategy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    width = width_for(args.millions)

    class Random(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            generator = torch.Generator().manual_seed(args.index)
            while True:
                x = torch.randn(BATCH, width, generator=generator)
                yield x, x.roll(1, dims=1)

    class Stack(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(*(nn.Linear(width, width, bias=False) for _ in range(LAYERS)))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            time.sleep(args.accelerator_ms / 1000)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    launched = time.perf_counter()
    model = Stack()
    probe = torch.optim.AdamW(model.parameters(), lr=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    started = time.perf_counter()
    for _ in range(3):
        probe.step()
    step_seconds = (time.perf_counter() - started) / 3
    for p in model.parameters():
        p.grad = None
    del probe

    options: dict[str, Any] = {"host_maddrs": [f"/ip4/{args.address}/tcp/0"], "batch_size": BATCH}
    if args.mode == "local":
        options["local_steps"] = args.local_steps
    else:
        options["target_batch_size"] = 4 * BATCH * args.peers
        options["averaging_timeout"] = 900.0
    strategy = HivemindStrategy(
        run_id="bench_lowcomm", initial_peers=[args.initial_peer] if args.initial_peer else None, **options
    )

    class Meter(pl.Callback):
        def __init__(self) -> None:
            self.batch_start = 0.0
            self.compute = 0.0
            self.samples = 0
            self.updates_at_start = 0
            self.started: float | None = None
            self.peers_seen = 0

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if not args.initial_peer:
                print(json.dumps({"address": strategy.join_addresses()[0]}), flush=True)

        def on_train_batch_start(self, *_: Any) -> None:
            self.batch_start = time.perf_counter()

        def on_before_optimizer_step(self, *_: Any) -> None:
            if self.started is not None:
                self.compute += time.perf_counter() - self.batch_start

        def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
            now = time.perf_counter()
            if self.started is None:
                # Every peer has trained a batch once the tracker counts them all (or, so that a
                # peer that never sees them all still measures, after --join-seconds).
                optimizer = strategy.hivemind_optimizer
                seen = 0 if optimizer is None else int(optimizer.tracker.global_progress.num_peers)
                if seen >= args.peers or now - launched >= args.join_seconds:
                    self.peers_seen = seen
                    self.started = now
                    self.updates_at_start = updates()
                    print(json.dumps({"started": time.time(), "tx": tx_bytes()}), flush=True)
                return
            self.samples += BATCH
            if now - self.started >= args.seconds:
                made = updates() - self.updates_at_start
                wall = now - self.started
                print(
                    json.dumps(
                        {
                            "wall_s": round(wall, 2),
                            "compute_s": round(self.compute, 2),
                            "updates": made,
                            "step_s": round(step_seconds, 4),
                            "utilization": round(min(1.0, (self.compute + made * step_seconds) / wall), 3),
                            "samples": self.samples,
                            "tx": tx_bytes(),
                            "collaborative_steps": strategy.collaborative_step,
                            "failed_rounds": int(getattr(strategy.hivemind_optimizer, "failed_rounds", 0)),
                            "peers_seen_at_start": self.peers_seen,
                        }
                    ),
                    flush=True,
                )
                trainer.should_stop = True

    local_updates = [0]

    def updates() -> int:
        return local_updates[0] if args.mode == "local" else strategy.collaborative_step

    class CountLocal(pl.Callback):
        def on_before_zero_grad(self, *_: Any) -> None:
            local_updates[0] += 1

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        max_epochs=1,
        callbacks=[Meter(), CountLocal()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(Random(), batch_size=None))


def tx_bytes() -> int:
    return int(Path("/sys/class/net/eth0/statistics/tx_bytes").read_text())


def measure(args: argparse.Namespace, millions: float, mbit: float, mode: str) -> dict[str, Any]:
    from bench import netlab

    with netlab.Lab() as lab:
        nodes = [lab.add_node(f"peer{i}", up_mbit=mbit, down_mbit=mbit) for i in range(args.peers)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        common = ["--millions", str(millions), "--peers", str(args.peers), "--mode", mode]
        common += ["--seconds", str(args.seconds), "--local-steps", str(args.local_steps)]
        common += ["--accelerator-ms", str(args.accelerator_ms), "--join-seconds", str(args.join_seconds)]
        processes: list[subprocess.Popen[bytes]] = []
        initial = ""
        for index, node in enumerate(nodes):
            argv = [sys.executable, __file__, "peer", "--index", str(index), "--address", node.address]
            argv += [*common, "--initial-peer", initial]
            log = open(Path(args.log_dir) / f"peer{index}.log", "w")  # noqa: SIM115 - closed with the lab
            processes.append(node.start(argv, env=env, stderr=log))
            if index == 0:
                assert processes[0].stdout is not None
                first = processes[0].stdout.readline()
                if not first:
                    raise RuntimeError("the first peer did not start")
                initial = json.loads(first)["address"]
        reports: list[list[dict[str, Any]]] = [[] for _ in processes]
        deadline = time.monotonic() + args.join_seconds + args.seconds + 300
        lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

        def read(index: int, stream: Any) -> None:
            for line in stream:
                lines.put((index, line))
            lines.put((index, None))

        for index, process in enumerate(processes):
            threading.Thread(target=read, args=(index, process.stdout), daemon=True).start()
        open_streams = len(processes)
        while open_streams and time.monotonic() < deadline:
            try:
                index, line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
            else:
                reports[index].append(json.loads(line))
        if open_streams:
            still = f"{open_streams} peers still ran at the deadline; see {args.log_dir}"
            print(json.dumps({"warning": still}))
        peers = []
        for records in reports:
            start = next((r for r in records if "started" in r), None)
            end = next((r for r in records if "wall_s" in r), None)
            if start is None or end is None:
                continue
            sent = end["tx"] - start["tx"]
            peers.append(
                {
                    "utilization": end["utilization"],
                    "samples": end["samples"],
                    "bytes_per_sample": round(sent / max(end["samples"], 1)),
                    "collaborative_steps": end["collaborative_steps"],
                    "failed_rounds": end["failed_rounds"],
                    "updates": end["updates"],
                    "peers_seen_at_start": end["peers_seen_at_start"],
                }
            )
        result: dict[str, Any] = {
            "mode": mode,
            "millions": millions,
            "parameters": LAYERS * width_for(millions) ** 2,
            "peers": args.peers,
            "mbit": mbit,
            "seconds": args.seconds,
            "accelerator_ms": args.accelerator_ms,
            **(
                {"local_steps": args.local_steps}
                if mode == "local"
                else {"target_batch_size": 4 * BATCH * args.peers}
            ),
            "peers_measured": len(peers),
            "per_peer": peers,
        }
        if peers:
            result["utilization_median"] = statistics.median(p["utilization"] for p in peers)
            result["utilization_min"] = min(p["utilization"] for p in peers)
            result["bytes_per_sample_median"] = statistics.median(p["bytes_per_sample"] for p in peers)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    peer = sub.add_parser("peer")
    peer.add_argument("--index", type=int, required=True)
    peer.add_argument("--address", required=True)
    peer.add_argument("--initial-peer", default="")
    for target in (parser, peer):
        target.add_argument("--peers", type=int, default=4, help="peers in the lab (4)")
        target.add_argument("--seconds", type=float, default=150.0, help="measured seconds per configuration")
        target.add_argument("--local-steps", type=int, default=50, help="the local mode's local steps (50)")
        target.add_argument("--accelerator-ms", type=float, default=100.0, help="a batch's device time (100)")
        target.add_argument(
            "--join-seconds",
            type=float,
            default=120.0,
            help="measure from here even if not all peers are seen",
        )
    peer.add_argument("--millions", type=float, required=True)
    peer.add_argument("--mode", choices=("sync", "local"), required=True)
    parser.add_argument("--millions", type=float, action="append", help="parameters, in millions (10, 50)")
    parser.add_argument("--mbit", type=float, action="append", help="each link's rate, both ways (20, 50)")
    parser.add_argument("--mode", action="append", choices=("sync", "local"), help="sync, local")
    parser.add_argument("--log-dir", default="/tmp/hiveling-lowcomm", help="the peers' logs")
    args = parser.parse_args()
    if args.command == "peer":
        run_peer(args)
        return
    from bench import netlab

    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    why = netlab.unavailable()
    if why:
        print(json.dumps({"skipped": why}))
        return
    results = []
    for millions in args.millions or [10, 50]:
        for mbit in args.mbit or [20, 50]:
            for mode in args.mode or ["local", "sync"]:
                result = measure(args, millions, mbit, mode)
                results.append(result)
                print(json.dumps(result), flush=True)
    summary = [
        {
            k: r.get(k)
            for k in (
                "mode",
                "millions",
                "mbit",
                "utilization_median",
                "utilization_min",
                "bytes_per_sample_median",
            )
        }
        for r in results
    ]
    print(json.dumps({"summary": summary, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}))


if __name__ == "__main__":
    main()
