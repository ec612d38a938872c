"""One training session of the worker: a Lightning Trainer with HivemindStrategy, from start to pause or stop.

The worker runs sessions one after another (a pause ends one, a resume starts the next); the model and
the data stay in memory between them, the Trainer, the strategy and the network do not.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning.pytorch.callbacks import Callback

from hiveling.core.run import RunSpec
from hiveling.core.swarm.collaboration import StepRate
from hiveling.core.worker.events import Event, make_event
from hiveling.core.worker.hostwatch import HostWatch

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from hiveling.core.energy.ledger import EnergyLedger
    from hiveling.core.energy.watch import EnergyWatch
    from hiveling.core.swarm.strategy import HivemindStrategy

logger = logging.getLogger(__name__)

Outcome = Literal["paused", "stopped", "finished"]


class Controls:
    """Requests from the command reader (another thread) to the training loop."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.pause_when: str | None = None
        self.pause_from_step: int | None = None
        self.stop_requested = False
        self.resume_requested = False
        #: Who asked for the pause: "user" (a command) or "governor" (an energy limit); the governor
        #: never resumes a pause the user asked for.
        self.paused_by: str | None = None

    def request_pause(self, when: str, by: str = "user") -> None:
        with self._lock:
            if by == "governor" and self.pause_when is not None:
                return  # already pausing: the user's pause stays the user's
            self.pause_when = "now" if when == "now" or self.pause_when == "now" else "step"
            self.paused_by = by
            self.resume_requested = False
            self._lock.notify_all()

    def request_resume(self) -> None:
        with self._lock:
            self.pause_when = None
            self.pause_from_step = None
            self.paused_by = None
            self.resume_requested = True
            self._lock.notify_all()

    def request_stop(self) -> None:
        with self._lock:
            self.stop_requested = True
            self._lock.notify_all()

    def rest(self, seconds: float) -> None:
        """Waits ``seconds`` (the governor's rest between batches), cut short by a pause or stop request."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while not (self.stop_requested or self.pause_when == "now"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._lock.wait(left)

    def wait_while_paused(self, poll: Callable[[], bool] | None = None, interval: float = 5.0) -> bool:
        """Blocks until resume or stop; True to resume. While the governor holds the pause, ``poll`` is
        asked every ``interval`` seconds whether it may end."""
        with self._lock:
            while not (self.resume_requested or self.stop_requested):
                if poll is not None and self.paused_by == "governor":
                    self._lock.wait(interval)
                    if self.paused_by == "governor" and not self.stop_requested and poll():
                        self.pause_when, self.pause_from_step, self.paused_by = None, None, None
                        self.resume_requested = True
                else:
                    self._lock.wait()
            resume = not self.stop_requested
            self.resume_requested = False
            return resume


@dataclass
class SessionConfig:
    spec: RunSpec
    accelerator: str  # Lightning accelerator: "cpu", "cuda", "mps"
    device_index: int | None
    batch_size: int
    precision: str
    host_maddrs: list[str]
    announce_maddrs: list[str] | None
    identity_path: str
    checkpoint_path: Path
    checkpoint_every: int | None  # collaborative steps; None: only when the session ends
    max_step: int | None  # stop once the collaboration reaches this step (bounded demo runs)
    progress_interval: float = 2.0
    evaluate_interval: float = 10.0  # seconds between held-out evaluations, where the recipe has one
    strategy_options: dict[str, Any] = field(default_factory=dict)
    #: The host's peer ids, for a volunteer to notice when the host stops answering (empty: the host).
    watch_host: list[str] = field(default_factory=list)
    #: The energy meter and governor (None: energy is not measured, as in tests of other things).
    energy: EnergyWatch | None = None
    #: The organizer's raw private key: the host's worker signs the run's admission tokens.
    signing_key: bytes | None = field(default=None, repr=False)


@dataclass
class Totals:
    """Samples this machine computed: this process and, with what was loaded at start, all time."""

    session_samples: int = 0
    previous_samples: int = 0
    previous_seconds: float = 0.0
    training_seconds: float = 0.0
    training_since: float | None = None
    fingerprints: dict[int, list[float]] = field(default_factory=dict)
    #: Where the last session ended: its collaborative step, and the samples this machine had trained
    #: toward the next step (work that a pause "now" drops and a pause "after this step" never does).
    ended_at_step: int = 0
    unused_samples: int = 0
    finished_at: int | None = None  # saved with the totals: a later start of a finished run ends at once

    def start_session(self) -> None:
        self.training_since = time.monotonic()

    def end_session(self) -> None:
        if self.training_since is not None:
            self.training_seconds += time.monotonic() - self.training_since
            self.training_since = None

    @property
    def total_samples(self) -> int:
        return self.previous_samples + self.session_samples

    @property
    def total_seconds(self) -> float:
        """Time spent training (not paused, not connecting), all sessions and earlier runs included."""
        running = 0.0 if self.training_since is None else time.monotonic() - self.training_since
        return self.previous_seconds + self.training_seconds + running


Emit = Callable[[Event], None]


def admission_for(config: SessionConfig) -> Any:
    """A closed run's credentials for the strategy; None for an open run (an invite without a secret)."""
    spec = config.spec
    if not spec.join_secret or not spec.organizer_key:
        return None
    from hiveling.core.swarm.admission import Admission

    return Admission(
        run_id=spec.run_id,
        organizer_key=bytes.fromhex(spec.organizer_key),
        join_secret=bytes.fromhex(spec.join_secret),
        signing_key=config.signing_key,
    )


