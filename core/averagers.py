"""hivemind's averagers with two additions: a target group size the parent can change at run time,
and states and rounds that say which parameters they carry (step label, fingerprint)."""

from __future__ import annotations

from typing import Any

import torch
from hivemind.optim.grad_averager import GradientAverager
from hivemind.optim.state_averager import TrainingStateAverager

_FINGERPRINT_TOLERANCE = 1e-6


class GroupSizeMixin:
    """Lets the parent process change the averager's target group size in its background process."""

    _outer_pipe: Any
    _matchmaking: Any
    _sent_group_size: int | None = None

    def set_target_group_size(self, size: int | None) -> None:
        if size != self._sent_group_size:
            self._sent_group_size = size
            # Commands on this pipe run in order, so the size applies to every step requested after it.
            self._outer_pipe.send(("_apply_target_group_size", [size], {}))

    async def _apply_target_group_size(self, size: int | None) -> None:
        self._matchmaking.target_group_size = size


class SizedGradientAverager(GroupSizeMixin, GradientAverager):  # type: ignore[misc]
    """Sends a fingerprint of this peer's parameters with every round, so peers can tell they differ."""

    def schedule_step(self, scheduled_time: float | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("gather", fingerprint(self.parameters))
        return super().schedule_step(scheduled_time, **kwargs)


def fingerprint(parameters: Any) -> tuple[float, float]:
    """Sum and absolute sum of all parameters: equal across peers up to all-reduce rounding (~1e-8)."""
    with torch.no_grad():
        total = sum(float(p.detach().double().sum()) for p in parameters)
        magnitude = sum(float(p.detach().double().abs().sum()) for p in parameters)
    return total, magnitude


def same_fingerprint(a: Any, b: Any) -> bool:
    if not (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b) == 2):
        return True  # a peer that sent none (another client version) cannot be judged
    scale = 1.0 + abs(float(a[1]))
    return (
        abs(float(a[0]) - float(b[0])) <= _FINGERPRINT_TOLERANCE * scale
        and abs(float(a[1]) - float(b[1])) <= _FINGERPRINT_TOLERANCE * scale
    )


class SizedStateAverager(GroupSizeMixin, TrainingStateAverager):  # type: ignore[misc]
    """Serves its state labelled with the step whose update the parameters actually contain.

    hivemind increments the epoch before the optimizer step runs (in a background executor), so a
    peer downloading state in between gets the previous parameters under the new label and stays
    one update apart from everyone while believing it is in sync.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.applied_epoch = int(self.local_epoch)
        self.optimizer.register_step_post_hook(self._record_applied_epoch)

    def _record_applied_epoch(self, *_: Any) -> None:
        self.applied_epoch = int(self.local_epoch)

    def get_current_state(self) -> Any:
        with self.lock_optimizer:  # the optimizer step holds it: never serve a half-applied update
            metadata, *rest = super().get_current_state()
            return (dict(metadata, epoch=self.applied_epoch), *rest)

    def load_state_from_peers(self, **kwargs: Any) -> None:
        super().load_state_from_peers(**kwargs)
        self.applied_epoch = int(self.local_epoch)

    def shutdown(self) -> None:
        super().shutdown()
        self.step_executor.shutdown(wait=True)  # hivemind never stops this executor's thread
