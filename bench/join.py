"""How fast two peers find each other: through a node that does not train, and directly; JSON out.

    python bench/join.py              # each of the strategy option sets the integration test covers

Two trial peers (tests/support/trial.py: target 8, batch 4, 0.25 s per batch) start at once. A peer
has "found" the other when its progress tracker first counts two peers; the clock starts when its
trainer starts (after its DHT is up). ``through_bootstrap`` joins both through a bare hivemind DHT;
``direct`` starts the second through the first's address once the first is up.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.trial import PeerConfig, PeerProcess  # noqa: E402

OPTIONS = {
    "defaults": {},
    "delayed-offloaded": {"delay_optimizer_step": True, "offload_optimizer": True},
    "delayed-grads": {"delay_optimizer_step": True, "offload_optimizer": True, "delay_grad_averaging": True},
    "reused-buffers": {"reuse_grad_buffers": True},
}


def config(options: dict[str, Any], peers: list[str] | None, seed: int) -> PeerConfig:
    return PeerConfig(
        run_id=f"bench-{uuid.uuid4().hex[:8]}",
        steps=6,
        linger_steps=1,
        target_batch_size=8,
        batch_size=4,
        sleep=0.25,
        data_seed=seed,
        initial_peers=peers,
        strategy=options,
    )


def events_of(process: PeerProcess) -> list[dict[str, Any]]:
    events = list(process.events())
    process.stop(timeout=10)
    return events


def seconds_to_meet(events: list[dict[str, Any]]) -> float | None:
    joined = next((e["time"] for e in events if e["type"] == "joined"), None)
    met = next((e["time"] for e in events if e["type"] == "peers" and e["count"] >= 2), None)
    return None if joined is None or met is None else round(met - joined, 2)


def stepped_together(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    steps = [{e["step"] for e in events if e["type"] == "step" and e["peers"] >= 2} for events in (a, b)]
    return len(steps[0] & steps[1])


def through_bootstrap(options: dict[str, Any]) -> dict[str, Any]:
    import hivemind

    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    try:
        peers = [str(a) for a in dht.get_visible_maddrs()]
        first = config(options, peers, 1)
        processes = [PeerProcess(first), PeerProcess(PeerConfig(**{**first.__dict__, "data_seed": 2}))]
        a, b = (events_of(p) for p in processes)
    finally:
        dht.shutdown()
    return {
        "seconds_to_meet": [seconds_to_meet(a), seconds_to_meet(b)],
        "steps_together": stepped_together(a, b),
    }


def direct(options: dict[str, Any]) -> dict[str, Any]:
    first_config = config(options, None, 1)
    first = PeerProcess(first_config)
    events: list[dict[str, Any]] = []
    for event in first.events():
        events.append(event)
        if event["type"] == "joined":
            break
    second = PeerProcess(
        PeerConfig(**{**first_config.__dict__, "data_seed": 2, "initial_peers": event["addresses"]})
    )
    a = events + events_of(first)
    b = events_of(second)
    return {
        "seconds_to_meet": [seconds_to_meet(a), seconds_to_meet(b)],
        "steps_together": stepped_together(a, b),
    }


def main() -> None:
    started = time.monotonic()
    results = {
        name: {"through_bootstrap": through_bootstrap(o), "direct": direct(o)} for name, o in OPTIONS.items()
    }
    print(json.dumps({"join": results, "seconds": round(time.monotonic() - started, 1)}, indent=2))


if __name__ == "__main__":
    main()