def run_session(
    config: SessionConfig,
    module: pl.LightningModule,
    loader: Any,
    controls: Controls,
    totals: Totals,
    emit: Emit,
    on_hello: Callable[[HivemindStrategy], None],
    on_totals: Callable[[], None] | None = None,
    evaluate: Callable[[Any], float] | None = None,
) -> Outcome:
    """Trains until paused, stopped or ``config.max_step``; checkpoints when it ends.

    ``evaluate`` (the recipe's held-out accuracy) is measured at the start, every
    ``config.evaluate_interval`` seconds and when training stops; progress events carry the latest.
    """
    import lightning.pytorch as pl

    from hiveling.core.swarm.strategy import HivemindStrategy

    strategy = HivemindStrategy(
        target_batch_size=config.spec.target_batch_size,
        run_id=config.spec.dht_prefix,
        batch_size=config.batch_size,
        initial_peers=list(config.spec.peers) or None,
        host_maddrs=config.host_maddrs,
        announce_maddrs=config.announce_maddrs,
        identity_path=config.identity_path,
        local_steps=config.spec.local_steps,
        admission=admission_for(config),
        **config.strategy_options,
    )
    reporter = Reporter(config, strategy, controls, totals, emit, on_hello, on_totals, evaluate)
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=[config.device_index] if config.device_index is not None else 1,
        strategy=strategy,
        precision=config.precision,  # type: ignore[arg-type]
        max_epochs=-1,
        callbacks=[reporter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    ckpt = str(config.checkpoint_path) if _usable_checkpoint(config.checkpoint_path) else None
    emit(make_event("state", state="connecting", reason="joining the run's peers"))
    try:
        trainer.fit(module, loader, ckpt_path=ckpt)
    finally:
        reporter.closing = True
        totals.end_session()
    if not reporter.saved_at_stop:
        save_checkpoint(trainer, config.checkpoint_path, emit)
    del trainer, strategy
    totals.fingerprints = reporter.fingerprints
    return reporter.outcome


def _usable_checkpoint(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def save_checkpoint(trainer: pl.Trainer, path: Path, emit: Emit) -> bool:
    """Writes the model, optimizer and collaborative step atomically; a full disk costs only this copy."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        os.replace(tmp, path)
        return True
    except OSError as error:
        tmp.unlink(missing_ok=True)
        emit(
            make_event(
                "error",
                code="disk_full" if error.errno == 28 else "checkpoint_failed",
                message=f"Could not save the checkpoint to {path} ({error.strerror or error}); "
                "free some disk space there; training goes on with the previous checkpoint",
                fatal=False,
            )
        )
        return False


class Reporter(Callback):
    """Lightning callback: hello, progress events, pause/stop requests, bounded runs, periodic checkpoints."""

    def __init__(
        self,
        config: SessionConfig,
        strategy: HivemindStrategy,
        controls: Controls,
        totals: Totals,
        emit: Emit,
        on_hello: Callable[[HivemindStrategy], None],
        on_totals: Callable[[], None] | None = None,
        evaluate: Callable[[Any], float] | None = None,
    ) -> None:
        self.on_totals = on_totals
        self.evaluate = evaluate
        self.accuracy: float | None = None
        self._last_evaluation = 0.0
        self.config = config
        self.strategy = strategy
        self.controls = controls
        self.totals = totals
        self.emit = emit
        self.on_hello = on_hello
        self.outcome: Outcome = "stopped"
        self.closing = False
        self.saved_at_stop = False
        self._said_pausing = False
        self._progress_count = 0
        self.rate = StepRate()
        self.loss = math.nan
        self._last_progress = 0.0
        self._window = (time.monotonic(), 0)
        self._last_checkpoint_step: int | None = None
        self._batch_started = time.monotonic()
        #: Parameter fingerprints right after the last collaborative steps, to show that peers agree.
        self.fingerprints: dict[int, list[float]] = {}

    def on_optimizer_step(self, optimizer: Any, *_: Any) -> None:
        if getattr(self.strategy.hivemind_optimizer, "step_averaged", True):
            # A step whose round failed holds this peer's gradients only: not a collaborative step.
            self._record_fingerprint([p for group in optimizer.param_groups for p in group["params"]])

    def _record_fingerprint(self, params: list[Any]) -> None:
        from hiveling.core.swarm.averagers import fingerprint

        self.fingerprints[self.strategy.collaborative_step] = list(fingerprint(params))
        for step in sorted(self.fingerprints)[:-20]:
            del self.fingerprints[step]

    def _note_settled_step(self, pl_module: pl.LightningModule) -> None:
        """A step reached without an optimizer step of this peer's (it downloaded the swarm's state)
        gets its fingerprint too, once no update of its is still to land."""
        optimizer = self.strategy.hivemind_optimizer
        step = self.strategy.collaborative_step
        if optimizer is None or step == 0 or step in self.fingerprints:
            return
        if self._local_steps():
            return  # the local parameters never are the collaboration's: outer steps are recorded
        if not getattr(optimizer, "step_averaged", True):
            return  # its update came from a failed round, not from the swarm
        if not getattr(optimizer, "update_pending", False):
            self._record_fingerprint(list(pl_module.parameters()))

    def _evaluate(self, pl_module: pl.LightningModule, now: float) -> None:
        if self.evaluate is None:
            return
        self._last_evaluation = now
        try:
            self.accuracy = float(self.evaluate(pl_module))
        except Exception as error:  # a recipe's measure must never stop training
            logger.warning("Held-out evaluation failed, no longer measured: %r", error)
            self.evaluate = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = self.strategy.hivemind_optimizer
        if optimizer is not None:
            if self._local_steps():  # the low-communication mode: the outer parameters agree
                optimizer.on_outer_step = self._record_fingerprint
            else:
                optimizer.opt.register_step_post_hook(self.on_optimizer_step)
            controls = self.controls
            optimizer.leaving = lambda: controls.stop_requested or controls.pause_when == "now"
        self.on_hello(self.strategy)
        self._watch_host()
        if self.config.energy is not None and self.strategy.dht is not None:
            from hiveling.core.energy.ledger import EnergyLedger

            # The host sums everyone's energy for the run; every peer publishes its own.
            hosting = not self.config.watch_host
            self.ledger = EnergyLedger(self.strategy.dht, self.config.spec.dht_prefix, read_totals=hosting)
        self._evaluate(pl_module, time.monotonic())
        if self.config.energy is not None:
            self.config.energy.meter.rebase()  # a pause or the start-up is not training's energy
        self.totals.start_session()
        self.emit(make_event("state", state="training", reason=None))
        self._window = (time.monotonic(), self.totals.session_samples)

    host_watch: HostWatch | None = None
    ledger: EnergyLedger | None = None

    def _watch_host(self) -> None:
        from hivemind.p2p import PeerID

        from hiveling.core.swarm.tracker import SelfCountingTracker

        tracker = getattr(self.strategy.hivemind_optimizer, "tracker", None)
        dht = self.strategy.dht
        if not self.config.watch_host or dht is None or not isinstance(tracker, SelfCountingTracker):
            return
        left_out = {PeerID.from_base58(peer).to_bytes() for peer in self.config.watch_host}
        left_out.add(dht.peer_id.to_bytes())

        def other_volunteers() -> int:
            return len(set(tracker.known_peer_ids) - left_out)

        watch = HostWatch(self.config.watch_host, dht, tracker.record_age, other_volunteers, self.emit)
        self.host_watch = watch
        watch.start()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.host_watch is not None:
            self.host_watch.stop()

    def on_train_batch_start(self, *_: Any) -> None:
        self._batch_started = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            value = float(loss)
            self.loss = value if math.isnan(self.loss) else 0.9 * self.loss + 0.1 * value
        self.totals.session_samples += self.config.batch_size
        step = self.strategy.collaborative_step
        self._note_settled_step(pl_module)
        now = time.monotonic()
        if self.evaluate is not None and now - self._last_evaluation >= self.config.evaluate_interval:
            self._evaluate(pl_module, now)
        if now - self._last_progress >= self.config.progress_interval:
            self._last_progress = now
            if self.ledger is not None and self.config.energy is not None:
                self.ledger.tick(self.config.energy.total_wh)
            self.emit(self.progress(step, now))
            self._progress_count += 1
            if self._progress_count % 10 == 0 and self.on_totals is not None:
                self.on_totals()  # a killed worker loses at most this much of its contribution count
        self._maybe_checkpoint(trainer, step)
        self._check_requests(trainer, step)
        if trainer.should_stop:
            self.totals.ended_at_step = step
            self.totals.unused_samples = self._unused_samples()
            if self.outcome != "paused":
                self._evaluate(pl_module, now)
                # Said before the network shuts down, so a slow or killed teardown loses none of it.
                self.emit(
                    make_event(
                        "state",
                        state="stopping",
                        reason="saving and leaving the run",
                        step=step,
                        loss=None if math.isnan(self.loss) else round(self.loss, 4),
                        accuracy=self.accuracy,
                        fingerprints=dict(self.fingerprints),
                    )
                )
        if trainer.should_stop and not self.saved_at_stop and self.outcome != "paused":
            # Before the network shuts down: a slow teardown must not cost the final checkpoint.
            self.saved_at_stop = save_checkpoint(trainer, self.config.checkpoint_path, self.emit)
        if not trainer.should_stop:
            self._govern()

    def _govern(self) -> None:
        """The energy governor's decision, at a batch's end: rest so that training takes its share of the
        time, or pause after the coming step (where pausing loses nothing)."""
        watch = self.config.energy
        if watch is None:
            return
        decision = watch.tick()
        if decision.paused:
            self.controls.request_pause("step", by="governor")
        if decision.duty < 1.0:
            from hiveling.core.energy.governor import rest_after

            self.controls.rest(rest_after(time.monotonic() - self._batch_started, decision.duty))

    def _check_requests(self, trainer: pl.Trainer, step: int) -> None:
        controls = self.controls
        if controls.stop_requested:
            self.outcome, trainer.should_stop = "stopped", True
        elif self.config.max_step is not None and step >= self.config.max_step:
            self.outcome, trainer.should_stop = "finished", True
        elif controls.pause_when == "now":
            self.outcome, trainer.should_stop = "paused", True
        elif controls.pause_when == "step":
            if controls.pause_from_step is None:
                controls.pause_from_step = step
                self._said_pausing = True
                reason = "pausing after this step"
                watch = self.config.energy
                if controls.paused_by == "governor" and watch is not None and watch.decision.reason:
                    reason = f"{watch.decision.reason}; {reason}"
                self.emit(make_event("state", state="pausing", reason=reason, step=step))
            elif step > controls.pause_from_step and (self._local_steps() or self._unused_samples() == 0):
                # A step this peer downloaded (re-synchronizing) leaves what it trained since for the
                # next one: pause once its work has gone into a step. In the low-communication mode
                # the steps trained during the exchange stay in the local parameters (and the
                # checkpoint) for the next one: the exchange's end is the moment.
                self.outcome, trainer.should_stop = "paused", True
        elif self._said_pausing:  # the pause was called off before the step came
            self._said_pausing = False
            self.emit(make_event("state", state="training", reason=None))

    def _local_steps(self) -> bool:
        """Whether this run uses the low-communication mode."""
        return hasattr(self.strategy.hivemind_optimizer, "outer_params")

    def _unused_samples(self) -> int:
        """Samples this peer trained since its last collaborative step."""
        optimizer = self.strategy.hivemind_optimizer
        return 0 if optimizer is None else int(optimizer.tracker.local_progress.samples_accumulated)

    def _maybe_checkpoint(self, trainer: pl.Trainer, step: int) -> None:
        every = self.config.checkpoint_every
        if every is None or step == 0:
            return
        if self._last_checkpoint_step is None:
            self._last_checkpoint_step = step
        elif step - self._last_checkpoint_step >= every:
            self._last_checkpoint_step = step
            if save_checkpoint(trainer, self.config.checkpoint_path, self.emit):
                self.emit(make_event("log", level="info", message=f"checkpoint saved at step {step}"))

    def progress(self, step: int, now: float) -> Event:
        optimizer = self.strategy.hivemind_optimizer
        started, samples = self._window
        local = (self.totals.session_samples - samples) / max(now - started, 1e-6)
        self._window = (now, self.totals.session_samples)
        peers, accumulated, eta = 1, 0, None
        target = self.config.spec.target_batch_size
        exchange = getattr(optimizer, "samples_per_exchange", None)
        if exchange is not None:
            target = int(exchange)
        if optimizer is not None:
            from hivemind.utils import get_dht_time

            progress = optimizer.tracker.global_progress
            peers = max(int(progress.num_peers), 1)
            accumulated = int(progress.samples_accumulated)
            eta = max(0.0, float(progress.eta_next_epoch) - get_dht_time())
            eta = eta if eta < 86400 else None  # hivemind's "no estimate yet" is a huge number
        collab = self.rate.update(step, target, now)
        if collab > 0:  # from measured throughput: hivemind's estimate lags behind at the start of a step
            eta = max(0.0, target - accumulated) / collab
        troubles = {}
        if optimizer is not None:
            # Counted since this session began; absent while zero.
            for name in ("skipped_batches", "failed_rounds", "rejected_rounds"):
                count = int(getattr(optimizer, name, 0))
                if count:
                    troubles[name] = count
        return make_event(
            "progress",
            **troubles,
            step=step,
            peers=peers,
            local_sps=round(local, 2),
            collab_sps=round(collab, 2),
            samples_accumulated=accumulated,
            target_batch_size=target,
            **({} if exchange is None else {"mode": "local", "local_steps": self.config.spec.local_steps}),
            eta_seconds=None if eta is None else round(eta, 1),
            loss=None if math.isnan(self.loss) else round(self.loss, 4),
            accuracy=None if self.accuracy is None else round(self.accuracy, 4),
            session_samples=self.totals.session_samples,
            total_samples=self.totals.total_samples,
            total_seconds=round(self.totals.total_seconds, 1),
            batch_size=self.config.batch_size,
            **({} if self.host_watch is None else {"host_answers": self.host_watch.host_answers}),
            **({} if self.config.energy is None else self.config.energy.fields()),
            **self._swarm_energy(),
        )

    def _swarm_energy(self) -> dict[str, Any]:
        ledger = self.ledger
        if ledger is None or ledger.swarm_wh is None:
            return {}
        return {"swarm_energy_wh": round(ledger.swarm_wh, 3), "swarm_energy_peers": ledger.peers}
