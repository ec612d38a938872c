"""HivemindStrategy: collaborative training over unreliable machines, as a Lightning strategy."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import Strategy, StrategyRegistry
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.data import extract_batch_size
from torch.optim import Optimizer
from typing_extensions import override

from hiveling.core.swarm.collaboration import CollaborationMetrics
from hiveling.core.swarm.peers import (
    check_multiaddrs,
    format_join_hint,
    parse_initial_peers,
    rank_join_addresses,
)
from hiveling.core.swarm.schedules import CollaborativeScheduler, check_scheduler, rebind_scheduler

if TYPE_CHECKING:
    import hivemind
    import lightning.pytorch as pl
    from hivemind.compression import CompressionBase

    from hiveling.core.swarm.admission import Admission, Renewal
    from hiveling.core.swarm.localsteps import LocalStepsOptimizer

log = logging.getLogger(__name__)

TARGET_BATCH_SIZE_ENV = "TARGET_BATCH_SIZE"
DEFAULT_HOST_MADDRS = ("/ip4/0.0.0.0/tcp/0",)


class NotAdmitted(RuntimeError):
    """The run's host refused this peer (a closed run, and no current invite)."""


class HivemindStrategy(Strategy):
    """Train one model together with other machines through hivemind.

    Every peer accumulates gradients locally; once all peers together have seen ``target_batch_size``
    samples, they average gradients and every peer takes the same optimizer step. Peers may join,
    leave or lag at any time: a joining or lagging peer downloads the current state from the others.

    Example:
        ``Trainer(strategy=HivemindStrategy(target_batch_size=8192), accelerator="gpu", devices=1)``;
        other machines run the same script with ``INITIAL_PEERS=...`` (printed when training starts).

    Args:
        target_batch_size: Samples all peers accumulate per collaborative step. Read from the
            ``TARGET_BATCH_SIZE`` environment variable when omitted (so ``strategy="hivemind"`` works).
        run_id: Name of the collaboration; peers with the same ``run_id`` train together.
        batch_size: This peer's samples per training batch. Inferred from every batch when omitted;
            pass it if your batches are not tensors or collections of tensors.
        initial_peers: Multiaddrs of running peers, as a list or one comma-separated string.
            Defaults to the ``INITIAL_PEERS`` environment variable; empty starts a new collaboration.
        host_maddrs: Addresses to listen on. Default: every IPv4 interface on a random TCP port.
        announce_maddrs: Addresses other peers should dial (for example a public IP behind port forwarding).
        use_relay: Let peers behind NAT reach this one through relays.
        use_auto_relay: Look for relays to become reachable when this machine is behind NAT.
        identity_path: File with this peer's private key, for a stable peer id across restarts.
        check_if_identity_free: Before joining with ``identity_path``, ask the initial peers whether that
            identity is already in use (a second process with the same key file). Turn it off when this
            same process rejoins, since peers may still remember its previous connection for a while.
        client_mode: Only make outgoing connections (firewalled machines). Such peers cannot be joined
            through and do not serve state to others.
        matchmaking_time: Seconds a peer waits for others to form an averaging group. Groups close
            early once every known peer has joined, so this is an upper bound; raise it if you see
            "Proceeding with local gradients" often over slow networks.
        averaging_timeout: Seconds before an averaging round is abandoned (the peer then uses local
            gradients for that step and re-synchronizes from peers). Default: 30, and 600 in the
            low-communication mode, whose rounds carry the whole model over home links.
        averager_opts: Extra keyword arguments for hivemind's averagers (e.g. ``request_timeout``).
        tracker_opts: Extra keyword arguments for hivemind's progress tracker.
        delay_state_averaging: Average parameters in the background. Defaults to
            ``delay_optimizer_step`` (hivemind needs it then); otherwise off, because a late background
            result overwrites the parameters of steps taken meanwhile.
        overlap_averaging: Average gradients while the next local batches train, and apply the
            update between two batches as soon as the round is over (usually after one batch).
            Peers still take identical steps; the batches trained meanwhile compute gradients on the
            parameters before that update (see ``bench/RESULTS.md``). ``False`` makes every peer wait
            for the round, as hivemind does, and is the default: in three-peer glyph runs on two
            cores the overlapped mode learned far less per step (31-42% held-out accuracy after
            105-135 steps, against 89% after 107 synchronous ones) and one volunteer stopped
            reaching new steps. Not used with an fp16 grad scaler, ``reuse_grad_buffers`` or
            hivemind's delayed modes below.
        delay_optimizer_step: Run the optimizer step in the background (one step of staleness).
        delay_grad_averaging: Average gradients in the background while the next batches train.
            Requires ``delay_optimizer_step``.
        offload_optimizer: Keep optimizer state and a copy of the parameters on the CPU.
        reuse_grad_buffers: Accumulate into ``.grad`` directly (saves memory; never call ``zero_grad``).
        use_local_updates: Step the optimizer after every local batch and only average parameters.
        grad_compression: hivemind compression for gradients (e.g. ``Float16Compression()``).
        state_averaging_compression: hivemind compression for parameter/state averaging.
        average_state_every: Average parameters every this many collaborative steps, a safety net
            against slow numerical drift. Peers whose gradient round left them out of the majority
            already re-synchronize by downloading the majority's state.
        load_state_timeout: Seconds to wait for another peer's state when catching up.
        local_steps: Turns on the low-communication mode (DiLoCo): each peer steps its own optimizer
            after every batch, and about every ``local_steps`` batches the peers average the change
            of their parameters, in the background while training goes on, and apply it with an
            outer optimizer (SGD with Nesterov momentum). Choose it when averaging the model takes
            longer than a few batches: home links, models past a few million parameters. Use AdamW
            as your optimizer (the published recipes do); ``target_batch_size`` is not needed. See
            ``LocalStepsOptimizer`` for how the late update is folded in.
        outer_lr: The outer optimizer's learning rate (low-communication mode).
        outer_momentum: The outer optimizer's Nesterov momentum (low-communication mode).
        delta_compression: How parameter changes travel in the low-communication mode; fp16 when
            omitted (``hivemind.NoCompression()`` for fp32).
        verbose: Log hivemind's progress messages at INFO.
        admission: Closes the run to peers without its credentials (see ``hiveling.core.swarm.admission``):
            this peer gets a token from the organizer's host among ``initial_peers`` before it joins,
            and its DHT and averagers serve only peers that show one. Hiveling's invites carry it.
    """

    strategy_name = "hivemind"

    def __init__(
        self,
        target_batch_size: int | None = None,
        *,
        run_id: str = "lightning_run",
        batch_size: int | None = None,
        initial_peers: str | Sequence[str] | None = None,
        host_maddrs: Sequence[str] | None = None,
        announce_maddrs: Sequence[str] | None = None,
        use_relay: bool = True,
        use_auto_relay: bool = False,
        identity_path: str | None = None,
        check_if_identity_free: bool = True,
        client_mode: bool = False,
        matchmaking_time: float = 5.0,
        averaging_timeout: float | None = None,
        averager_opts: dict[str, Any] | None = None,
        tracker_opts: dict[str, Any] | None = None,
        delay_state_averaging: bool | None = None,
        overlap_averaging: bool = False,
        delay_optimizer_step: bool = False,
        delay_grad_averaging: bool = False,
        offload_optimizer: bool = False,
        reuse_grad_buffers: bool = False,
        use_local_updates: bool = False,
        grad_compression: CompressionBase | None = None,
        state_averaging_compression: CompressionBase | None = None,
        average_state_every: int = 100,
        load_state_timeout: float = 600.0,
        local_steps: int | None = None,
        outer_lr: float = 0.7,
        outer_momentum: float = 0.9,
        delta_compression: CompressionBase | None = None,
        verbose: bool = False,
        admission: Admission | None = None,
        accelerator: pl.accelerators.Accelerator | None = None,
        precision_plugin: pl.plugins.Precision | None = None,
    ) -> None:
        if sys.platform == "win32":
            raise MisconfigurationException(
                "HivemindStrategy does not run on Windows: hivemind's p2pd daemon has no Windows build. "
                "Install WSL2 (`wsl --install` in an administrator PowerShell) and train inside it."
            )
        super().__init__(accelerator=accelerator, precision_plugin=precision_plugin)
        if local_steps is not None:
            _check_local_steps_options(
                local_steps,
                overlap_averaging=overlap_averaging,
                delay_optimizer_step=delay_optimizer_step,
                delay_grad_averaging=delay_grad_averaging,
                delay_state_averaging=bool(delay_state_averaging),
                offload_optimizer=offload_optimizer,
                reuse_grad_buffers=reuse_grad_buffers,
                use_local_updates=use_local_updates,
                grad_compression=grad_compression is not None,
            )
            if target_batch_size is None and os.environ.get(TARGET_BATCH_SIZE_ENV) is None:
                target_batch_size = 1  # unused: exchanges follow local_steps
        self._local_steps = local_steps
        self._outer_kwargs: dict[str, Any] = dict(
            outer_lr=outer_lr, outer_momentum=outer_momentum, compression=delta_compression
        )
        self._target_batch_size = _resolve_target_batch_size(target_batch_size)
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be a positive number of samples, got {batch_size}")
        if delay_grad_averaging and not delay_optimizer_step:
            raise ValueError("delay_grad_averaging=True needs delay_optimizer_step=True as well.")
        if use_local_updates and (reuse_grad_buffers or delay_grad_averaging):
            raise ValueError(
                "use_local_updates=True averages parameters, not gradients: "
                "it cannot be combined with reuse_grad_buffers or delay_grad_averaging."
            )
        if delay_state_averaging is None:
            delay_state_averaging = delay_optimizer_step
        if delay_optimizer_step and not delay_state_averaging:
            raise ValueError("delay_optimizer_step=True needs delay_state_averaging=True (or left unset).")
        if average_state_every < 1:
            raise ValueError(f"average_state_every must be at least 1, got {average_state_every}")
        self.run_id = run_id
        self._batch_size = batch_size
        self._initial_peers = parse_initial_peers(initial_peers)
        self._dht_kwargs: dict[str, Any] = dict(
            host_maddrs=check_multiaddrs(host_maddrs, "host_maddrs") or list(DEFAULT_HOST_MADDRS),
            announce_maddrs=check_multiaddrs(announce_maddrs, "announce_maddrs"),
            use_relay=use_relay,
            use_auto_relay=use_auto_relay,
            identity_path=identity_path,
            check_if_identity_free=check_if_identity_free,
            # hivemind 1.1.12's Optimizer ignores an explicit client_mode and takes the DHT's instead.
            client_mode=client_mode,
        )
        self._optimizer_kwargs: dict[str, Any] = dict(
            matchmaking_time=matchmaking_time,
            averaging_timeout=averaging_timeout or (30.0 if local_steps is None else 600.0),
            load_state_timeout=load_state_timeout,
            delay_state_averaging=delay_state_averaging,
            overlap_averaging=overlap_averaging,
            delay_optimizer_step=delay_optimizer_step,
            delay_grad_averaging=delay_grad_averaging,
            offload_optimizer=offload_optimizer,
            reuse_grad_buffers=reuse_grad_buffers,
            use_local_updates=use_local_updates,
            average_state_every=average_state_every,
            averager_opts=dict(averager_opts or {}),
            # Look for newcomers every second while alone (hivemind: 3 s). Steps do not wait for a
            # fetch (the tracker expects each one from the swarm's speed), so fetching more often than
            # hivemind's 0.5 s would only take CPU from training.
            tracker_opts={"default_refresh_period": 1.0, "min_refresh_period": 0.5, **(tracker_opts or {})},
            client_mode=client_mode,
            verbose=verbose,
        )
        self._admission = admission
        self._renewal: Renewal | None = None
        if admission is not None:
            self._optimizer_kwargs["averager_opts"]["admission"] = admission
        if grad_compression is not None:
            self._optimizer_kwargs["grad_compression"] = grad_compression
        if state_averaging_compression is not None:
            self._optimizer_kwargs["state_averaging_compression"] = state_averaging_compression
        self.parallel_devices: list[torch.device] | None = None
        self.global_rank = 0
        self.local_rank = 0
        self.world_size = 1
        self.dht: hivemind.DHT | None = None
        self._hivemind_optimizer: hivemind.Optimizer | LocalStepsOptimizer | None = None
        self._current_batch_size: int | None = None
        self._synchronized = False
        self._announced = False

    # --- what the collaboration looks like -------------------------------------------------------

    @property
    def target_batch_size(self) -> int:
        return self._target_batch_size

    @property
    def local_steps(self) -> int | None:
        """Local steps between exchanges in the low-communication mode; None in the synchronous one."""
        return self._local_steps

    @property
    def hivemind_optimizer(self) -> hivemind.Optimizer | LocalStepsOptimizer | None:
        """The optimizer wrapping yours once training has been set up: a ``hivemind.Optimizer``, or in
        the low-communication mode a ``LocalStepsOptimizer``."""
        return self._hivemind_optimizer

    @property
    def collaborative_step(self) -> int:
        """The collaboration's step (hivemind's epoch) this peer is at; 0 before training."""
        return 0 if self._hivemind_optimizer is None else int(self._hivemind_optimizer.local_epoch)

    @property
    def initial_peers(self) -> list[str]:
        return list(self._initial_peers)

    def join_addresses(self) -> list[str]:
        """This peer's addresses as other machines should use them, most reachable first."""
        if self.dht is None:
            return []
        ranked: list[str] = rank_join_addresses(str(addr) for addr in self.dht.get_visible_maddrs())
        return ranked

    # --- single-device plumbing ------------------------------------------------------------------

    @property
    @override
    def root_device(self) -> torch.device:
        if self.parallel_devices:
            return self.parallel_devices[0]
        if isinstance(self.accelerator, CUDAAccelerator):
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    @override
    def model_to_device(self) -> None:
        assert self.model is not None
        self.model.to(self.root_device)

    @property
    @override
    def is_global_zero(self) -> bool:
        return True

    @override
    def reduce(self, tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor

    @override
    def barrier(self, *args: Any, **kwargs: Any) -> None:
        pass

    @override
    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    @override
    def all_gather(
        self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> torch.Tensor:
        return tensor

    # --- lifecycle -------------------------------------------------------------------------------

    @override
    def setup_environment(self) -> None:
        self._check_trainer()
        super().setup_environment()
        self._start_dht()

    @override
    def setup(self, trainer: pl.Trainer) -> None:
        if self.precision_plugin.precision == "16-mixed" and self._optimizer_kwargs["reuse_grad_buffers"]:
            self._use_hivemind_grad_scaler()
        super().setup(trainer)
        if trainer.state.fn != "fit":
            return
        self._check_optimizers()
        if self._local_steps is not None:
            self._wrap_for_local_steps(self._local_steps)
        else:
            self._wrap_optimizer()
        if self._optimizer_kwargs["reuse_grad_buffers"]:
            self._disable_zero_grad()
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        if not any(isinstance(c, CollaborationMetrics) and c.strategy is self for c in callbacks):
            callbacks.append(CollaborationMetrics(self))  # once, also when fit() is called again

    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        if not self._announced:
            self._announced = True
            rank_zero_info(format_join_hint(self.join_addresses(), sys.argv))

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self._current_batch_size = self._batch_size or _infer_batch_size(batch)
        if not self._synchronized:
            self._synchronized = True
            self._catch_up_with_peers()

    @override
    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        model: pl.LightningModule | torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Any:
        kwargs.setdefault("batch_size", self._current_batch_size or self._batch_size)
        if kwargs["batch_size"] is None:
            raise MisconfigurationException(
                "HivemindStrategy does not know this step's batch size: pass HivemindStrategy(batch_size=N)."
            )
        return super().optimizer_step(optimizer, closure, model, **kwargs)

    @override
    def teardown(self) -> None:
        try:
            if self._hivemind_optimizer is not None:
                optimizer, self._hivemind_optimizer = self._hivemind_optimizer, None
                optimizer.shutdown()
        finally:
            if self._renewal is not None:
                self._renewal.stop()
            if self.dht is not None:
                dht, self.dht = self.dht, None
                dht.shutdown()
            super().teardown()

    # --- helpers ---------------------------------------------------------------------------------

    def _check_trainer(self) -> None:
        trainer = self.lightning_module.trainer if self.lightning_module is not None else None
        if trainer is None:
            return
        if trainer.accumulate_grad_batches != 1:
            raise MisconfigurationException(
                "HivemindStrategy accumulates gradients itself up to target_batch_size: "
                "remove accumulate_grad_batches from your Trainer (raise target_batch_size instead)."
            )
        if self.parallel_devices is not None and len(self.parallel_devices) > 1:
            raise MisconfigurationException(
                "HivemindStrategy trains on one device per process: use devices=1 and start one process "
                "per GPU (each joins the same collaboration)."
            )
        if trainer.num_nodes != 1:
            raise MisconfigurationException(
                "HivemindStrategy replaces multi-node training: use num_nodes=1 on every machine and join "
                "them through initial_peers."
            )

    def _start_dht(self) -> None:
        if self.dht is not None:
            return
        import hivemind

        from hiveling.core.swarm.admission import AdmissionRefused

        attempts = _JOIN_ATTEMPTS if self._initial_peers else 1
        for attempt in range(1, attempts + 1):
            try:
                if self._admission is not None:
                    self._start_admitted_dht()
                    return
                # hivemind's DHT process sleeps 3 s after a request it could not unpickle, which happens
                # at every shutdown (the averagers' last requests outlive their processes): do not wait.
                self.dht = hivemind.DHT(
                    initial_peers=self._initial_peers, start=True, shutdown_timeout=1.0, **self._dht_kwargs
                )
                return
            except Exception as e:
                if isinstance(e, AdmissionRefused):  # refused: asking again changes nothing
                    raise NotAdmitted(str(e)) from None
                if not self._initial_peers:
                    raise RuntimeError(
                        f"Could not start hivemind networking ({e}); check host_maddrs and announce_maddrs."
                    ) from None
                if attempt == attempts:
                    raise RuntimeError(
                        f"Could not join through {', '.join(self._initial_peers)}: {e}. Check that the "
                        "address was copied whole and that the peer printing it is still running and "
                        "reachable (a Hiveling run closed to other peers: that the invite is its current "
                        "one)."
                    ) from None
                # On a busy machine the peer's check that it can reach this one back (3 s) times out:
                # "can't access this node". A moment later it usually can.
                log.warning("Joining failed (%s); trying again (%d of %d)", e, attempt + 1, attempts)
                time.sleep(_JOIN_RETRY_SECONDS * attempt)

    def _start_admitted_dht(self) -> None:
        """A DHT that speaks only with token holders, joined once this peer holds a token: the token
        names the peer id, so it is asked for through the DHT's own daemon, before any DHT request."""
        import hivemind
        from hivemind.utils.crypto import RSAPrivateKey

        from hiveling.core.swarm.admission import Renewal, RunAuthorizer, join

        assert self._admission is not None
        key = RSAPrivateKey()
        kwargs = {**self._dht_kwargs, "check_if_identity_free": False}  # no peers to ask yet
        dht = hivemind.DHT(
            initial_peers=[],
            start=True,
            shutdown_timeout=1.0,
            authorizer=RunAuthorizer(self._admission, key),
            **kwargs,
        )
        try:
            token = join(dht, self._admission, key, self._initial_peers)
        except BaseException:
            dht.shutdown()
            raise
        self.dht = dht
        if token is not None:
            self._renewal = Renewal(dht, self._admission, token, self._initial_peers)
            self._renewal.start()

    def _check_optimizers(self) -> None:
        if len(self.optimizers) != 1:
            raise MisconfigurationException(
                f"HivemindStrategy supports exactly one optimizer, configure_optimizers returned "
                f"{len(self.optimizers)}: combine parameter groups into a single optimizer."
            )
        if len(self.lr_scheduler_configs) > 1:
            raise MisconfigurationException(
                "HivemindStrategy supports at most one learning-rate scheduler: chain them with "
                "torch.optim.lr_scheduler.SequentialLR or ChainedScheduler."
            )
        for config in self.lr_scheduler_configs:
            try:
                check_scheduler(config.scheduler)
            except ValueError as e:
                raise MisconfigurationException(str(e)) from None

    def _wrap_optimizer(self) -> None:
        import hivemind

        from hiveling.core.swarm.optimizer import CollaborativeOptimizer

        assert self.dht is not None, "setup_environment() starts the DHT before setup()"
        optimizer = self.optimizers[0]
        if isinstance(optimizer, hivemind.Optimizer):
            self._hivemind_optimizer = optimizer
            return
        scheduler = self.lr_scheduler_configs[0].scheduler if self.lr_scheduler_configs else None
        kwargs = dict(self._optimizer_kwargs)
        recreate = (
            kwargs["offload_optimizer"] or kwargs["delay_optimizer_step"] or kwargs["delay_grad_averaging"]
        )
        groups = [dict(group) for group in optimizer.param_groups]
        if recreate:
            # hivemind builds the optimizer over its own (offloaded) tensors; same class, groups and options.
            opt_cls, defaults = type(optimizer), dict(optimizer.defaults)
            kwargs.update(optimizer=lambda params: opt_cls(params, **defaults), params=groups)
        else:
            kwargs.update(optimizer=optimizer)
        if scheduler is not None:
            kwargs["scheduler"] = lambda opt: rebind_scheduler(scheduler, opt)
        self._hivemind_optimizer = CollaborativeOptimizer(
            dht=self.dht,
            run_id=self.run_id,
            target_batch_size=self._target_batch_size,
            batch_size_per_step=self._batch_size,
            **kwargs,
        )
        self.optimizers = [self._hivemind_optimizer]
        for config in self.lr_scheduler_configs:
            config.scheduler = CollaborativeScheduler(config.scheduler)  # type: ignore[assignment]

    def _wrap_for_local_steps(self, local_steps: int) -> None:
        from hiveling.core.swarm.localsteps import LocalStepsOptimizer

        assert self.dht is not None, "setup_environment() starts the DHT before setup()"
        kwargs = self._optimizer_kwargs
        self._hivemind_optimizer = LocalStepsOptimizer(
            dht=self.dht,
            run_id=self.run_id,
            optimizer=self.optimizers[0],
            local_steps=local_steps,
            batch_size_per_step=self._batch_size,
            matchmaking_time=kwargs["matchmaking_time"],
            averaging_timeout=kwargs["averaging_timeout"],
            load_state_timeout=kwargs["load_state_timeout"],
            client_mode=kwargs["client_mode"],
            averager_opts=kwargs["averager_opts"],
            tracker_opts=kwargs["tracker_opts"],
            verbose=kwargs["verbose"],
            **self._outer_kwargs,
        )
        self.optimizers = [self._hivemind_optimizer]

    def _catch_up_with_peers(self) -> None:
        """Start from the collaboration's state rather than a fresh initialization, if one exists."""
        optimizer = self._hivemind_optimizer
        if optimizer is None:
            return
        if self._initial_peers:
            self._wait_for_peers_progress(optimizer.tracker)
        progress = optimizer.tracker.global_progress
        if progress.num_peers > 1 and progress.epoch >= optimizer.local_epoch:  # num_peers counts this one
            log.info("Downloading the collaboration's current state from %d peer(s)", progress.num_peers - 1)
            optimizer.load_state_from_peers()

    @staticmethod
    def _wait_for_peers_progress(tracker: Any) -> None:
        """Joining: see the collaboration's progress before the first batch.

        hivemind's first fetch comes a second after start, and on a busy machine the first answers can
        miss the others' records: a joining peer then takes steps of its own from a fresh
        initialization before it downloads the collaboration's state.
        """
        if hasattr(tracker, "announce_joining"):
            tracker.announce_joining()  # so that a peer joining at the same time sees this one
        deadline = time.monotonic() + _JOIN_PROGRESS_WAIT
        while (left := deadline - time.monotonic()) > 0:
            tracker.refresh(timeout=left)
            if tracker.global_progress.num_peers > 1:  # counts this peer
                return
            time.sleep(min(_JOIN_PROGRESS_RETRY, max(0.0, deadline - time.monotonic())))  # pace the fetches
        log.info("No peer published its progress within %.0f s: training alone for now", _JOIN_PROGRESS_WAIT)

    def _use_hivemind_grad_scaler(self) -> None:
        import hivemind

        plugin = self.precision_plugin
        if isinstance(plugin, MixedPrecision) and not isinstance(plugin.scaler, hivemind.GradScaler):
            # With reuse_grad_buffers, gradients stay scaled across local batches: only hivemind's
            # scaler knows to unscale them once, at the collaborative step.
            plugin.scaler = hivemind.GradScaler()

    def _disable_zero_grad(self) -> None:
        module = self.lightning_module
        assert module is not None

        def keep_accumulating(*args: Any, **kwargs: Any) -> None:
            """hivemind owns the gradient buffers when reuse_grad_buffers=True."""

        module.optimizer_zero_grad = keep_accumulating  # type: ignore[method-assign]


#: Tries at joining the DHT through initial_peers, and the pause before the second (then twice that).
_JOIN_ATTEMPTS = 3
_JOIN_RETRY_SECONDS = 1.0
#: How long a joining peer waits to see another peer's progress before it trains alone.
_JOIN_PROGRESS_WAIT = 10.0
_JOIN_PROGRESS_RETRY = 0.5


def _check_local_steps_options(local_steps: int, **synchronous_only: bool) -> None:
    if local_steps < 1:
        raise MisconfigurationException(f"local_steps must be at least 1, got {local_steps}")
    chosen = [name for name, value in synchronous_only.items() if value]
    if chosen:
        raise MisconfigurationException(
            f"local_steps (the low-communication mode) averages parameter changes, not gradients: "
            f"drop {', '.join(chosen)}, which only apply to the synchronous mode"
        )


def _resolve_target_batch_size(value: int | None) -> int:
    if value is None:
        raw = os.environ.get(TARGET_BATCH_SIZE_ENV)
        if raw is None:
            raise MisconfigurationException(
                "HivemindStrategy needs target_batch_size, the samples all peers accumulate per step: "
                "HivemindStrategy(target_batch_size=4096), or set TARGET_BATCH_SIZE=4096."
            )
        try:
            value = int(raw)
        except ValueError:
            raise MisconfigurationException(
                f"TARGET_BATCH_SIZE must be a whole number of samples, got {raw!r}"
            ) from None
    if value <= 0:
        raise MisconfigurationException(
            f"target_batch_size must be a positive number of samples, got {value}"
        )
    return value


def _infer_batch_size(batch: Any) -> int:
    try:
        return extract_batch_size(batch)
    except (MisconfigurationException, RecursionError):
        raise MisconfigurationException(
            "HivemindStrategy could not infer the batch size from your batch (no tensor found): "
            "pass HivemindStrategy(batch_size=N)."
        ) from None


StrategyRegistry.register(
    HivemindStrategy.strategy_name,
    HivemindStrategy,
    description="Collaborative training over the internet with hivemind (TARGET_BATCH_SIZE from env)",
    override=True,
)
