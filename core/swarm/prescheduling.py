"""Gradient rounds pre-scheduled off the training thread.

hivemind asks its averager process for the next round's handles about ``matchmaking_time`` before a
step, and the training thread waits for that round trip (a few milliseconds, more on a busy machine:
about 5% of a peer's time in ``bench/``). Here a helper thread asks instead; the training thread
takes the handles once they are there, or waits for them only where it needs them: when the step
begins, when the state is replaced, at shutdown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from typing import Any

import hivemind
from hivemind.averaging.control import AveragingStage
from hivemind.utils import get_dht_time

logger = logging.getLogger(__name__)

#: Longer than this, and the averager process is stuck: the step goes on without a pre-scheduled round.
_SCHEDULING_TIMEOUT = 30.0


class BackgroundPrescheduling(hivemind.Optimizer):  # type: ignore[misc]
    """A hivemind.Optimizer whose training thread does not wait while the next round is scheduled."""

    scheduled_grads: Any
    _scheduling: concurrent.futures.Future[Any] | None = None
    _scheduler: concurrent.futures.ThreadPoolExecutor | None = None
    #: Set when the averager process did not answer in time: steps then start their own rounds.
    _scheduler_stuck = False

    def _maybe_schedule_gradient_averaging(self) -> None:
        self._take_scheduled_round(wait=False)
        if self._scheduling is not None or self._scheduler_stuck:
            return
        if self.tracker.estimated_next_update_time - get_dht_time() > self.matchmaking_time:
            return
        spent = self.scheduled_grads
        if spent is not None and not (spent.triggered or spent.done()):
            return
        averager = self.grad_averager
        kwargs: dict[str, Any] = {"timeout": self.averaging_timeout}
        round_data = getattr(averager, "round_data", None)
        if round_data is not None:
            kwargs["gather"] = round_data()  # here: the parameters as this thread sees them now
        if self._scheduler is None:
            self._scheduler = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hiveling-schedule")
        logger.log(self.status_loglevel, "Pre-scheduling the next gradient averaging round")
        self._scheduling = self._scheduler.submit(averager.schedule_step, **kwargs)

    def _take_scheduled_round(self, wait: bool) -> None:
        """Adopt the round the helper thread scheduled, if it is ready (or once it is, with ``wait``)."""
        scheduling = self._scheduling
        if scheduling is None or not (wait or scheduling.done()):
            return
        self._scheduling = None
        try:
            control = scheduling.result(timeout=_SCHEDULING_TIMEOUT)
        except concurrent.futures.TimeoutError:
            logger.warning(
                "The averager did not pre-schedule a round in %.0f s; rounds start at steps now",
                _SCHEDULING_TIMEOUT,
            )
            self._scheduler_stuck = True
            scheduling.add_done_callback(_cancel_late_round)  # nobody would ever trigger it
            return
        except Exception as e:  # the step then runs a round of its own
            logger.warning("Could not pre-schedule a gradient averaging round: %r", e)
            return
        self.scheduled_grads = control

    def _begin_averaging_gradients(self, grad_scaler: Any) -> bool:
        self._take_scheduled_round(wait=True)
        spent = self.scheduled_grads
        if spent is not None and (spent.triggered or spent.done()):
            # A round that already ended (failed, say): start a fresh one. hivemind would skip
            # averaging for this step altogether.
            self.scheduled_grads = None
        return bool(super()._begin_averaging_gradients(grad_scaler))

    def shutdown(self) -> None:
        self._take_scheduled_round(wait=True)
        if self._scheduler is not None:
            # A helper stuck on a silent averager process is left behind rather than waited for.
            self._scheduler.shutdown(wait=not self._scheduler_stuck, cancel_futures=True)
        # A delayed step's round may still be cancelled from its thread (every other peer left): let it end.
        self.state_averager.step(wait_for_delayed_updates=True)
        self._drop_rounds_over()
        super().shutdown()

    def _drop_rounds_over(self) -> None:
        """Cancel the scheduled rounds still looking for a group, here rather than in hivemind's shutdown.

        hivemind cancels them as if nobody had: a round that ended meanwhile, or that was cancelled
        while it ran (when every other peer left), raises InvalidStateError there and fails the whole
        shutdown. Rounds past matchmaking are left to hivemind, which takes part with zero weight.
        """
        for name in ("scheduled_grads", "scheduled_state"):
            control = getattr(self, name, None)
            if control is None:
                continue
            if control.done() or control.stage == AveragingStage.LOOKING_FOR_GROUP:
                setattr(self, name, None)
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    control.cancel()


def _cancel_late_round(scheduling: concurrent.futures.Future[Any]) -> None:
    if not scheduling.cancelled() and scheduling.exception() is None:
        scheduling.result().cancel()
