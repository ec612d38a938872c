"""hivemind.Optimizer, tuned so that small, fast collaborations do not wait on fixed matchmaking windows.

hivemind forms an averaging group by waiting for the whole ``matchmaking_time`` unless the group
reaches ``target_group_size``, which is fixed at start-up. Here the target follows the number of
peers the progress tracker currently sees, so a group closes the moment every known peer has joined;
``matchmaking_time`` becomes an upper bound for when someone is missing. A peer that is alone does not
look for groups at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hivemind
from hivemind.optim.grad_averager import GradientAverager
from hivemind.optim.progress_tracker import GlobalTrainingProgress, ProgressTracker
from hivemind.optim.state_averager import TrainingStateAverager
from hivemind.utils import ValueWithExpiration, get_dht_time


class _GroupSizeMixin:
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


class SizedGradientAverager(_GroupSizeMixin, GradientAverager):
    pass


class SizedStateAverager(_GroupSizeMixin, TrainingStateAverager):
    pass


class SelfCountingTracker(ProgressTracker):  # type: ignore[misc]
    """A progress tracker that always counts this peer's own, current progress.

    hivemind stores a peer's progress on the DHT nodes nearest to the key, which in a swarm of two or
    three nodes often excludes the peer itself; its own samples and speed then vanish from the
    estimate, the swarm looks one peer smaller (two peers do not even average) and steps come late.
    """

    def _parse_swarm_progress_data(self, metadata: Any) -> GlobalTrainingProgress:
        records = dict(metadata) if isinstance(metadata, dict) else {}
        records[self._local_public_key] = ValueWithExpiration(
            self.local_progress.dict(), get_dht_time() + self.metadata_expiration
        )
        return super()._parse_swarm_progress_data(records)

    def run(self) -> None:
        # hivemind's run() leaves its event loop's executor threads alive after shutdown.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(asyncio.gather(self._progress_reporter(), self._progress_fetcher()))
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            self.shutdown_complete.set()


class CollaborativeOptimizer(hivemind.Optimizer):  # type: ignore[misc]
    """A hivemind.Optimizer whose averaging groups close as soon as all known peers have joined."""

    def __init__(self, **kwargs: Any) -> None:
        if not kwargs.get("use_local_updates", False):
            kwargs.setdefault("grad_averager_factory", SizedGradientAverager)
        super().__init__(**kwargs)

    def _make_state_averager(self, **kwargs: Any) -> TrainingStateAverager:
        return SizedStateAverager(
            dht=self.dht,
            prefix=f"{self.run_id}_state_averager",
            min_matchmaking_time=self.matchmaking_time,
            allreduce_timeout=self.allreduce_timeout,
            shutdown_timeout=self.shutdown_timeout,
            offload_optimizer=self.offload_optimizer,
            custom_gradients=self.offload_optimizer,
            status_loglevel=self.status_loglevel,
            next_chunk_timeout=self.next_chunk_timeout,
            client_mode=self.client_mode,
            auxiliary=self.auxiliary,
            start=True,
            **kwargs,
        )

    def _make_progress_tracker(self, target_batch_size: int, **kwargs: Any) -> ProgressTracker:
        return SelfCountingTracker(
            dht=self.dht,
            prefix=self.run_id,
            target_batch_size=target_batch_size,
            client_mode=self.client_mode,
            status_loglevel=self.status_loglevel,
            start=True,
            **kwargs,
        )

    @property
    def num_peers(self) -> int:
        """Peers in the collaboration as the progress tracker last saw them, this one included."""
        return max(int(self.tracker.global_progress.num_peers), 1)

    def step(self, *args: Any, **kwargs: Any) -> Any:
        size = self.num_peers if self.num_peers > 1 else None
        for averager in (self.grad_averager, self.state_averager):
            if isinstance(averager, _GroupSizeMixin):
                averager.set_target_group_size(size)
        return super().step(*args, **kwargs)

    def _maybe_schedule_gradient_averaging(self) -> None:
        if self.num_peers > 1:
            super()._maybe_schedule_gradient_averaging()

    def _maybe_schedule_state_averaging(self) -> None:
        if self.num_peers > 1:
            super()._maybe_schedule_state_averaging()
