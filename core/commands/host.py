"""The organizer's side: ``hiveling host --recipe NAME`` starts a run and prints its invite.

The host keeps the organizer key (created once), runs the run's bootstrap peer as a worker that also
trains and checkpoints the collaboration's state, and turns the worker's addresses into an invite.
The peer identity and the port are stable, so a restarted host prints the same invite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hiveling.core import paths
from hiveling.core.run import RunSpec
from hiveling.core.worker.command import WorkerOptions
from hiveling.core.worker.events import Event, make_event
from hiveling.core.worker.supervisor import Supervisor

DEFAULT_PORT = 31330
# Stands for the host's own address while checking that everything else fits in an invite.
PLACEHOLDER_PEER = "/ip4/127.0.0.1/tcp/1/p2p/QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"
KEY_FILE = "organizer.key"


class HostError(Exception):
    """Bad host options; the message says what to change."""


@dataclass(frozen=True)
class HostOptions:
    recipe: str
    run_name: str | None = None
    target_batch_size: int | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    local: bool = False  # 127.0.0.1 only: demos and tests
    announce: tuple[str, ...] = ()
    expires_in: timedelta = timedelta(days=30)
    device: str = "cpu"
    batch_size: int | None = None
    cpu_threads: int | None = None
    checkpoint_every: int = 20
    last_step: int | None = None
    mode: str | None = None  # "sync" or "local"; None: the recipe's
    local_steps: int | None = None
    progress_interval: float = 2.0
    env: Mapping[str, str] = field(default_factory=dict)


def plan_run(options: HostOptions, key_path: Path | None = None) -> tuple[Any, RunSpec]:
    """The organizer key and the run it hosts (pure apart from creating the key and the run's join
    secret on first use)."""
    from hiveling.core.invites.invite import InviteError, OrganizerKey, invite_for, run_id_for
    from hiveling.core.invites.keys import OrganizerKeyError, load_or_create_secret
    from hiveling.core.recipes import RecipeError, find_recipe
    from hiveling.core.swarm.peers import PeerAddressError, check_multiaddrs

    try:
        recipe = find_recipe(options.recipe)
        hparams = recipe.hyperparameters(options.hparams)
    except RecipeError as error:
        raise HostError(str(error)) from error
    check_options(options)
    try:
        check_multiaddrs(list(options.announce), "--announce")
    except PeerAddressError as error:
        raise HostError(str(error)) from error
    target = (
        recipe.needs.default_batch_size * 16
        if options.target_batch_size is None
        else options.target_batch_size
    )
    key_path = key_path or paths.config_dir() / KEY_FILE
    name = options.run_name or f"{recipe.title}"
    try:
        key = OrganizerKey.load_or_create(key_path)
        secret = load_or_create_secret(secret_path(key_path, run_id_for(key.public_bytes, name)))
    except (OrganizerKeyError, OSError) as error:
        raise HostError(str(error)) from error
    spec = RunSpec(
        run_id=run_id_for(key.public_bytes, name),
        run_name=name,
        recipe=recipe.name,
        recipe_version=recipe.version,
        target_batch_size=target,
        # Only what differs from the recipe's defaults travels: invites stay short enough for a QR code.
        hparams={k: v for k, v in hparams.items() if recipe.defaults.get(k) != v},
        last_step=options.last_step,
        local_steps=choose_local_steps(options, recipe.local_steps),
        organizer_key=key.public_bytes.hex(),
        join_secret=secret.hex(),
    )
    try:  # everything but the addresses, which only the running worker knows
        invite_for(key, spec, [PLACEHOLDER_PEER], options.expires_in)
    except InviteError as error:
        raise HostError(str(error)) from error
    return key, spec


def secret_path(key_path: Path, run_id: str) -> Path:
    """Where a run's join secret is kept: beside the organizer key that closes the run."""
    return key_path.with_name(f"join-{run_id}.secret")


#: Local steps between exchanges when the organizer picks the local mode for a recipe without its own.
DEFAULT_LOCAL_STEPS = 100


