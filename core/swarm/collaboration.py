"""What the collaboration looks like from this peer: numbers for Lightning's loggers and progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback
from typing_extensions import override

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from hiveling.core.swarm.strategy import HivemindStrategy


@dataclass(frozen=True)
class CollaborationStatus:
    """One reading of the collaboration's progress."""

    step: int
    peers: int
    samples_accumulated: int
    target_batch_size: int
    samples_per_second: float


class StepRate:
    """Collaboration throughput measured from collaborative steps: target_batch_size per step."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self._last: tuple[int, float] | None = None
        self.samples_per_second = 0.0

    def update(self, step: int, samples_per_step: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is None or step < self._last[0]:
            self._last = (step, now)
        elif step > self._last[0] and now > self._last[1]:
            rate = (step - self._last[0]) * samples_per_step / (now - self._last[1])
            first = self.samples_per_second == 0.0
            self.samples_per_second = (
                rate if first else self.alpha * rate + (1 - self.alpha) * self.samples_per_second
            )
            self._last = (step, now)
        return self.samples_per_second


class CollaborationMetrics(Callback):
    """Logs the collaborative step, peers, collaboration samples/s and samples toward the target."""

    #: Lightning's ``log`` costs about a millisecond a call: report on a new step or this often (seconds).
    interval = 1.0

    def __init__(self, strategy: HivemindStrategy) -> None:
        self.strategy = strategy
        self.rate = StepRate()
        self._last_report: tuple[int, float] = (-1, 0.0)

    def read(self) -> CollaborationStatus | None:
        optimizer = self.strategy.hivemind_optimizer
        if optimizer is None:
            return None
        progress = optimizer.tracker.global_progress
        step = int(optimizer.local_epoch)
        target = self.strategy.target_batch_size
        return CollaborationStatus(
            step=step,
            peers=max(int(progress.num_peers), 1),
            samples_accumulated=int(progress.samples_accumulated),
            target_batch_size=target,
            samples_per_second=self.rate.update(step, target),
        )

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        optimizer = self.strategy.hivemind_optimizer
        now = time.monotonic()
        if optimizer is None or (
            int(optimizer.local_epoch) == self._last_report[0] and now - self._last_report[1] < self.interval
        ):
            return
        status = self.read()
        if status is None:
            return
        self._last_report = (status.step, now)
        pl_module.log("hivemind/step", float(status.step), prog_bar=True, on_step=True, on_epoch=False)
        pl_module.log("hivemind/peers", float(status.peers), prog_bar=True, on_step=True, on_epoch=False)
        pl_module.log(
            "hivemind/samples_per_second",
            status.samples_per_second,
            prog_bar=True,
            on_step=True,
            on_epoch=False,
        )
        pl_module.log(
            "hivemind/samples_accumulated", float(status.samples_accumulated), on_step=True, on_epoch=False
        )
