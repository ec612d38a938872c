"""hivemind's averagers with two additions: a target group size the parent can change at run time,
and states and rounds that say which parameters they carry (step label, fingerprint)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, AsyncIterator  # noqa: UP035 (hivemind reads typing's AsyncIterator, not abc's)

import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.allreduce import AllreduceException
from hivemind.optim.grad_averager import GradientAverager
from hivemind.optim.state_averager import TrainingStateAverager
from hivemind.p2p import P2PContext
from hivemind.proto import averaging_pb2

from hiveling.core.swarm.admission import Admission, Gate

_FINGERPRINT_TOLERANCE = 1e-6


class LockedSends:
    """An averager's command pipe whose sends do not interleave: rounds are scheduled from a helper
    thread while the training thread sends its own commands."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()

    def send(self, obj: Any) -> None:
        with self._lock:
            self._pipe.send(obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


#: The round a task of the averager's process runs: a task's context is its own, and hivemind awaits
#: the all-reduce in tasks created from it, which inherit it.
_ROUND: contextvars.ContextVar[Any] = contextvars.ContextVar("hiveling_round")


class AdmittedCallers:
    """In a closed run (``admission`` given), serves group joins, parts of averages and state downloads
    only to callers that show a token of the run for their own peer id (:class:`admission.Gate`).

    hivemind finds an averager's handlers, and their message types, from these methods' annotations.
    """

    _p2p: Any

    def __init__(self, *args: Any, admission: Admission | None = None, **kwargs: Any) -> None:
        self._gate = Gate(admission) if admission is not None else None
        super().__init__(*args, **kwargs)

    async def _admits(self, context: P2PContext) -> bool:
        return self._gate is None or await self._gate.admits(self._p2p, context.remote_id)

    async def rpc_join_group(
        self, request: averaging_pb2.JoinRequest, context: P2PContext
    ) -> AsyncIterator[averaging_pb2.MessageFromLeader]:
        if not await self._admits(context):
            yield averaging_pb2.MessageFromLeader(code=averaging_pb2.PROTOCOL_VIOLATION)
            return
        async for answer in super().rpc_join_group(request, context):  # type: ignore[misc]
            yield answer

    async def rpc_aggregate_part(
        self, stream: AsyncIterator[averaging_pb2.AveragingData], context: P2PContext
    ) -> AsyncIterator[averaging_pb2.AveragingData]:
        if not await self._admits(context):
            yield averaging_pb2.AveragingData(code=averaging_pb2.PROTOCOL_VIOLATION)
            return
        async for answer in super().rpc_aggregate_part(stream, context):  # type: ignore[misc]
            yield answer

    async def rpc_download_state(
        self, request: averaging_pb2.DownloadRequest, context: P2PContext
    ) -> AsyncIterator[averaging_pb2.DownloadData]:
        if not await self._admits(context):
            return
        async for answer in super().rpc_download_state(request, context):  # type: ignore[misc]
            yield answer


class WholeRounds:
    """An all-reduce that lost part of the average fails, rather than pass for a success.

    When a peer's part of the average does not come back (a stream broken or timed out), hivemind fills
    it with this peer's own values and reports the round as done. The peers then step on averages that
    differ in those parts, and the replicas fork without a word: the cause of the parameter differences
    of 1e-4 and more seen after some rounds ("Averaging: received 40.8% results" in the log). Failed
    instead, the round is handled as any failed round: local gradients, logged and counted, and the
    peers that differ take the swarm's state at their next step. No retry: the tensors hold part of an
    average by then.
    """

    _running_groups: dict[Any, Any]

    async def _step(self, *, step: Any, future_for_init: Any) -> Any:
        _ROUND.set(step)
        return await super()._step(step=step, future_for_init=future_for_init)  # type: ignore[misc]

    async def _aggregate_with_group(self, group_info: Any, min_vector_size: int, **kwargs: Any) -> Any:
        gathered = await super()._aggregate_with_group(  # type: ignore[misc]
            group_info, min_vector_size, **kwargs
        )
        registered = self._running_groups.get(group_info.group_id)
        runner = registered.result() if registered is not None and registered.done() else None
        parts = getattr(runner, "tensor_part_container", None)
        missing = int(getattr(parts, "failed_size", 0))
        if missing:
            step = _ROUND.get(None)
            if step is not None:
                step._allow_retries = False
            total = int(getattr(parts, "total_size", 0))
            raise AllreduceException(f"{missing} of {total} averaged values did not arrive: the round failed")
        return gathered


class GroupSizeMixin:
    """Lets the parent process change the averager's target group size in its background process."""

    _outer_pipe: Any
    _matchmaking: Any
    _sent_group_size: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # After the background process has started: only this process writes to this end.
        self._outer_pipe = LockedSends(self._outer_pipe)

    def set_target_group_size(self, size: int | None) -> None:
        if size != self._sent_group_size:
            self._sent_group_size = size
            # Commands on this pipe run in order, so the size applies to every step requested after it.
            self._outer_pipe.send(("_apply_target_group_size", [size], {}))

    async def _apply_target_group_size(self, size: int | None) -> None:
        self._matchmaking.target_group_size = size


class SizedGradientAverager(AdmittedCallers, WholeRounds, GroupSizeMixin, GradientAverager):  # type: ignore[misc]
    """Sends a fingerprint of this peer's parameters and its step with every round, so peers can tell
    they differ and which of them is behind."""

    #: Set by the optimizer: the collaborative step this peer's parameters are at.
    current_epoch: Callable[[], int] | None = None

    def round_data(self) -> tuple[float, float, int | None]:
        """What this peer tells its next round: the fingerprint of its parameters and its step."""
        epoch = self.current_epoch() if self.current_epoch is not None else None
        return (*fingerprint(self.parameters), epoch)

    def schedule_step(self, scheduled_time: float | None = None, **kwargs: Any) -> Any:
        if "gather" not in kwargs:
            kwargs["gather"] = self.round_data()
        return super().schedule_step(scheduled_time, **kwargs)


def fingerprint(parameters: Any) -> tuple[float, float]:
    """Sum and absolute sum of all parameters: equal across peers up to all-reduce rounding (~1e-8)."""
    with torch.no_grad():
        total = sum(float(p.detach().double().sum()) for p in parameters)
        magnitude = sum(float(p.detach().double().abs().sum()) for p in parameters)
    return total, magnitude


def gathered_epoch(data: Any) -> int | None:
    """The step a peer's round data says its parameters are at (None if it did not say)."""
    if isinstance(data, (tuple, list)) and len(data) >= 3 and isinstance(data[2], int):
        return data[2]
    return None


def same_fingerprint(a: Any, b: Any) -> bool:
    if not (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and min(len(a), len(b)) >= 2):
        return True  # a peer that sent none (another client version) cannot be judged
    scale = 1.0 + abs(float(a[1]))
    return (
        abs(float(a[0]) - float(b[0])) <= _FINGERPRINT_TOLERANCE * scale
        and abs(float(a[1]) - float(b[1])) <= _FINGERPRINT_TOLERANCE * scale
    )


class _ServedEpoch(DecentralizedAverager):  # type: ignore[misc]
    """Remembers the epoch of the last state downloaded, before hivemind decides whether to use it."""

    served_epoch: int | None = None

    def load_state_from_peers(self, **kwargs: Any) -> Any:
        loaded = super().load_state_from_peers(**kwargs)
        metadata = loaded[0] if isinstance(loaded, tuple) and loaded else None
        epoch = metadata.get("epoch") if isinstance(metadata, dict) else None
        self.served_epoch = epoch if isinstance(epoch, int) else None
        return loaded


class SizedStateAverager(AdmittedCallers, WholeRounds, GroupSizeMixin, TrainingStateAverager, _ServedEpoch):  # type: ignore[misc]
    """Serves its state labelled with the step whose update the parameters actually contain.

    hivemind increments the epoch before the optimizer step runs (in a background executor), so a
    peer downloading state in between gets the previous parameters under the new label and stays
    one update apart from everyone while believing it is in sync.
    """

    #: How long a peer asking for the state waits for an update whose epoch has already begun.
    pending_update_wait = 5.0

    def __init__(self, **kwargs: Any) -> None:
        self._applied = threading.Condition()
        #: Set by the optimizer: whether an update whose epoch has begun only waits for this process
        #: (its averaging round is over). Waiting on a round could wait on the peer asking.
        self.update_landing: Callable[[], bool] = lambda: False
        super().__init__(**kwargs)
        self.applied_epoch = int(self.local_epoch)
        self.optimizer.register_step_post_hook(self._record_applied_epoch)

    def _record_applied_epoch(self, *_: Any) -> None:
        with self._applied:
            self.applied_epoch = int(self.local_epoch)
            self._applied.notify_all()

    def get_current_state(self) -> Any:
        # With overlapped averaging a step's epoch begins before its update lands (usually one batch
        # later): serve the state with that update rather than one a step behind the swarm.
        with self._applied:
            self._applied.wait_for(
                lambda: self.applied_epoch >= self.local_epoch or not self.update_landing(),
                self.pending_update_wait,
            )
        with self.lock_optimizer:  # the optimizer step holds it: never serve a half-applied update
            metadata, tensors, *rest = super().get_current_state()
            # hivemind hands CPU tensors to its averager process through a pipe, and pickling a tensor
            # moves its storage into shared memory in place, from this background thread: the live
            # parameters would be freed under the training thread's feet (one garbage batch when the
            # first peer downloads). Serve copies of the live ones (CUDA tensors were copied already),
            # taken while averaging results cannot land either.
            live = {t.data_ptr() for t in self._live_cpu_tensors()}
            with self.lock_averaged_tensors:
                snapshot = [t.detach().clone() if t.data_ptr() in live else t for t in tensors]
            return (dict(metadata, epoch=self.applied_epoch), snapshot, *rest)

    def _live_cpu_tensors(self) -> list[torch.Tensor]:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        state = [t for s in self.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        return [t for t in (*params, *state, *self.extra_tensors) if t.device.type == "cpu"]

    #: Whether the last download was refused: nothing served, or a state older than this peer's.
    last_load_refused = False

    def load_state_from_peers(self, **kwargs: Any) -> None:
        before = int(self.local_epoch)
        self.served_epoch = None
        super().load_state_from_peers(**kwargs)
        self.last_load_refused = self.served_epoch is None or self.served_epoch < before
        self.applied_epoch = int(self.local_epoch)

    def shutdown(self) -> None:
        super().shutdown()
        self.step_executor.shutdown(wait=True)  # hivemind never stops this executor's thread
