"""hivemind.Optimizer, tuned so that small, fast collaborations do not wait on fixed matchmaking windows.

hivemind forms an averaging group by waiting for the whole ``matchmaking_time`` unless the group
reaches ``target_group_size``, which is fixed at start-up. Here the target follows the number of
peers the progress tracker currently sees, so a group closes the moment every known peer has joined;
``matchmaking_time`` becomes an upper bound for when someone is missing. A peer that is alone does not
look for groups at all. Peers also stay identical rather than merely close: whoever a round left out
of the majority, or whose parameters differ from its group's, downloads the majority's state.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from hivemind.optim.progress_tracker import ProgressTracker
from hivemind.optim.state_averager import TrainingStateAverager

from hiveling.core.swarm.averagers import (
    GroupSizeMixin,
    SizedGradientAverager,
    SizedStateAverager,
    gathered_epoch,
    same_fingerprint,
)
from hiveling.core.swarm.overlap import OverlappedSteps
from hiveling.core.swarm.tracker import SelfCountingTracker

logger = logging.getLogger(__name__)

_LOAD_ATTEMPTS = 5
_LOAD_RETRY_SECONDS = 0.2
_LEFT_ALONE_CHECK_SECONDS = 1.0


def is_reference_group(group: set[bytes], expected: set[bytes]) -> bool:
    """Whether a peer that averaged with ``group`` keeps its state when ``expected`` peers were due.

    When a round splits the swarm, exactly one side should keep its parameters and the others
    download them: the strict majority, or among halves the one holding the smallest peer id.
    """
    if expected <= group:
        return True
    if 2 * len(group) != len(expected):
        return 2 * len(group) > len(expected)
    return min(expected) in group


def keeps_its_state(me: bytes, gathered: dict[bytes, Any], expected: set[bytes]) -> tuple[bool, str]:
    """Whether this peer keeps its parameters after a round whose peers sent ``gathered`` (peer id to
    fingerprint and step), when ``expected`` peers were due; if not, why it should download them."""
    group = {me} | set(gathered)
    if not is_reference_group(group, expected):
        return False, "This peer's round left out most of the swarm"
    if me not in gathered:
        return True, ""
    epochs = {peer: gathered_epoch(data) for peer, data in gathered.items()}
    known = [e for e in epochs.values() if e is not None]
    newest = max(known) if known else None
    mine = epochs[me]
    if newest is not None and mine is not None and mine < newest:
        # A peer that was stalled (a join, a slow round) averaged with peers that had moved on.
        return False, "This peer is behind its averaging group"
    # Same step, different parameters (say, a round that half-failed earlier): the majority of the
    # peers at the newest step wins; those behind download anyway.
    current = {peer for peer, e in epochs.items() if e is None or e == newest}
    alike = {peer for peer in current if same_fingerprint(gathered[peer], gathered[me])}
    if not is_reference_group(alike, current):
        return False, "Parameters differ from the majority of the group"
    return True, ""


class NonFiniteTraining(RuntimeError):
    """This peer's gradients stayed non-finite batch after batch: its data or model gives NaN or inf."""

    def __init__(self, batches: int) -> None:
        super().__init__(
            f"training gave non-finite gradients (NaN or inf) for {batches} batches in a row, and none "
            "of them reached the other peers; check this peer's data, model and precision (an fp16 "
            "overflow shows this way), then start it again"
        )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether no tensor holds a NaN or an infinity (one device sync, however many tensors)."""
    if not tensors:
        return True
    norms = torch.stack([torch.linalg.vector_norm(t.detach(), dtype=torch.float32) for t in tensors])
    return bool(torch.isfinite(norms).all())


class CollaborativeOptimizer(OverlappedSteps):
    """A hivemind.Optimizer whose averaging groups close as soon as all known peers have joined."""

    def __init__(self, *, overlap_averaging: bool = False, **kwargs: Any) -> None:
        self.overlap_averaging = overlap_averaging
        if not kwargs.get("use_local_updates", False):
            # hivemind hands averager_opts to the state averager only: the gradient one gets its gate here.
            admission = (kwargs.get("averager_opts") or {}).get("admission")
            kwargs.setdefault(
                "grad_averager_factory", functools.partial(SizedGradientAverager, admission=admission)
            )
        super().__init__(**kwargs)
        if isinstance(self.state_averager, SizedStateAverager):
            self.state_averager.update_landing = self.update_landing
        if isinstance(self.grad_averager, SizedGradientAverager):
            self.grad_averager.current_epoch = lambda: int(self.local_epoch)

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

    _resync_needed = False
    #: Local batches whose gradients were not finite: left out of every round.
    skipped_batches = 0
    #: Rounds whose averaged gradients were not finite: not applied.
    rejected_rounds = 0
    #: Non-finite batches in a row after which this peer stops (NonFiniteTraining) rather than idle on.
    non_finite_limit = 20
    _non_finite_run = 0

    def _check_and_accumulate_gradients(self, batch_size: int, grad_scaler: Any) -> bool:
        if grad_scaler is not None:  # hivemind's fp16 scaler already skips and resets on overflow
            return bool(super()._check_and_accumulate_gradients(batch_size, grad_scaler))
        gradients = [p.grad for p in self.grad_averager.parameters if p.grad is not None]
        if all_finite(gradients):
            self._non_finite_run = 0
            return bool(super()._check_and_accumulate_gradients(batch_size, grad_scaler))
        self.skipped_batches += 1
        self._non_finite_run += 1
        if self.grad_averager.reuse_grad_buffers:
            # The batch was added to the step's buffers already: the step's local work is lost.
            self.grad_averager.reset_accumulated_grads_()
            self.tracker.report_local_progress(self.local_epoch, 0)
        if self._non_finite_run >= self.non_finite_limit:
            raise NonFiniteTraining(self._non_finite_run)
        if self._non_finite_run == 1:
            logger.warning(
                "This batch's gradients are not finite (NaN or inf): left out of the collaboration "
                "(%d such batches so far)",
                self.skipped_batches,
            )
            if not all_finite(list(self.grad_averager.parameters)) and self.num_peers > 1:
                logger.warning("This peer's parameters are not finite: taking the swarm's")
                self.load_state_from_peers()
        return False  # nothing accumulated: the batch's gradients are cleared before the next one

    def _load_averaged_gradients_into_optimizer_(self) -> None:
        super()._load_averaged_gradients_into_optimizer_()
        if self.offload_optimizer:
            return  # hivemind's averager wrote straight into the optimizer's own buffers
        params = [p for group in self.state_averager.optimizer.param_groups for p in group["params"]]
        if all_finite([p.grad for p in params if p.grad is not None]):
            return
        # Every peer of the round got the same result and drops it the same way: they stay identical.
        self.rejected_rounds += 1
        logger.warning(
            "The averaged gradients of step %d are not finite: the step is not applied (%d such rounds)",
            int(self.local_epoch),
            self.rejected_rounds,
        )
        for param in params:
            param.grad = None  # torch optimizers leave parameters without a gradient untouched

    def step(self, *args: Any, **kwargs: Any) -> Any:
        if self._resync_needed:
            # Our last round did not include the reference side of the swarm: take its state as is,
            # rather than drift apart by one differently averaged step after another. Alone, there is
            # nobody to take it from, and this peer's state is the collaboration's.
            self._resync_needed = False
            if self.num_peers > 1:
                self.load_state_from_peers()
        size = self.num_peers if self.num_peers > 1 else None
        for averager in (self.grad_averager, self.state_averager):
            if isinstance(averager, GroupSizeMixin):
                averager.set_target_group_size(size)
        return super().step(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # from a checkpoint: the parameters hold that step's update
        self.state_averager.applied_epoch = int(self.local_epoch)

    def load_state_from_peers(self, **kwargs: Any) -> None:
        """Download the swarm's state; retry briefly while the peers are still applying the current step.

        The only override of hivemind's download on the optimizer's side. Each attempt, in order:

        1. drops an overlapped update not applied yet: it was computed on the parameters being replaced
           (``OverlappedSteps``);
        2. takes over a round the helper thread is still pre-scheduling, since hivemind retires the
           scheduled round it knows of (``BackgroundPrescheduling``);
        3. lets hivemind download, through ``SizedStateAverager.load_state_from_peers``, which notes the
           step the peers served and whether the download was refused (``averagers.py``).

        hivemind relabels a state that is one step behind as current, which would leave this peer one
        update apart from the others for good: hence the retries.

        Whatever the outcome, the learning-rate schedule ends at this peer's step: an overlapped step
        whose update was dropped had advanced the epoch but not the schedule, and a download that
        failed or was refused leaves the schedule where hivemind's step would have moved it.
        """
        try:
            self._load_state_with_retries(**kwargs)
        finally:
            with self.state_averager.lock_optimizer:  # a delayed optimizer step may be running
                self.state_averager._update_scheduler()

    def _load_state_with_retries(self, **kwargs: Any) -> None:
        for _ in range(_LOAD_ATTEMPTS):
            before = int(self.local_epoch)
            self.discard_pending_update()
            self._take_scheduled_round(wait=True)
            super().load_state_from_peers(**kwargs)
            averager = self.state_averager
            served = getattr(averager, "served_epoch", None)
            refused = getattr(averager, "last_load_refused", False)
            if refused and served is not None and served < before - 1:
                logger.info("Peers serve step %d, this peer is at %d: keeping its own state", served, before)
                return
            if not refused and averager.applied_epoch >= self.tracker.global_epoch:
                self.step_averaged = True  # the parameters are the swarm's again
                return
            time.sleep(_LOAD_RETRY_SECONDS)
        logger.warning("Peers kept serving an older step than the swarm's; continuing from it")
        if isinstance(self.tracker, SelfCountingTracker):
            # Records that claim steps nobody serves would send this peer here at every step.
            served = getattr(self.state_averager, "served_epoch", None)
            self.tracker.doubt_steps_above(
                max(-1 if served is None else int(served), int(self.local_epoch)) + 1
            )

    def _others_still_training(self) -> bool:
        """Ask the DHT directly (the tracker is paused during a step) whether another peer is still there.

        A peer that leaves cleanly erases its progress record; one that died keeps it until it expires,
        and then ``averaging_timeout`` bounds the wait.
        """
        found = self.dht.get(self.tracker.training_progress_key, latest=True)
        records = found.value if found is not None and isinstance(found.value, dict) else {}
        me = self.dht.peer_id.to_bytes()
        believes = self.tracker.believes if isinstance(self.tracker, SelfCountingTracker) else bool
        return any(
            isinstance(value, dict) and bytes(value.get("peer_id", b"")) != me and believes(record)
            for record, value in ((record, getattr(record, "value", None)) for record in records.values())
        )

    #: Asked between checks while a round runs: whether this peer is leaving (a stop, a "pause now"),
    #: so that it leaves the round instead of waiting up to ``averaging_timeout`` for peers that are
    #: gone (their records outlive a killed or paused worker).
    leaving: Callable[[], bool] = staticmethod(lambda: False)
    _left_round = False

    def _wait_for_round(self, control: Any) -> None:
        """Wait for an averaging round, but give up as soon as every other peer has left, or this one
        is leaving."""
        self._left_round = False
        deadline = time.monotonic() + (self.averaging_timeout or 0.0)
        while not control.done() and time.monotonic() < deadline:
            # A failed round ("could not find a group") is hivemind's to handle just after: local
            # gradients, then re-synchronization. Only how long to wait is decided here.
            with contextlib.suppress(Exception, concurrent.futures.TimeoutError):
                control.result(timeout=_LEFT_ALONE_CHECK_SECONDS)
            if control.done():
                break
            if self.leaving():
                logger.info("Leaving the averaging round: this peer is stopping")
                self._left_round = True
                control.cancel()
            elif not self._others_still_training():
                logger.info("Every other peer left during the averaging round: continuing alone")
                control.cancel()

    #: Whether the last step's update holds the group's averaged gradients, applied to the group's
    #: parameters (or this peer was alone and no round was due); False after a failed round, whose
    #: update holds this peer's gradients only, and after a round that found this peer out of step.
    step_averaged = True
    #: Rounds that failed (a timeout, peers lost) and left this peer stepping on its own gradients.
    failed_rounds = 0
    #: Rounds after which this peer's parameters were not the group's (it was behind, or in the
    #: minority) and it downloaded the group's state.
    resynced_rounds = 0

    def _average_gradients_and_load_into_optimizer(self, maybe_step_control: Any) -> None:
        if maybe_step_control is not None:
            self._wait_for_round(maybe_step_control)
        super()._average_gradients_and_load_into_optimizer(maybe_step_control)
        me = self.dht.peer_id.to_bytes()
        group = {me}
        gathered: dict[bytes, Any] = {}
        control = maybe_step_control
        if control is not None and control.done() and not control.cancelled() and control.exception() is None:
            gathered = {peer.to_bytes(): data for peer, data in control.result().items()}
            group |= set(gathered)
        self.step_averaged = control is None or bool(gathered)
        if not self.step_averaged and not self._left_round:
            self.failed_rounds += 1
            logger.warning(
                "The averaging round of step %d failed: this step used this peer's gradients only; "
                "it takes the swarm's state at its next step (%d such rounds so far)",
                int(self.local_epoch),
                self.failed_rounds,
            )
        expected = set(self.tracker.active_peer_ids) | group
        keep, why = keeps_its_state(me, gathered, expected)
        if gathered and isinstance(self.tracker, SelfCountingTracker):
            # Groups are meant to hold the whole swarm: whoever has a record but did not come is gone
            # (killed, cut off) or late; either way, the next rounds do not wait for it.
            missing = set(self.tracker.known_peer_ids) - group
            if missing:
                logger.info(
                    "%d peer(s) did not join the averaging round of step %d: not waited for until they "
                    "report again",
                    len(missing),
                    int(self.local_epoch),
                )
                self.tracker.mark_absent(missing)
        if not keep:
            logger.info("%s: downloading their state", why)
            # Averaged or not, this step's update landed on parameters that were not the group's: the
            # peer agrees with the others again once the download is in, not at this step.
            self.step_averaged = False
            self.resynced_rounds += 1
        self._resync_needed = not keep

    def _state_replaced_soon(self) -> bool:
        return self._resync_needed  # download first, so the next round carries the new fingerprint

    def _should_look_for_group(self) -> bool:
        return self.num_peers > 1

    def _after_update_applied(self) -> None:
        super()._after_update_applied()
        if not self._resync_needed and not self.client_mode and not self.delay_grad_averaging:
            # Peers that must re-synchronize download from the highest priority: make that this side.
            self.state_averager.state_sharing_priority = self.local_epoch + 0.5

    def _maybe_schedule_state_averaging(self) -> None:
        if self.num_peers > 1:
            super()._maybe_schedule_state_averaging()
