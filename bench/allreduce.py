"""The floor under a collaborative step: one hivemind all-reduce of W1's gradients between two peers.

    python bench/allreduce.py [--rounds 40]

Two processes on 127.0.0.1, each with its own DHT and averager over tensors of W1's shapes (85,002
float32 values, 340 KB). Each round forms its group first (as the strategy does ahead of a step) and
then times only the all-reduce itself, from allowing it to its result. Prints JSON with the median and
90th percentile of each peer.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import time
from typing import Any

SHAPES = ((256, 64), (256,), (256, 256), (256,), (10, 256), (10,))


def run_peer(initial_peers: list[str], rounds: int, results: Any) -> None:
    import hivemind
    import torch

    torch.set_num_threads(1)
    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=initial_peers)
    tensors = [torch.randn(shape) for shape in SHAPES]
    averager = hivemind.averaging.DecentralizedAverager(
        tensors, dht, prefix="bench_allreduce", target_group_size=2, min_matchmaking_time=2.0, start=True
    )
    seconds = []
    try:
        for _ in range(rounds):
            control = averager.step(wait=False, require_trigger=True)
            while control.stage.name != "AWAITING_TRIGGER" and not control.done():
                time.sleep(0.001)
            began = time.perf_counter()
            control.allow_allreduce()
            control.result(timeout=30)
            seconds.append(time.perf_counter() - began)
        settled = seconds[3:]  # the first rounds open the streams
        results.put(
            {
                "median_ms": round(1000 * statistics.median(settled), 1),
                "p90_ms": round(1000 * sorted(settled)[int(0.9 * len(settled))], 1),
                "rounds": len(settled),
            }
        )
    finally:
        averager.shutdown()
        dht.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5 (the first 3 are not counted)")
    import hivemind

    bootstrap = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    initial_peers = [str(address) for address in bootstrap.get_visible_maddrs()]
    results: Any = mp.get_context("fork").Queue()
    peers = [
        mp.get_context("fork").Process(target=run_peer, args=(initial_peers, args.rounds, results))
        for _ in range(2)
    ]
    for peer in peers:
        peer.start()
    measured = [results.get(timeout=600) for _ in peers]
    for peer in peers:
        peer.join(timeout=60)
    bootstrap.shutdown()
    values = sum(math.prod(shape) for shape in SHAPES)
    print(
        json.dumps({"values": values, "peers": measured, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    )


if __name__ == "__main__":
    main()
