"""One collaborative step's averaging on shaped home links, against the bound the links set.

    python bench/averaging.py                                  # 1M, 10M, 50M; 2 and 4 peers; 50 Mbit/s
    python bench/averaging.py --millions 10 --peers 2 --mbit 10 --mbit 100 --compression none

Root only: every peer is its own host in bench/netlab.py's lab, with its upload and download limited
to the given rate. Each peer runs a hivemind DHT and a DecentralizedAverager over tensors of the given
size, forms its group ahead of time (as the strategy pre-schedules rounds), and the all-reduce is
timed from the moment the last peer allows it to the moment the last peer has its result.

The bound: in hivemind's all-reduce each of n peers reduces 1/n of the vector, so each uploads the
(n-1)/n it does not reduce and then the (n-1)/n of averaged parts the others need, 2(n-1)/n of the
vector's compressed bytes in all; its download is the same, over a link of the same rate, at the same
time. ``ratio_to_bound`` is the measured time over that upload time. Prints one JSON object per
configuration on stdout (the lab's description in each), and a summary at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

COMPRESSED_BYTES_PER_VALUE = {"none": 4.0, "fp16": 2.0, "8bit": 1.0}
TENSORS = 4  # a model's parameters come in several tensors; the averager splits them into parts anyway


def make_compression(name: str) -> Any:
    from hivemind.compression import Float16Compression, NoCompression, Uniform8BitQuantization

    return {"none": NoCompression, "fp16": Float16Compression, "8bit": Uniform8BitQuantization}[name]()


def run_peer(args: argparse.Namespace) -> None:
    import hivemind
    import torch

    torch.set_num_threads(1)
    dht = hivemind.DHT(
        start=True,
        host_maddrs=[f"/ip4/{args.address}/tcp/0"],
        initial_peers=[args.initial_peer] if args.initial_peer else [],
    )
    if not args.initial_peer:
        print(json.dumps({"address": str(dht.get_visible_maddrs()[0])}), flush=True)
    torch.manual_seed(args.index)
    size = int(args.millions * 1e6)
    tensors = [torch.randn(size // TENSORS) for _ in range(TENSORS)]
    averager = hivemind.averaging.DecentralizedAverager(
        tensors,
        dht,
        prefix="bench_averaging",
        target_group_size=args.peers,
        min_group_size=args.peers,
        min_matchmaking_time=5.0,
        compression=make_compression(args.compression),
        allreduce_timeout=900,
        next_chunk_timeout=300,
        start=True,
    )
    try:
        for _ in range(args.rounds):
            control = averager.step(wait=False, require_trigger=True, timeout=900)
            while control.stage.name != "AWAITING_TRIGGER" and not control.done():
                time.sleep(0.001)
            allowed = time.time()  # one machine's clock: comparable across the lab's namespaces
            control.allow_allreduce()
            group = control.result(timeout=900)
            print(
                json.dumps({"allowed": allowed, "done": time.time(), "group": len(group or {})}), flush=True
            )
    finally:
        averager.shutdown()
        dht.shutdown()


def measure(
    args: argparse.Namespace, millions: float, peers: int, mbit: float, compression: str
) -> dict[str, Any]:
    from bench import netlab

    with netlab.Lab() as lab:
        nodes = [lab.add_node(f"peer{i}", up_mbit=mbit, down_mbit=mbit) for i in range(peers)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        common = ["--millions", str(millions), "--peers", str(peers), "--rounds", str(args.rounds)]
        processes: list[subprocess.Popen[bytes]] = []
        initial = ""
        for index, node in enumerate(nodes):
            argv = [sys.executable, __file__, "peer", "--index", str(index), "--address", node.address]
            argv += [*common, "--compression", compression, "--initial-peer", initial]
            processes.append(node.start(argv, env=env, stderr=subprocess.DEVNULL))
            if index == 0:
                assert processes[0].stdout is not None
                first = processes[0].stdout.readline()
                if not first:
                    raise RuntimeError("the first peer did not start")
                initial = json.loads(first)["address"]
        rounds: list[list[dict[str, float]]] = [[] for _ in processes]
        for index, process in enumerate(processes):
            assert process.stdout is not None
            for line in process.stdout:
                rounds[index].append(json.loads(line))
            process.wait(timeout=60)
        seconds = []
        for number in range(args.rounds):
            records = [peer[number] for peer in rounds if len(peer) > number]
            if len(records) == peers and all(r["group"] == peers for r in records):
                seconds.append(max(r["done"] for r in records) - max(r["allowed"] for r in records))
        vector_bytes = millions * 1e6 * COMPRESSED_BYTES_PER_VALUE[compression]
        bound = 2 * (peers - 1) / peers * vector_bytes * 8 / (mbit * 1e6)
        result: dict[str, Any] = {
            "millions": millions,
            "peers": peers,
            "mbit": mbit,
            "compression": compression,
            "rounds_completed": len(seconds),
            "bound_s": round(bound, 2),
            "lab": lab.describe()["delay_and_loss"],
        }
        if seconds:
            result["seconds"] = [round(s, 2) for s in seconds]
            result["median_s"] = round(statistics.median(seconds), 2)
            result["ratio_to_bound"] = round(statistics.median(seconds) / bound, 2)
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
    peer.add_argument("--millions", type=float, required=True)
    peer.add_argument("--peers", type=int, required=True)
    peer.add_argument("--rounds", type=int, required=True)
    peer.add_argument("--compression", required=True)
    parser.add_argument("--millions", type=float, action="append", help="parameters, in millions (1, 10, 50)")
    parser.add_argument("--peers", type=int, action="append", help="peers in the round (2, 4)")
    parser.add_argument("--mbit", type=float, action="append", help="each link's rate, both ways (50)")
    parser.add_argument(
        "--compression", action="append", choices=sorted(COMPRESSED_BYTES_PER_VALUE), help="none, fp16, 8bit"
    )
    parser.add_argument("--rounds", type=int, default=2, help="all-reduce rounds per configuration")
    args = parser.parse_args()
    if args.command == "peer":
        run_peer(args)
        return
    from bench import netlab

    why = netlab.unavailable()
    if why:
        print(json.dumps({"skipped": why}))
        return
    results = []
    for millions in args.millions or [1, 10, 50]:
        for peers in args.peers or [2, 4]:
            for mbit in args.mbit or [50]:
                for compression in args.compression or ["none", "fp16", "8bit"]:
                    result = measure(args, millions, peers, mbit, compression)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    ratios = [r["ratio_to_bound"] for r in results if "ratio_to_bound" in r]
    summary = {"configurations": len(results), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    if ratios:
        summary |= {"worst_ratio_to_bound": max(ratios), "best_ratio_to_bound": min(ratios)}
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
