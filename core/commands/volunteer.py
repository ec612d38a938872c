"""``hiveling --headless --invite TOKEN``: a volunteer without the tray app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hiveling.core.commands.console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Output,
    UsageError,
    wait_for_signal_or,
)
from hiveling.core.config import Settings, load_settings
from hiveling.core.worker.command import WorkerOptions
from hiveling.core.worker.supervisor import Supervisor

# How image files begin: PNG, JPEG, GIF, BMP, WebP (RIFF), TIFF.
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def read_invite_text(args: argparse.Namespace) -> str:
    if args.invite_file is not None:
        try:
            data = Path(args.invite_file).read_bytes()
        except OSError as error:
            raise UsageError(
                f"cannot read the invite file {args.invite_file}: {error.strerror or error}"
            ) from error
        if data.startswith(IMAGE_MAGIC):
            return invite_from_image(args.invite_file, data)
        return data.decode("utf-8", errors="replace")
    if args.invite == "-":
        return sys.stdin.buffer.read().decode("utf-8", "replace")
    return str(args.invite)


def invite_from_image(name: str, data: bytes) -> str:
    """The invite in a QR code image (the host's PNG, a screenshot or a photo of it)."""
    from hiveling.core.invites.qr import QRError, read_invites

    try:
        found = read_invites(data)
    except QRError as error:
        raise UsageError(str(error)) from error
    if not found:
        raise UsageError(
            f"{name} is an image without a Hiveling invite's QR code in it; "
            "pass the invite's text with --invite, or a sharper picture of the code"
        )
    return found[0]


def options_from(args: argparse.Namespace, token: str) -> WorkerOptions:
    from hiveling.core.swarm.peers import PeerAddressError, check_multiaddrs

    settings = load_settings()
    for flag in ("batch_size", "cpu_threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.memory_cap_gb is not None and not args.memory_cap_gb > 0:
        raise UsageError(f"--memory-cap-gb must be positive, got {args.memory_cap_gb}")
    try:
        check_multiaddrs(list(args.listen), "--listen")
        check_multiaddrs(list(args.announce_addr), "--announce-addr")
    except PeerAddressError as error:
        raise UsageError(str(error)) from error
    limits = energy_limits(args, settings)
    if settings.cpu_threads is not None and settings.cpu_threads < 1:
        settings.cpu_threads = None  # a hand-edited settings file; the default is fine
    if settings.memory_cap_gb is not None and not settings.memory_cap_gb > 0:
        settings.memory_cap_gb = None
    return WorkerOptions(
        invite=token,
        device=args.device or settings.device,
        batch_size=args.batch_size,
        memory_cap_gb=args.memory_cap_gb if args.memory_cap_gb is not None else settings.memory_cap_gb,
        cpu_threads=args.cpu_threads or settings.cpu_threads,
        listen=tuple(args.listen),
        announce=tuple(args.announce_addr),
        max_step=args.max_step,
        progress_interval=args.progress_interval,
        **limits,
    )


def energy_limits(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The governor's limits, from the flags, else the settings; a bad flag is refused in one line."""
    from hiveling.core.energy.governor import parse_power_limit

    temperature = args.temperature_limit
    if temperature is None:
        temperature = settings.temperature_limit_c
    if temperature is not None and not 30 <= temperature <= 110:
        raise UsageError(f"--temperature-limit must be between 30 and 110 °C, got {temperature:g}")
    daily = args.daily_energy if args.daily_energy is not None else settings.daily_energy_wh
    if daily is not None and not daily > 0:
        raise UsageError(f"--daily-energy must be a positive number of Wh, got {daily:g}")
    power = args.power_limit if args.power_limit is not None else settings.power_limit
    if power is not None:
        try:
            parse_power_limit(power)
        except ValueError as error:
            raise UsageError(f"--power-limit: {error}") from None
    if args.price_per_kwh is not None and not args.price_per_kwh >= 0:
        raise UsageError(f"--price-per-kwh must be zero or more, got {args.price_per_kwh:g}")
    return {"temperature_limit_c": temperature, "power_limit": power, "daily_energy_wh": daily}


def run_volunteer(args: argparse.Namespace) -> int:
    from hiveling.core.invites.invite import InviteError, parse_invite

    try:
        invite = parse_invite(read_invite_text(args))
    except InviteError as error:
        print(f"hiveling: {error}", file=sys.stderr)
        return EXIT_USAGE
    options = options_from(args, invite.token)
    settings = load_settings()
    price = args.price_per_kwh if args.price_per_kwh is not None else settings.price_per_kwh
    output = Output(args.json, price, args.currency if args.currency is not None else settings.currency)
    if not args.json:
        from hiveling.core.commands.report import describe_invite

        for line in describe_invite(invite):
            output.say(line)
        fit = describe_machine(invite, options)
        if fit:
            output.say(fit)
    supervisor = Supervisor(options, output)
    supervisor.start()
    interrupted = wait_for_signal_or(output.done)
    if interrupted:
        output.say("Stopping (the current step is left to the other peers)…")
    elif output.bye_code is not None:
        supervisor.wait(timeout=15)  # the worker said bye and is on its way out
    supervisor.stop()
    if output.last_progress is not None:
        total = output.last_progress.get("total_samples") or 0
        output.say(f"This machine has contributed {total:,} samples to {invite.run_name}.")
        energy = describe_energy_total(output.last_progress, output.price_per_kwh, output.currency)
        if energy:
            output.say(energy)
    if output.finished:
        output.say(f"“{invite.run_name}” has reached its last step and is finished. Thank you for your help!")
    if interrupted or output.bye_code == 0:
        return EXIT_OK
    if output.bye_code == 2:
        return EXIT_USAGE
    return EXIT_FAILED if supervisor.state == "failed" or output.fatal is not None else EXIT_OK


def describe_energy_total(event: dict[str, Any], price_per_kwh: float | None, currency: str) -> str | None:
    """'Energy: 12.4 Wh this session, 0.31 kWh for this run (estimated from ...), 0.09 EUR.'"""
    from hiveling.core.energy.meter import energy_cost, format_energy

    session, total = event.get("energy_wh"), event.get("energy_total_wh")
    if not isinstance(session, int | float) or not isinstance(total, int | float):
        return None
    how = " (estimated)" if event.get("energy_estimated") else ""
    price = energy_cost(total, price_per_kwh, currency)
    return (
        f"Energy: {format_energy(session)} this session, {format_energy(total)} for this run{how}"
        + (f", {price} in all" if price else "")
        + "."
    )


def describe_machine(invite: object, options: WorkerOptions) -> str | None:
    """The recipe's needs against this machine, or a one-line reason why it cannot join (None: unknown)."""
    from hiveling.core.commands.report import describe_fit
    from hiveling.core.machine.devices import DeviceError, choose_device, detect_devices, fit_batch_size
    from hiveling.core.recipes import RecipeError, find_recipe

    try:
        recipe = find_recipe(invite.recipe, invite.recipe_version)  # type: ignore[attr-defined]
        device = choose_device(detect_devices(), options.device)
        cap = None if options.memory_cap_gb is None else int(options.memory_cap_gb * 2**30)
        batch = options.batch_size or fit_batch_size(recipe.needs, device, cap)
    except (RecipeError, DeviceError) as error:
        return f"Cannot join: {error}"
    return describe_fit(recipe, device, batch)


__all__ = ["run_volunteer", "EXIT_OK"]
