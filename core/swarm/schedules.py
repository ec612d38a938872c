"""Learning-rate schedules under collaborative training: one scheduler step per collaborative step.

hivemind steps the scheduler itself, in lockstep with the collaboration's epoch (also when a peer
catches up from others). Lightning keeps a proxy that forwards everything but ``step``.
"""

from __future__ import annotations

import functools
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau


def check_scheduler(scheduler: object) -> LRScheduler:
    """Return ``scheduler`` if hivemind can drive it; explain otherwise."""
    if isinstance(scheduler, ReduceLROnPlateau):
        raise ValueError(
            "HivemindStrategy cannot drive ReduceLROnPlateau: it needs a metric that peers do not share. "
            "Use a schedule that depends only on the step (e.g. CosineAnnealingLR, LambdaLR, OneCycleLR)."
        )
    if not isinstance(scheduler, LRScheduler):
        raise ValueError(
            f"HivemindStrategy needs a torch.optim.lr_scheduler.LRScheduler, got {type(scheduler).__name__}."
        )
    return scheduler


def rebind_scheduler(scheduler: LRScheduler, optimizer: Optimizer) -> LRScheduler:
    """Point ``scheduler`` at ``optimizer``, which hivemind may have re-created, keeping its schedule.

    The new optimizer already carries the current learning rates (its groups are copied from the
    old one), so chainable schedules continue where they were.
    """
    scheduler.optimizer = optimizer
    step = optimizer.step
    if not hasattr(step, "_wrapped_by_lr_sched"):
        # torch warns when a scheduler steps before an optimizer it never saw step; mark ours as tracked.
        @functools.wraps(step)
        def tracked_step(*args: Any, **kwargs: Any) -> Any:
            optimizer._opt_called = True  # type: ignore[attr-defined]
            return step(*args, **kwargs)

        tracked_step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
        optimizer.step = tracked_step  # type: ignore[method-assign]
    return scheduler


class CollaborativeScheduler:
    """What Lightning sees in place of a scheduler that hivemind steps: ``step()`` does nothing."""

    def __init__(self, scheduler: LRScheduler) -> None:
        self.scheduler = scheduler

    @property
    def optimizer(self) -> Optimizer:
        return self.scheduler.optimizer

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Ignored: hivemind advances the schedule once per collaborative step."""

    def get_last_lr(self) -> list[float]:
        return [float(lr) for lr in self.scheduler.get_last_lr()]

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)

    def __getattr__(self, name: str) -> Any:
        if name == "scheduler":
            raise AttributeError(name)
        return getattr(self.scheduler, name)