def choose_local_steps(options: HostOptions, recipe_local_steps: int | None) -> int | None:
    """The run's local steps: None for the synchronous mode."""
    mode = options.mode or ("local" if recipe_local_steps is not None or options.local_steps else "sync")
    if mode == "sync":
        if options.local_steps is not None:
            raise HostError("--local-steps applies to --mode local: drop one of them")
        return None
    return options.local_steps or recipe_local_steps or DEFAULT_LOCAL_STEPS


def check_options(options: HostOptions) -> None:
    if options.target_batch_size is not None and options.target_batch_size < 1:
        raise HostError(f"--target-batch-size must be at least 1, got {options.target_batch_size}")
    if not 0 <= options.port <= 65535:
        raise HostError(f"--port must be between 1 and 65535 (0: any free port), got {options.port}")
    for flag, value in (
        ("--checkpoint-every", options.checkpoint_every),
        ("--cpu-threads", options.cpu_threads),
        ("--batch-size", options.batch_size),
        ("--last-step", options.last_step),
        ("--local-steps", options.local_steps),
    ):
        if value is not None and value < 1:
            raise HostError(f"{flag} must be at least 1, got {value}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: a local host keeps it across worker restarts."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_port(options: HostOptions) -> None:
    """Refuses a port something already listens on: volunteers could join that instead."""
    from hiveling.core.machine.ports import port_holder, port_in_use

    if options.port == 0 or not port_in_use("127.0.0.1" if options.local else "0.0.0.0", options.port):
        return
    holder = port_holder(options.port)
    host = None if holder is None else holder.hiveling_host
    if host is not None:
        raise HostError(
            f"a Hiveling host is already running on port {options.port} (process {host}): "
            f"stop it (Ctrl-C in its terminal) or start this one with --port N"
        )
    who = f"process {holder.pid} ({holder.command[:80]})" if holder is not None else "another program"
    raise HostError(f"TCP port {options.port} is already in use by {who}: stop it or choose --port N")


def listen_addresses(options: HostOptions) -> tuple[str, ...]:
    host = "127.0.0.1" if options.local else "0.0.0.0"
    return (f"/ip4/{host}/tcp/{options.port}",)


def invite_peers(
    addresses: Sequence[str], options: HostOptions, peer_id: str | None = None, limit: int = 3
) -> list[str]:
    """The addresses an invite carries: announced ones, else the reachable ones the worker saw."""
    if options.announce:
        suffix = f"/p2p/{peer_id}" if peer_id else ""
        return [a if "/p2p/" in a else a + suffix for a in options.announce][:limit]
    usable = [a for a in addresses if options.local or not a.startswith("/ip4/127.")]
    return (usable or list(addresses))[:limit]


class Host:
    """Runs the host worker and makes the invite once the worker knows its addresses."""

    def __init__(
        self, options: HostOptions, on_event: Callable[[Event], None], key_path: Path | None = None
    ) -> None:
        self.options = options
        self.on_event = on_event
        self.key_path = key_path or paths.config_dir() / KEY_FILE
        self.key, self.spec = plan_run(options, self.key_path)
        self.invite: Any = None
        self.error: str | None = None
        self.invite_ready = threading.Event()
        self.supervisor = Supervisor(
            WorkerOptions(
                run_spec=self.spec,
                role="host",
                organizer_key=str(self.key_path),
                device=options.device,
                batch_size=options.batch_size,
                cpu_threads=options.cpu_threads,
                listen=listen_addresses(options),
                announce=options.announce,
                checkpoint_every=options.checkpoint_every,
                progress_interval=options.progress_interval,
                env=options.env,
            ),
            self._handle,
        )
        self.supervisor.stop_grace = 20.0  # the host's last checkpoint is worth a longer wait

    def start(self) -> None:
        """Starts the host's worker; HostError when its port is taken (say, by this run's host)."""
        check_port(self.options)
        self.supervisor.start()

    def stop(self) -> None:
        self.supervisor.stop()

    def _handle(self, event: Event) -> None:
        if event.get("type") == "hello" and self.invite is None:
            from hiveling.core.invites.invite import InviteError, invite_for

            peers = invite_peers(list(event.get("addresses") or []), self.options, event.get("peer_id"))
            try:
                self.invite = invite_for(self.key, self.spec, peers, self.options.expires_in)
            except InviteError as error:
                self.error = f"cannot make the invite: {error}"
                self.on_event(make_event("error", code="bad_option", message=self.error, fatal=True))
                self.invite_ready.set()
                return
            self.invite_ready.set()
            self.on_event(event)
            self.on_event(
                {
                    "v": 1,
                    "type": "invite",
                    "token": self.invite.token,
                    "link": self.invite.link,
                    "fingerprint": self.invite.fingerprint,
                    "run_id": self.spec.run_id,
                    "run_name": self.spec.run_name,
                    "peers": peers,
                    "expires": self.invite.expires.isoformat(),
                }
            )
            return
        self.on_event(event)


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set lr=0.001 --set layers=4`` as hyperparameters; values are read as JSON where they parse."""
    import json

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise HostError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    return values


def run_host(args: Any) -> int:
    """The ``hiveling host`` command: start, print the invite, show progress until interrupted."""
    import sys

    from hiveling.core.commands.console import (
        EXIT_FAILED,
        EXIT_OK,
        EXIT_USAGE,
        Output,
        UsageError,
        expires_in,
        wait_for_signal_or,
    )

    output = Output(args.json)
    try:
        options = HostOptions(
            recipe=args.recipe,
            run_name=args.run_name,
            target_batch_size=args.target_batch_size,
            hparams=parse_assignments(args.set),
            port=args.port if args.port is not None else (free_port() if args.local else DEFAULT_PORT),
            local=args.local,
            announce=tuple(args.announce),
            expires_in=expires_in(args.expires_days),
            device=args.device,
            batch_size=args.batch_size,
            cpu_threads=args.cpu_threads,
            checkpoint_every=args.checkpoint_every,
            last_step=args.last_step,
            mode=args.mode,
            local_steps=args.local_steps,
            progress_interval=args.progress_interval,
        )
        host = Host(options, output)
    except (HostError, UsageError) as error:
        print(f"hiveling host: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        host.start()
    except HostError as error:
        print(f"hiveling host: {error}", file=sys.stderr)
        return EXIT_USAGE
    output.say(f"Starting run “{host.spec.run_name}” ({host.spec.recipe}), organizer {host.key.fingerprint}")

    def show_invite() -> None:
        if not host.invite_ready.wait(timeout=None) or output.done.is_set():
            return
        if host.error is not None:
            output.done.set()
            return
        from hiveling.core.invites import qr

        invite = host.invite
        png = Path(args.qr_png) if args.qr_png else paths.run_dir(host.spec.run_id) / "invite.png"
        try:
            qr.write_png(invite.token, png)
        except (qr.QRError, OSError) as error:
            output.say(f"Warning: could not write the QR code to {png}: {error}")
        output.say("")
        output.say("Invite (volunteers paste this, or scan the QR code):")
        output.say(invite.token)
        output.say(qr.terminal_text(invite.link))
        output.say(f"Link: {invite.link}")
        output.say(f"QR code image: {png}")
        output.say(f"Volunteers join with: hiveling --headless --invite {invite.token}")
        if not options.local and not options.announce:
            output.say(
                f"Volunteers outside this network need TCP port {options.port} forwarded to this machine, "
                "or --announce /ip4/PUBLIC_IP/tcp/PORT"
            )
        output.say("")

    import threading

    threading.Thread(target=show_invite, daemon=True).start()
    interrupted = wait_for_signal_or(output.done)
    host.stop()
    last = output.last_progress or {}
    if isinstance(last.get("swarm_energy_wh"), int | float):
        from hiveling.core.energy.meter import format_energy

        peers = last.get("swarm_energy_peers") or 0
        output.say(
            f"Energy: the run's {peers} peers reported {format_energy(last['swarm_energy_wh'])} of training "
            "in all (their own measurements or estimates)."
        )
    if host.error is not None:
        print(f"hiveling host: {host.error}", file=sys.stderr)
        return EXIT_USAGE
    if output.finished and not interrupted:
        output.say(
            f"The run reached its last step ({options.last_step}) and is finished; its state is saved."
        )
        return EXIT_OK
    if interrupted or (output.fatal is None and host.supervisor.exit_code in (0, None)):
        output.say("Host stopped; the run's state is saved and training resumes from it next time.")
        return EXIT_OK
    return EXIT_FAILED
