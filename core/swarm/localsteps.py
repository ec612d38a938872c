"""The low-communication mode: local optimizer steps, then an outer step on the peers' averaged changes.

Each peer trains with its own optimizer (the inner one, AdamW in the published recipes) and keeps a copy
of the collaboration's global parameters, the outer ones. Once the peers together have taken about
``local_steps`` steps each, every peer sends its change, outer minus local parameters, to an averaging
round weighted by the samples it trained; the average is the outer optimizer's gradient (SGD with
Nesterov momentum). This is DiLoCo (Douillard et al., 2023), with one difference: the round runs in the
background while the next local steps train, so the device never waits for the network unless a round
lasts longer than ``local_steps`` steps.

How the late update is folded in: say a round starts when the local parameters are ``snapshot``, sending
``change = outer - snapshot``. Meanwhile training moves them on to ``local``. When the round ends, every
peer applies the outer step to the same outer parameters with the same average, so their new outer
parameters are identical, and each sets ``local = new_outer + (local - snapshot)``: it starts again
from the collaboration's parameters, with the steps it trained during the round on top. Those steps go
into its next change.

A peer that falls behind (a failed round, a newcomer, a peer whose outer parameters differ from its
group's) downloads the outer parameters and the outer optimizer's momentum from a peer, in the
background, and moves its local parameters by the difference: the work it trained is kept and goes
into its next change. After a round it was behind in, it asks again until a peer serves the step that
round reached: the others apply a round at their next local step and serve the step before until then,
and taking that one would leave the peer one round behind at every round from then on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from hivemind.averaging.control import AveragingStage
from hivemind.compression import CompressionBase, Float16Compression

from hiveling.core.swarm.averagers import fingerprint, gathered_epoch
from hiveling.core.swarm.deltas import DeltaAverager
from hiveling.core.swarm.optimizer import NonFiniteTraining, all_finite, keeps_its_state
from hiveling.core.swarm.tracker import SelfCountingTracker

logger = logging.getLogger(__name__)

#: The published recipe's outer optimizer (DiLoCo): SGD, Nesterov momentum 0.9, learning rate 0.7.
DEFAULT_OUTER_LR = 0.7
DEFAULT_OUTER_MOMENTUM = 0.9
#: A download that served the step before the one a round just reached is asked for again this many
#: times, this many seconds apart, before this peer continues from what it got.
_STALE_DOWNLOAD_RETRIES = 20
_STALE_DOWNLOAD_PAUSE = 0.1


class LocalStepsOptimizer(torch.optim.Optimizer):
    """Wraps the inner optimizer Lightning steps; exchanges parameter changes with the other peers.

    Args:
        dht: A running hivemind DHT.
        run_id: The collaboration's name.
        optimizer: The inner optimizer, over the model's parameters.
        local_steps: About how many local steps each peer takes between two exchanges. The exchange
            starts once the peers' samples since the last one reach ``local_steps`` batches per peer,
            so a faster peer takes more steps and a slower one fewer; each change is weighted by its
            samples.
        batch_size_per_step: This peer's samples per batch when ``step`` is not told.
        outer_lr, outer_momentum: The outer optimizer's learning rate and Nesterov momentum.
        compression: How changes travel; fp16 by default.
        matchmaking_time: Seconds to wait for the others to join a round (it closes early once every
            known peer is in).
        averaging_timeout: Seconds before a round is given up.
        load_state_timeout: Seconds to wait for a peer's state.
        client_mode: Only make outgoing connections.
        averager_opts, tracker_opts: Extra keyword arguments for hivemind's averager and tracker.
        verbose: Log the tracker's progress messages at INFO.
    """

    def __init__(
        self,
        *,
        dht: Any,
        run_id: str,
        optimizer: torch.optim.Optimizer,
        local_steps: int,
        batch_size_per_step: int | None = None,
        outer_lr: float = DEFAULT_OUTER_LR,
        outer_momentum: float = DEFAULT_OUTER_MOMENTUM,
        compression: CompressionBase | None = None,
        matchmaking_time: float = 5.0,
        averaging_timeout: float = 120.0,
        load_state_timeout: float = 600.0,
        client_mode: bool = False,
        averager_opts: dict[str, Any] | None = None,
        tracker_opts: dict[str, Any] | None = None,
        verbose: bool = False,
    ) -> None:
        if local_steps < 1:
            raise ValueError(f"local_steps must be at least 1, got {local_steps}")
        self.dht, self.run_id, self.opt = dht, run_id, optimizer
        self.local_steps = local_steps
        self.batch_size_per_step = batch_size_per_step
        self.averaging_timeout = averaging_timeout
        self.load_state_timeout = load_state_timeout
        self.client_mode = client_mode
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self.outer_params = [p.detach().to("cpu", torch.float32, copy=True) for p in self._params]
        self.outer_optimizer = torch.optim.SGD(
            self.outer_params, lr=outer_lr, momentum=outer_momentum, nesterov=outer_momentum > 0
        )
        for outer in self.outer_params:  # made now, so that a newcomer can download them from the start
            self.outer_optimizer.state[outer]["momentum_buffer"] = torch.zeros_like(outer)
        self._outer_lock = threading.Lock()
        #: Outer steps applied: the collaboration's step this peer's outer parameters are at.
        self.outer_epoch = 0
        self.tracker = SelfCountingTracker(
            dht=dht,
            prefix=run_id,
            target_batch_size=local_steps * (batch_size_per_step or 1),
            client_mode=client_mode,
            status_loglevel=logging.INFO if verbose else logging.DEBUG,
            start=True,
            **(tracker_opts or {}),
        )
        self.averager = DeltaAverager(
            [torch.zeros_like(outer) for outer in self.outer_params],
            serve_state=self._serve_state,
            dht=dht,
            prefix=f"{run_id}_outer",
            min_matchmaking_time=matchmaking_time,
            allreduce_timeout=averaging_timeout,
            compression=compression if compression is not None else Float16Compression(),
            client_mode=client_mode,
            start=True,
            **(averager_opts or {}),
        )
        self._round: Any = None  # the running exchange: hivemind's StepControl
        self._round_weight = 0.0
        self._sent: list[torch.Tensor] | None = None  # this peer's change in the running round
        self._download: Any = None  # a download of the swarm's state in the background
        self._resync_needed = False
        # After a round this peer was behind in, the step its download must reach (the group's, once
        # applied), and when a download that served an older one may be asked for again.
        self._download_at_least = 0
        self._stale_downloads = 0
        self._retry_download_at = 0.0
        self._samples = 0  # trained since the last exchange began
        self._tried_catching_up = False
        self._batch_size = batch_size_per_step or 1

    # --- what Lightning and the strategy read ----------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.opt.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.opt.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.opt.defaults

    @property
    def local_epoch(self) -> int:
        """The collaboration's step (outer steps) this peer's global parameters are at."""
        return self.outer_epoch

    @property
    def num_peers(self) -> int:
        """Peers the collaboration had at the tracker's last fetch, this one included."""
        return max(int(self.tracker.global_progress.num_peers), 1)

    #: Seconds without another peer in the tracker's fetches before this peer takes itself to be alone.
    alone_after = 5.0
    _saw_others_at = -float("inf")

    def alone(self) -> bool:
        """Whether no other peer has been seen for ``alone_after`` seconds.

        One fetch of the swarm's progress that timed out on a busy machine reads as zero peers: taken
        at its word, a peer would step alone and fork from the others.
        """
        now = time.monotonic()
        if self.num_peers > 1:
            self._saw_others_at = now
        return now - self._saw_others_at >= self.alone_after

    @property
    def samples_per_exchange(self) -> int:
        """The swarm's samples between two exchanges, as the tracker currently expects them."""
        return int(self.tracker.target_batch_size)

    @property
    def update_pending(self) -> bool:
        """Whether an exchange is running (its outer step not applied yet)."""
        return self._round is not None

    #: Whether the last outer step holds the group's averaged change (or this peer was alone).
    step_averaged = True
    #: Peers whose changes the last outer step averaged: 1 alone, 0 for parameters downloaded.
    last_group_size = 0
    #: Their peer ids (empty for parameters downloaded).
    last_group: frozenset[bytes] = frozenset()
    failed_rounds = 0
    skipped_batches = 0
    rejected_rounds = 0
    #: Seconds the training thread waited for an exchange to end (the network slower than the steps).
    waited_seconds = 0.0
    #: Called with the outer parameters after each outer step (fingerprints for the worker's events).
    on_outer_step: Callable[[list[torch.Tensor]], None] | None = None
    #: Asked while waiting for a round: whether this peer is leaving (stop, "pause now").
    leaving: Callable[[], bool] = staticmethod(lambda: False)
    non_finite_limit = 20
    _non_finite_run = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        raise ValueError("The low-communication mode cannot add parameter groups once training has started")

    def state_dict(self) -> dict[str, Any]:
        with self._outer_lock:
            return {
                "inner": self.opt.state_dict(),
                "outer_epoch": self.outer_epoch,
                "outer_params": [t.clone() for t in self.outer_params],
                "outer_optimizer": self.outer_optimizer.state_dict(),
            }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "inner" not in state_dict:  # a checkpoint of the synchronous mode: the inner optimizer's only
            self.opt.load_state_dict(state_dict)
            return
        self.opt.load_state_dict(state_dict["inner"])
        with self._outer_lock:
            for outer, saved in zip(self.outer_params, state_dict["outer_params"], strict=True):
                outer.copy_(saved)
            self.outer_optimizer.load_state_dict(state_dict["outer_optimizer"])
            self.outer_epoch = int(state_dict["outer_epoch"])
        with self.tracker.pause_updates():
            self.tracker.update_epoch(max(self.outer_epoch, self.tracker.local_progress.epoch))

    # --- steps -----------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None, batch_size: int | None = None, **_: Any) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batch_size = batch_size or self.batch_size_per_step or 1
        self._batch_size = batch_size
        self._take_finished_work()
        if not all_finite([p.grad for p in self._params if p.grad is not None]):
            self._skip_batch()
            return loss
        self._non_finite_run = 0
        self.opt.step()
        self._samples += batch_size
        self.tracker.report_local_progress(self.tracker.local_progress.epoch, self._samples)
        # An exchange due while the last one still runs (or a download) waits for it to end, and the
        # steps trained meanwhile go with it: training never waits for the network.
        if self._round is None and self._download is None and self._exchange_due():
            self._begin_exchange()
        return loss

    def _exchange_due(self) -> bool:
        if self.alone():
            self.tracker.target_batch_size = self.local_steps * self._batch_size
            return self._samples >= self.local_steps * self._batch_size
        self.tracker.target_batch_size = self.local_steps * self._batch_size * max(self.num_peers, 2)
        return self._samples > 0 and bool(self.tracker.ready_to_update_epoch)

    def _take_finished_work(self) -> None:
        """Apply an exchange or a download that has finished in the background; start a download due."""
        looking = self._round is not None and self._round.stage == AveragingStage.LOOKING_FOR_GROUP
        if looking and self.alone():
            logger.info("Every other peer left before this exchange began: this peer steps alone")
            self._round.cancel()
        if self._round is not None and self._round.done():
            self._finish_exchange()
        if self._download is not None and self._download.done():
            self._finish_download()
        idle = self._round is None and self._download is None
        if idle and self._resync_needed and time.monotonic() >= self._retry_download_at:
            self._resync_needed = False
            if not self.alone():
                self._start_download()

    def _skip_batch(self) -> None:
        self.skipped_batches += 1
        self._non_finite_run += 1
        self.opt.zero_grad(set_to_none=True)
        if self._non_finite_run >= self.non_finite_limit:
            raise NonFiniteTraining(self._non_finite_run)
        if self._non_finite_run == 1:
            logger.warning(
                "This batch's gradients are not finite (NaN or inf): not trained on, left out of the "
                "collaboration (%d such batches so far)",
                self.skipped_batches,
            )
        if not all_finite(self._params):
            logger.warning("This peer's parameters are not finite: starting again from the collaboration's")
            self._restart_from_outer()

    def _restart_from_outer(self) -> None:
        """Drop this peer's local work: its parameters become the outer ones, its inner state is reset."""
        self.opt.state.clear()
        with torch.no_grad(), self._outer_lock:
            for param, outer in zip(self._params, self.outer_params, strict=True):
                param.copy_(outer)
        self._samples = 0
        self._resync_needed = not self.alone()

    # --- exchanges -------------------------------------------------------------------------------

    def _begin_exchange(self) -> None:
        behind = self.tracker.local_progress.epoch > self.outer_epoch or (
            self.tracker.global_epoch > self.outer_epoch + 1
        )
        logger.debug(
            "Exchange due at step %d: tracker at %d, swarm at %d",
            self.outer_epoch,
            self.tracker.local_progress.epoch,
            self.tracker.global_epoch,
        )
        if behind and not self.alone() and not self._tried_catching_up:
            # The swarm has applied a step this peer did not (a newcomer, a failed round): catch up
            # first, so that this peer's change is measured from the same outer parameters as theirs.
            self._tried_catching_up = True
            self._start_download()
            return
        self._tried_catching_up = False
        with torch.no_grad(), self.averager.get_tensors() as buffers:
            for buffer, outer, param in zip(buffers, self.outer_params, self._params, strict=True):
                torch.sub(outer, param.detach().to("cpu", torch.float32), out=buffer)
            sent = [buffer.clone() for buffer in buffers]
        weight, self._samples = float(self._samples), 0
        with self.tracker.pause_updates():  # never backwards: a newcomer may count from the swarm's epoch
            self.tracker.update_epoch(max(self.outer_epoch, self.tracker.local_progress.epoch) + 1)
        if not all_finite(sent):
            logger.warning("This peer's change is not finite: left out of the exchange")
            self._restart_from_outer()
            return
        self._sent = sent
        if self.alone():
            self.step_averaged = True
            self.last_group_size = 1
            self.last_group = frozenset({self.dht.peer_id.to_bytes()})
            self._apply_outer_step(sent)
            return
        self.averager.set_target_group_size(max(self.num_peers, 2))
        outer_print = fingerprint(self.outer_params)
        self._round = self.averager.step(
            gather=(*outer_print, self.outer_epoch),
            weight=max(weight, 1.0),
            timeout=self.averaging_timeout,
            wait=False,
        )
        self._round_weight = weight

    def _wait_for(self, future: Any) -> None:
        started = time.monotonic()
        with contextlib.suppress(Exception):
            while not future.done():
                if self.leaving():
                    future.cancel()
                    break
                with contextlib.suppress(Exception):
                    future.result(timeout=1.0)
        self.waited_seconds += time.monotonic() - started

    def _finish_exchange(self) -> None:
        control, self._round = self._round, None
        sent, self._sent = self._sent, None
        assert control is not None
        assert sent is not None
        gathered: dict[bytes, Any] = {}
        if not control.cancelled() and control.exception() is None and control.result() is not None:
            gathered = {peer.to_bytes(): data for peer, data in control.result().items()}
        if not gathered and self.alone():
            self.step_averaged = True  # the others left before the round: the collaboration is this peer
            self.last_group_size = 1
            self.last_group = frozenset({self.dht.peer_id.to_bytes()})
            self._apply_outer_step(sent)
            return
        if not gathered:
            self.step_averaged = False
            self.failed_rounds += 1
            logger.warning(
                "The exchange of step %d failed: this peer's change waits for the next one; it takes "
                "the collaboration's parameters meanwhile (%d such exchanges so far)",
                self.outer_epoch + 1,
                self.failed_rounds,
            )
            self._unsend()
            self._resync_needed = True
            # Whoever has a record but did not come is gone or late: the peer does not wait for it
            # until it reports again (a live one does within a second).
            me = self.dht.peer_id.to_bytes()
            self.tracker.mark_absent(set(self.tracker.known_peer_ids) - {me})
            return
        with self.averager.get_tensors() as buffers:
            averaged = [buffer.clone() for buffer in buffers]
        me = self.dht.peer_id.to_bytes()
        group = {me} | set(gathered)
        self._forget_absent(group)
        if not all_finite(averaged):
            # Every peer of the round got the same result and drops it the same way.
            self.rejected_rounds += 1
            logger.warning(
                "The averaged change of step %d is not finite: not applied (%d such exchanges)",
                self.outer_epoch + 1,
                self.rejected_rounds,
            )
            self._unsend()
            self.outer_epoch += 1
            return
        keep, why = keeps_its_state(me, gathered, set(self.tracker.active_peer_ids) | group)
        logger.debug(
            "Exchange of step %d: %s (keep %s: %s)", self.outer_epoch + 1, list(gathered.values()), keep, why
        )
        self.step_averaged = True
        self.last_group_size = len(group)
        self.last_group = frozenset(group)
        self._apply_outer_step(averaged, sent)
        if not keep:
            logger.info("%s: downloading the collaboration's parameters", why)
            self._resync_needed = True
            # The others apply this round at their next local step; until then they serve the step
            # before it, which would leave this peer one round behind at every round from now on.
            epochs = [e for e in map(gathered_epoch, gathered.values()) if e is not None]
            self._download_at_least = max(epochs, default=self.outer_epoch - 1) + 1
            self._stale_downloads = 0

    def _apply_outer_step(self, averaged: list[torch.Tensor], sent: list[torch.Tensor] | None = None) -> None:
        """The outer step on ``averaged`` changes; local parameters keep what they trained since ``sent``."""
        sent = averaged if sent is None else sent
        with torch.no_grad():
            with self._outer_lock:
                shift = [change.clone() for change in sent]  # local = new_outer + (local - snapshot)
                for outer, change, moved in zip(self.outer_params, averaged, shift, strict=True):
                    outer.grad = change
                    moved.sub_(outer)
                self.outer_optimizer.step()
                for outer, moved in zip(self.outer_params, shift, strict=True):
                    outer.grad = None
                    moved.add_(outer)
                self.outer_epoch += 1
            for param, moved in zip(self._params, shift, strict=True):
                param.add_(moved.to(param.device, param.dtype))
        self.averager.state_sharing_priority = float(self.outer_epoch)
        if self.on_outer_step is not None:
            self.on_outer_step(self.outer_params)

    def _unsend(self) -> None:
        """A change no outer step took is still in the local parameters: it goes with the next one."""
        self._samples += int(self._round_weight)
        self.tracker.report_local_progress(self.tracker.local_progress.epoch, self._samples)

    def _forget_absent(self, group: set[bytes]) -> None:
        missing = set(self.tracker.known_peer_ids) - group
        if missing:
            logger.info(
                "%d peer(s) did not join the exchange of step %d: not waited for until they report again",
                len(missing),
                self.outer_epoch + 1,
            )
            self.tracker.mark_absent(missing)

    # --- the collaboration's state ---------------------------------------------------------------

    def _serve_state(self) -> tuple[dict[str, Any], list[torch.Tensor]]:
        with self._outer_lock:
            momentum = [self.outer_optimizer.state[outer]["momentum_buffer"] for outer in self.outer_params]
            tensors = [t.clone() for t in (*self.outer_params, *momentum)]
            return {"epoch": self.outer_epoch, "mode": "local-steps"}, tensors

    def load_state_from_peers(self, **_: Any) -> None:
        """Download the collaboration's outer parameters and momentum now (joining, catching up)."""
        if self._round is not None:
            self._wait_for(self._round)
            self._finish_exchange()
        self._start_download()
        self._wait_for(self._download)
        self._finish_download()

    def _start_download(self) -> None:
        self._download = self.averager.load_state_from_peers(wait=False, timeout=self.load_state_timeout)

    def _finish_download(self) -> None:
        download, self._download = self._download, None
        loaded = None
        with contextlib.suppress(Exception):
            loaded = download.result()
        if not loaded:
            logger.warning("No peer served the collaboration's parameters: continuing from this peer's")
            return
        metadata, tensors = loaded
        epoch = metadata.get("epoch") if isinstance(metadata, dict) else None
        count = len(self.outer_params)
        if not isinstance(epoch, int) or len(tensors) != 2 * count:
            logger.warning("A peer served a state of another shape: continuing from this peer's")
            return
        logger.debug(
            "Peers served step %d (this peer at %d, waiting for %d)",
            epoch,
            self.outer_epoch,
            self._download_at_least,
        )
        if epoch < self._download_at_least and self._stale_downloads < _STALE_DOWNLOAD_RETRIES:
            self._stale_downloads += 1
            self._resync_needed = True
            self._retry_download_at = time.monotonic() + _STALE_DOWNLOAD_PAUSE
            return
        if epoch < self.outer_epoch:
            logger.info("Peers serve step %d, this peer is at %d: keeping its own", epoch, self.outer_epoch)
            return
        before = self.outer_epoch
        with torch.no_grad():
            with self._outer_lock:
                shift = []
                for outer, new in zip(self.outer_params, tensors[:count], strict=True):
                    shift.append(new.float() - outer)
                    outer.copy_(new)
                for outer, momentum in zip(self.outer_params, tensors[count:], strict=True):
                    self.outer_optimizer.state[outer]["momentum_buffer"].copy_(momentum)
                self.outer_epoch = epoch
            for param, moved in zip(self._params, shift, strict=True):
                param.add_(moved.to(param.device, param.dtype))
        self.averager.state_sharing_priority = float(self.outer_epoch)
        # Joining while the others exchange: this peer's first change goes with their next exchange.
        current = max(epoch, int(self.tracker.global_epoch))
        if self.tracker.local_progress.epoch < current:
            with self.tracker.pause_updates():
                self.tracker.update_epoch(current)
        if epoch == before and not any(bool(moved.any()) for moved in shift):
            return  # the same step, the same parameters: nothing new to report
        self.step_averaged = True
        self.last_group_size = 0
        self.last_group = frozenset()
        if self.on_outer_step is not None:
            self.on_outer_step(self.outer_params)

    def shutdown(self) -> None:
        if self._round is not None and not self._round.done():
            with contextlib.suppress(Exception):
                self._round.cancel()
        self.tracker.shutdown(1.0)
        self.averager.shutdown()

    def __repr__(self) -> str:
        return f"LocalStepsOptimizer(local_steps={self.local_steps}, opt={self.opt!r})"
