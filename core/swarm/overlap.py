"""Collaborative steps whose gradient averaging overlaps the next local batches.

hivemind's synchronous step blocks training for the whole all-reduce. Here the step only starts the
round and moves on to the next step's batches; the update is applied between two batches as soon as
the round has finished (usually after one batch), and at the latest when the next step begins. Every
peer applies the same update to the same parameters, so peers stay identical; the price is that the
batches trained during the round compute their gradients on the parameters before that update.

Steps fall back to hivemind's synchronous path while a peer is alone, with an fp16 grad scaler
(hivemind's scaler unscales and steps within one call), with ``reuse_grad_buffers`` (the averaged
gradients would land in the buffers that accumulate the next step) and with hivemind's own delayed
modes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from hiveling.core.swarm.prescheduling import BackgroundPrescheduling

logger = logging.getLogger(__name__)


@dataclass
class PendingUpdate:
    """A step whose epoch has begun but whose update is not applied yet."""

    control: Any  # hivemind StepControl of the running gradient round; None for local gradients
    average_state: bool
    state_control: Any


class OverlappedSteps(BackgroundPrescheduling):
    """A hivemind.Optimizer that averages gradients while the next batches train."""

    overlap_averaging = False
    #: Updates applied between two batches after their epoch had begun (the overlap at work).
    overlapped_updates = 0
    _pending: PendingUpdate | None = None
    scheduled_grads: Any  # hivemind's pre-scheduled rounds (StepControl or None)
    scheduled_state: Any

    def _can_overlap(self, grad_scaler: Any) -> bool:
        return (
            self.overlap_averaging
            and grad_scaler is None
            and self.use_gradient_averaging
            and not self.auxiliary
            and not self.delay_optimizer_step
            and not self.grad_averager.reuse_grad_buffers
            and self.tracker.global_progress.num_peers > 1
        )

    @property
    def update_pending(self) -> bool:
        """Whether a step's epoch has begun but its update is not applied yet."""
        return self._pending is not None

    def update_landing(self) -> bool:
        """Whether a pending update only waits for this process to reach its next batch."""
        pending = self._pending
        return pending is not None and (pending.control is None or pending.control.done())

    def _update_global_epoch(self, grad_scaler: Any) -> None:
        self.finish_pending_update()
        if self._state_replaced_soon():
            return  # the parameters are about to be replaced: no round with what was computed on them
        if not self._can_overlap(grad_scaler):
            super()._update_global_epoch(grad_scaler)
            self._after_update_applied()
            return
        assert self._schema_hash == self._compute_schema_hash(), "parameters or gradients changed"
        epoch_start = time.perf_counter()
        with self.tracker.pause_updates():
            began = self._begin_averaging_gradients(None)  # replaces a spent pre-scheduled round
            if not began:
                self.grad_averager.load_accumulators_into_averager_()
            control = self.scheduled_grads if began else None
            self.scheduled_grads = None

            next_epoch = max(self.local_epoch + 1, self.tracker.global_epoch)
            average_state = (
                self.tracker.global_progress.num_peers > 1
                and next_epoch % self.average_state_every == 0
                and not self.state_averager.averaging_in_progress
            )
            state_control = self.scheduled_state if average_state else None
            if state_control is not None:
                if state_control.triggered or state_control.done():
                    state_control = None
                # hivemind pre-schedules state averaging from how long this part of a step takes.
                elapsed = time.perf_counter() - epoch_start
                self.delay_before_state_averaging.update(task_size=1, interval=elapsed)
            if not average_state and self.scheduled_state is not None and not self.scheduled_state.done():
                self.scheduled_state.cancel()
            self.scheduled_state = None

            # The epoch advances now, so every peer starts counting samples toward the next step.
            self.state_averager.step(increment_epoch=True)
            self._pending = PendingUpdate(control, average_state, state_control)
            self.tracker.update_epoch(new_epoch=self.state_averager.local_epoch)
            self._should_check_synchronization_on_update = True
            self.grad_averager.reset_accumulated_grads_()
            if not self.client_mode:
                self.grad_averager.state_sharing_priority = self.local_epoch
            logger.log(self.status_loglevel, "Epoch %d begins; averaging continues", self.local_epoch)
        if control is None:
            self.finish_pending_update()

    def finish_pending_update(self) -> None:
        """Wait for the running round, if any, and apply its update to the parameters."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.control is None:  # the round could not start: the buffers hold local gradients
            self._load_averaged_gradients_into_optimizer_()
        else:
            self._average_gradients_and_load_into_optimizer(pending.control)
        self.state_averager.step(
            optimizer_step=True,
            averaging_round=pending.average_state,
            delay_averaging=self.delay_state_averaging,
            averaging_control=pending.state_control if pending.average_state else None,
            averaging_opts=dict(timeout=self.averaging_timeout) if pending.average_state else None,
        )
        self._after_update_applied()

    def discard_pending_update(self) -> None:
        """Forget the running round (the state is about to be replaced), letting it finish unused."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.grad_averager.notify_used_averaged_gradients()
            if pending.state_control is not None and not pending.state_control.done():
                pending.state_control.cancel()

    def _after_update_applied(self) -> None:
        """Called once a step's update is in the parameters (its epoch may have begun earlier)."""
        if not self.client_mode:
            self.state_averager.state_sharing_priority = self.local_epoch

    def _maybe_schedule_gradient_averaging(self) -> None:
        if self._pending is not None:
            if not self.update_landing():
                return  # the next round looks for its group once this one is over
            self.overlapped_updates += 1
            self.finish_pending_update()
        if self._should_look_for_group() and not self._state_replaced_soon():
            super()._maybe_schedule_gradient_averaging()

    def _should_look_for_group(self) -> bool:
        return True

    def _state_replaced_soon(self) -> bool:
        """Whether the parameters are about to be replaced (downloaded from peers).

        A round carries what its peers know when it is scheduled (such as a fingerprint of their
        parameters), so none is scheduled or started until the new parameters are in.
        """
        return False

    def _should_load_state_from_peers(self) -> bool:
        if self.overlap_averaging and self.local_epoch == self.tracker.global_epoch - 1:
            # One step behind: the others began the next step and wait in its round for this peer,
            # whose next batch joins it. Downloading instead would wait on that very round's update.
            self._should_check_synchronization_on_update = False
            return False
        return bool(super()._should_load_state_from_peers())

    def state_dict(self) -> dict[str, Any]:
        self.finish_pending_update()  # a checkpoint holds every step its epoch counts
        return super().state_dict()  # type: ignore[no-any-return]

    #: At shutdown, how long to let a running round finish (the others need this peer's part).
    shutdown_round_wait = 5.0

    def shutdown(self) -> None:
        pending = self._pending
        if pending is not None and pending.control is not None and not pending.control.done():
            with contextlib.suppress(Exception):
                pending.control.result(timeout=min(self.shutdown_round_wait, self.averaging_timeout or 0.0))
        try:
            if self.update_landing():
                self.finish_pending_update()
            else:
                self.discard_pending_update()
        except Exception as e:  # the last round may fail as peers leave; shut down regardless
            logger.warning("The last collaborative update was not applied: %r", e)
        super().shutdown()
