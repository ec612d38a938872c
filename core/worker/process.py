"""The training worker: a child process that trains a run's recipe and reports on stdout.

    python -m hiveling.core.worker --invite TOKEN [--device auto] [--batch-size N] ...

Speaks the protocol of :mod:`hiveling.core.worker.events` (JSON lines on stdout, commands on stdin, human logs
on stderr). Closing stdin is taken as ``stop``: a worker never outlives its supervisor.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hiveling.core import config, paths
from hiveling.core.energy.watch import EnergyWatch
from hiveling.core.run import RunSpec, data_seed
from hiveling.core.worker.events import (
    EXIT_BAD_INPUT,
    EXIT_CRASH,
    EXIT_OK,
    Event,
    decode_command,
    encode,
    make_event,
)
from hiveling.core.worker.hostwatch import host_peer_ids
from hiveling.core.worker.identity import IdentityInUse, IdentityLock, ensure_identity
from hiveling.core.worker.session import Controls, SessionConfig, Totals, run_session

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/0"


class WorkerError(Exception):
    """Bad input or an unusable machine: reported as one line, and not worth a restart."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EventWriter:
    """Writes events to stdout from any thread, one whole line at a time."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the supervisor is gone; stdin's end will stop us


def read_commands(fd: int, controls: Controls, emit: EventWriter) -> None:
    """Reads commands from a raw descriptor until it closes, then asks to stop."""
    pending = b""
    while chunk := _read(fd):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            handle_command(line.decode("utf-8", "replace"), controls, emit)
    controls.request_stop()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def handle_command(line: str, controls: Controls, emit: EventWriter) -> None:
    command = decode_command(line)
    if command is None:
        if line.strip():
            text = f"ignored unknown command: {line.strip()[:80]}"
            emit(make_event("log", level="warning", message=text))
        return
    name = command["cmd"]
    if name == "pause":
        controls.request_pause("step" if command.get("when") == "step" else "now")
    elif name == "resume":
        controls.request_resume()
    else:
        controls.request_stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hiveling.core.worker", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--invite", help="the run's invite")
    source.add_argument("--run-spec", help="the run as JSON (the host's own worker)")
    parser.add_argument("--role", choices=("volunteer", "host"), default="volunteer")
    parser.add_argument("--organizer-key", default=None, help="the organizer key file (the host)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--memory-cap-gb", type=float, default=None)
    parser.add_argument("--cpu-threads", type=int, default=None)
    parser.add_argument("--listen", action="append", default=None, help="multiaddr to listen on (repeatable)")
    parser.add_argument("--announce", action="append", default=None, help="multiaddr others reach us at")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="collaborative steps")
    parser.add_argument("--max-step", type=int, default=None, help="stop at this collaborative step")
    parser.add_argument("--progress-interval", type=float, default=2.0)
    parser.add_argument("--options", default="{}", help="extra HivemindStrategy options as JSON")
    parser.add_argument("--temperature-limit", type=float, default=None, help="°C; the governor slows above")
    parser.add_argument("--power-limit", default=None, help="watts (120W) or a share of the rating (60%%)")
    parser.add_argument("--daily-energy-wh", type=float, default=None, help="energy budget per day")
    return parser


class Worker:
    def __init__(self, args: argparse.Namespace, emit: EventWriter, controls: Controls) -> None:
        self.args = args
        self.emit = emit
        self.controls = controls
        self._said_hello = False

    def run(self) -> int:
        spec = self._load_spec()
        recipe, hparams = self._load_recipe(spec)
        device = self._choose_device()
        batch_size = self._choose_batch_size(recipe, device)
        run_dir = paths.run_dir(spec.run_id)
        identity = run_dir / ("host.identity" if self.args.role == "host" else "peer.identity")
        self._lock_identity(identity, spec)  # first: two workers starting at once must not make two keys
        ensure_identity(identity)
        seed = data_seed(hashlib.sha256(identity.read_bytes()).hexdigest())
        previous = config.load_contribution(spec.run_id)
        if spec.last_step is not None and (previous.finished_at or 0) >= spec.last_step:
            # Started again after the end (the tray at login, say): nothing to join any more.
            reason = f"the run has finished (step {spec.last_step})"
            finished = make_event("state", state="stopped", reason=reason, outcome="finished")
            self.emit({**finished, "step": previous.finished_at, "again": True})
            return EXIT_OK
        totals = Totals(previous_samples=previous.samples, previous_seconds=previous.seconds)
        energy = self._energy_watch(device, previous.energy_wh)
        self.emit(make_event("state", state="starting", reason=f"preparing {recipe.title} on {device.label}"))

        import torch

        torch.set_num_threads(self.args.cpu_threads or max(1, (os.cpu_count() or 2) // 2))
        from hiveling.core.recipes import RecipeError

        try:
            plan = recipe.build(hparams, seed)
        except RecipeError as error:  # hyperparameters the model cannot be built with: no restart helps
            raise WorkerError("recipe", str(error)) from None
        session = SessionConfig(
            spec=spec,
            accelerator={"cuda": "cuda", "rocm": "cuda", "mps": "mps"}.get(device.kind, "cpu"),
            device_index=device.index if device.kind in ("cuda", "rocm") else None,
            batch_size=batch_size,
            precision="16-mixed" if device.kind in ("cuda", "rocm") else "32-true",
            host_maddrs=self.args.listen or [DEFAULT_LISTEN],
            announce_maddrs=self.args.announce,
            identity_path=str(identity),
            checkpoint_path=run_dir / ("host.ckpt" if self.args.role == "host" else "volunteer.ckpt"),
            checkpoint_every=self.args.checkpoint_every,
            max_step=min((s for s in (self.args.max_step, spec.last_step) if s is not None), default=None),
            progress_interval=self.args.progress_interval,
            # The identity lock already proves that no other worker here uses this identity, and asking
            # the swarm would refuse a restarted worker whose previous connection peers still remember.
            strategy_options={"check_if_identity_free": False, **json.loads(self.args.options)},
            watch_host=[] if self.args.role == "host" else host_peer_ids(spec.peers),
            energy=energy,
            signing_key=self._signing_key(),
        )

        def hello(strategy: Any) -> None:
            if self._said_hello:
                return
            self._said_hello = True
            event = self._hello(spec, strategy, device, batch_size, recipe.title)
            self.emit({**event, **energy.hello_fields()})

        try:
            while True:
                outcome = self._train(session, plan, totals, hello, recipe)
                if outcome == "finished" and spec.last_step and totals.ended_at_step >= spec.last_step:
                    totals.finished_at = spec.last_step  # the run's end, not a --max-step of this machine
                _save_totals(spec.run_id, totals, energy)
                if outcome != "paused":
                    reason = "reached the last step" if outcome == "finished" else "stopped"
                    stopped = make_event("state", state="stopped", reason=reason, outcome=outcome)
                    self.emit({**stopped, "step": totals.ended_at_step, "fingerprints": totals.fingerprints})
                    return EXIT_OK
                self._release(plan, device.kind, totals)
                if not self.controls.wait_while_paused(energy.may_resume):
                    self.emit(make_event("state", state="stopped", reason="stopped while paused"))
                    return EXIT_OK
                session.batch_size = batch_size
        finally:
            _save_totals(spec.run_id, totals, energy)

    def _train(self, session: SessionConfig, plan: Any, totals: Totals, hello: Any, recipe: Any) -> str:
        """One session; on out-of-memory, retries with a smaller batch instead of crashing."""
        from hiveling.core.machine.devices import is_out_of_memory, reduce_after_oom
        from hiveling.core.swarm.optimizer import NonFiniteTraining
        from hiveling.core.swarm.strategy import NotAdmitted

        while True:
            try:
                return run_session(
                    session,
                    plan.module,
                    plan.make_loader(session.batch_size),
                    self.controls,
                    totals,
                    self.emit,
                    hello,
                    lambda: _save_totals(session.spec.run_id, totals, session.energy),
                    plan.evaluate,
                )
            except NonFiniteTraining as error:
                raise WorkerError("non_finite", f"This peer stopped: {error}") from error
            except NotAdmitted as error:
                raise WorkerError("not_admitted", str(error)) from None
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                smaller = reduce_after_oom(session.batch_size, recipe.needs)
                if smaller is None:
                    raise WorkerError(
                        "out_of_memory",
                        f"{recipe.title} does not fit in this device's memory even at batch size "
                        f"{session.batch_size}; close other programs using the GPU or choose --device cpu",
                    ) from error
                self.emit(
                    make_event(
                        "log",
                        level="warning",
                        message=f"out of device memory at batch size {session.batch_size}; "
                        f"retrying with {smaller}",
                    )
                )
                session.batch_size = smaller
                gc.collect()

    def _release(self, plan: Any, kind: str, totals: Totals) -> None:
        """Frees device memory while paused: the model waits on the CPU, caches are emptied."""
        import torch

        plan.module.cpu()
        gc.collect()
        reserved = 0
        if kind in ("cuda", "rocm") and torch.cuda.is_available():
            torch.cuda.empty_cache()
            reserved = int(torch.cuda.memory_reserved())
        elif kind == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()
        governor = self.controls.paused_by == "governor"
        paused = make_event(
            "state",
            state="paused",
            reason=(self.energy_reason if governor else None) or "paused",
            by="governor" if governor else "user",
            device_memory_bytes=reserved,
            step=totals.ended_at_step,
            unused_samples=totals.unused_samples,
        )
        self.emit(paused)

    @property
    def energy_reason(self) -> str | None:
        watch = self._watch
        return None if watch is None else watch.decision.reason

    _watch: EnergyWatch | None = None

    def _energy_watch(self, device: Any, previous_wh: float) -> EnergyWatch:
        """The meter for this device's sensors and the governor for the volunteer's limits."""
        from hiveling.core.energy.governor import Limits, parse_power_limit
        from hiveling.core.energy.meter import EnergyMeter
        from hiveling.core.energy.sensors import find_sensors

        watts, share = None, None
        if self.args.power_limit:
            try:
                watts, share = parse_power_limit(self.args.power_limit)
            except ValueError as error:
                raise WorkerError("bad_setting", f"The {error}") from None
        index = device.index if device.kind in ("cuda", "rocm") else None
        sensors, notes = find_sensors(device.kind, index=index)
        for note in notes:
            logger.info("%s", note)
        meter = EnergyMeter(sensors, day_wh=config.load_energy_day())
        meter.calibrate_idle()
        limits = Limits(self.args.temperature_limit, watts, self.args.daily_energy_wh)
        self._watch = EnergyWatch(meter, limits, share, previous_wh)
        return self._watch

    def _signing_key(self) -> bytes | None:
        if self.args.organizer_key is None:
            return None
        from hiveling.core.invites.keys import OrganizerKey, OrganizerKeyError

        try:
            return OrganizerKey.load(Path(self.args.organizer_key)).private_bytes()
        except (OrganizerKeyError, OSError) as error:
            raise WorkerError("bad_setting", f"The organizer key cannot be read: {error}") from None

    def _load_spec(self) -> RunSpec:
        if self.args.run_spec is not None:
            return RunSpec.from_dict(json.loads(self.args.run_spec))
        from hiveling.core.invites.invite import InviteError, parse_invite

        try:
            # Whoever started the worker checked the expiry when joining; a restart must not end the run.
            invite = parse_invite(self.args.invite, check_expiry=False)
        except InviteError as error:
            raise WorkerError("bad_invite", str(error)) from error
        return invite.spec

    def _load_recipe(self, spec: RunSpec) -> tuple[Any, dict[str, Any]]:
        from hiveling.core.recipes import RecipeError, find_recipe

        try:
            recipe = find_recipe(spec.recipe, spec.recipe_version)
            return recipe, recipe.hyperparameters(spec.hparams)
        except RecipeError as error:
            raise WorkerError("unknown_recipe", str(error)) from error

    def _choose_device(self) -> Any:
        from hiveling.core.machine.devices import DeviceError, choose_device, detect_devices

        try:
            return choose_device(detect_devices(), self.args.device)
        except DeviceError as error:
            raise WorkerError("device", str(error)) from error

    def _choose_batch_size(self, recipe: Any, device: Any) -> int:
        if self.args.batch_size is not None:
            if self.args.batch_size < 1:
                raise WorkerError(
                    "bad_option", f"--batch-size must be at least 1, got {self.args.batch_size}"
                )
            return int(self.args.batch_size)
        from hiveling.core.machine.devices import DeviceError, fit_batch_size

        cap = None if self.args.memory_cap_gb is None else int(self.args.memory_cap_gb * 2**30)
        try:
            return int(fit_batch_size(recipe.needs, device, cap))
        except DeviceError as error:
            raise WorkerError("device", str(error)) from error

    def _lock_identity(self, identity: Path, spec: RunSpec) -> None:
        lock = IdentityLock(identity)
        try:
            lock.acquire()
        except IdentityInUse as error:
            if self.args.role == "host":
                message = (
                    f"A host for {spec.run_name!r} is already running on this machine (process {error}): "
                    f"stop it (Ctrl-C in its terminal, or kill {error}) before starting it again; "
                    "two hosts of one run would split its volunteers"
                )
            else:
                message = (
                    f"Another Hiveling worker on this machine (process {error}) is already training "
                    f"{spec.run_name!r} as this peer: stop it first (the tray's Quit, or Ctrl-C where "
                    "it runs)"
                )
            raise WorkerError("identity_in_use", message) from None
        self._identity_lock = lock  # held until the process ends

    def _hello(self, spec: RunSpec, strategy: Any, device: Any, batch_size: int, title: str) -> Event:
        from importlib.metadata import version

        def installed(name: str) -> str | None:
            try:
                return version(name)
            except Exception:
                return None

        dht = strategy.dht
        return make_event(
            "hello",
            protocol=1,
            versions={
                "hiveling": installed("hiveling"),
                "python": platform.python_version(),
                "torch": installed("torch"),
                "lightning": installed("lightning"),
                "hivemind": installed("hivemind"),
            },
            peer_id=None if dht is None else str(dht.peer_id),
            role=self.args.role,
            run_id=spec.run_id,
            run_name=spec.run_name,
            recipe=spec.recipe,
            recipe_title=title,
            device={"kind": device.kind, "index": device.index, "name": device.name},
            batch_size=batch_size,
            addresses=strategy.join_addresses(),
            step=strategy.collaborative_step,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hiveling.core.machine.devices import TORCH_ENVIRONMENT

    for name, value in TORCH_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # torch numbers GPUs as detection did
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    emit = EventWriter(sys.stdout)
    controls = Controls()

    signals = 0

    def on_signal(*_: Any) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:  # signalled twice: the polite way is stuck, leave now
            os._exit(EXIT_CRASH)
        controls.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # Commands arrive on a private copy of stdin read without Python's buffered file: a child forked
    # while a thread blocks in sys.stdin's reader (hivemind's DHT is one) would hang closing sys.stdin.
    commands = os.dup(sys.stdin.fileno())
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    threading.Thread(target=read_commands, args=(commands, controls, emit), daemon=True).start()
    emit(make_event("state", state="starting", reason="starting the worker"))
    code = run_worker(args, emit, controls)
    exit_soon(code)
    return code


def run_worker(args: argparse.Namespace, emit: EventWriter, controls: Controls) -> int:
    try:
        code = Worker(args, emit, controls).run()
        emit(make_event("bye", exit_code=code, reason="stopped"))
        return code
    except WorkerError as error:
        emit(make_event("error", code=error.code, message=str(error), fatal=True))
        emit(make_event("bye", exit_code=EXIT_BAD_INPUT, reason=error.code))
        return EXIT_BAD_INPUT
    except Exception as error:
        traceback.print_exc()
        message = _crash_message(error)
        emit(make_event("error", code="crash", message=message, fatal=True))
        emit(make_event("bye", exit_code=EXIT_CRASH, reason="crash"))
        return EXIT_CRASH


def exit_soon(code: int, grace: float = 10.0) -> None:
    """After bye, a worker must end: a DHT child stuck at shutdown would otherwise keep it alive."""
    import multiprocessing

    def force() -> None:
        for child in multiprocessing.active_children():
            child.kill()
        os._exit(code)

    timer = threading.Timer(grace, force)
    timer.daemon = True
    timer.start()


def _save_totals(run_id: str, totals: Totals, energy: EnergyWatch | None = None) -> None:
    try:
        config.save_contribution(
            run_id,
            config.Contribution(
                totals.total_samples,
                totals.total_seconds,
                totals.finished_at,
                0.0 if energy is None else round(energy.total_wh, 4),
            ),
        )
        if energy is not None:
            config.save_energy_day(energy.meter.day, energy.meter.day_wh)
    except OSError as error:
        logger.warning("Could not save the contribution totals: %s", error)


def _crash_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == 28:
        return f"The disk is full ({error.filename or 'writing'}); free some space and start again"
    text = str(error).strip().splitlines()
    return f"The worker failed: {type(error).__name__}: {text[0] if text else ''} (details in the log)"
