"""Which progress records to believe: a member's claims are bounded by what a peer can really do.

Every peer publishes its progress (step, samples since the step began, samples per second) on the
DHT, and everyone's next step is decided from the sum. A record is signed by its peer's own key, so
it cannot be forged in another's name, but nothing stops a peer from lying in its own: one record
claiming a step far ahead froze everyone (each peer tried to download that step, which nobody
served), and one claiming a billion samples would make everyone step at once, on nothing. Such
records are left out of the sum.
"""

from __future__ import annotations

import math
from typing import Any

#: Samples beyond this many target batches are more than any honest peer gathers between two steps
#: (the low-communication mode keeps counting while a slow exchange runs: hence the margin).
MAX_TARGET_BATCHES = 1024
#: A speed no device reaches on any model worth a collaboration, in samples per second.
MAX_SAMPLES_PER_SECOND = 1e7


def why_implausible(value: dict[str, Any], target_batch_size: int, epoch_ceiling: int | None) -> str | None:
    """Why a peer's progress record is not to be believed, or None if it is plausible.

    ``epoch_ceiling``: the highest step a record may claim, when this peer has found that nobody
    serves the steps beyond it (None: no limit known).
    """
    samples = value.get("samples_accumulated", 0)
    speed = value.get("samples_per_second", 0.0)
    epoch = value.get("epoch", 0)
    if isinstance(samples, (int, float)) and samples > MAX_TARGET_BATCHES * max(target_batch_size, 1):
        return f"{samples} samples since its last step, more than {MAX_TARGET_BATCHES} target batches"
    if isinstance(speed, (int, float)) and not (math.isfinite(speed) and speed <= MAX_SAMPLES_PER_SECOND):
        return f"{speed:.3g} samples per second, more than any device trains"
    if epoch_ceiling is not None and isinstance(epoch, int) and epoch > epoch_ceiling:
        return f"step {epoch}, while no peer serves a state past step {epoch_ceiling}"
    return None
