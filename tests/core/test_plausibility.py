from __future__ import annotations

import math

import pytest

from hiveling.core.swarm.plausibility import why_implausible


def record(epoch: int = 3, samples: int = 16, speed: float = 50.0) -> dict[str, object]:
    return {"epoch": epoch, "samples_accumulated": samples, "samples_per_second": speed}


@pytest.mark.parametrize(
    ("value", "ceiling", "believed"),
    [
        (record(), None, True),
        (record(samples=64 * 1024), None, True),  # a slow exchange's worth of local steps
        (record(samples=10**9), None, False),
        (record(speed=1e6), None, True),
        (record(speed=1e12), None, False),
        (record(speed=math.inf), None, False),
        (record(epoch=10**6), None, True),  # nothing known yet: a newcomer believes the swarm's step
        (record(epoch=10**6), 12, False),
        (record(epoch=12), 12, True),
    ],
)
def test_records_are_believed_within_what_a_peer_can_do(
    value: dict[str, object], ceiling: int | None, believed: bool
) -> None:
    why = why_implausible(value, target_batch_size=64, epoch_ceiling=ceiling)
    assert (why is None) == believed, why
