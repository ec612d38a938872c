"""Human text for the worker's events: what the headless client, the host and the demo print."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hiveling.core.worker.events import Event


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def describe_energy(event: Event, price_per_kwh: float | None = None, currency: str = "") -> str | None:
    """'4.2 Wh this session (estimated), 0.01 EUR · CPU 64 °C · cooling down: ...'; None without figures."""
    from hiveling.core.energy.meter import energy_cost, format_energy

    wh = event.get("energy_wh")
    if not isinstance(wh, int | float):
        return None
    text = f"{format_energy(wh)} this session" + (" (estimated)" if event.get("energy_estimated") else "")
    price = energy_cost(wh, price_per_kwh, currency)
    if price:
        text += f", {price}"
    temperatures = event.get("temperatures")
    if isinstance(temperatures, dict):
        for kind in ("gpu", "cpu"):
            if isinstance(temperatures.get(kind), int | float):
                text += f" · {kind.upper()} {temperatures[kind]:.0f} °C"
    if event.get("governor"):
        text += f" · {event['governor']}"
    swarm = event.get("swarm_energy_wh")
    if isinstance(swarm, int | float):
        peers = event.get("swarm_energy_peers") or 0
        text += f" · the run: {format_energy(swarm)} from {peers} peer{'s' if peers != 1 else ''}"
        price = energy_cost(swarm, price_per_kwh, currency)
        if price:
            text += f", {price}"
    return text


def describe_progress(event: Event, price_per_kwh: float | None = None, currency: str = "") -> str:
    """One line: 'step 12 · 3 peers · 840 samples/s (this machine 210/s) · 96/256 · next in 4 s · ...'.

    In the low-communication mode the line starts with the mode, and counts toward the next exchange.
    """
    local = event.get("mode") == "local"
    upcoming = "exchange" if local else "step"
    parts = [
        *(["low-communication mode"] if local else []),
        f"step {format_count(event.get('step') or 0)}",
        f"{event.get('peers') or 1} peer{'s' if (event.get('peers') or 1) != 1 else ''}",
        f"{format_count(event.get('collab_sps') or 0)} samples/s "
        f"(this machine {format_count(event.get('local_sps') or 0)}/s)",
        f"{format_count(event.get('samples_accumulated') or 0)}/"
        f"{format_count(event.get('target_batch_size') or 0)} toward the next {upcoming}",
    ]
    if event.get("eta_seconds") is not None:
        parts.append(f"next {'exchange ' if local else ''}in {format_duration(event['eta_seconds'])}")
    if event.get("loss") is not None:
        parts.append(f"loss {float(event['loss']):.3f}")
    if event.get("accuracy") is not None:
        parts.append(f"held-out accuracy {float(event['accuracy']):.0%}")
    for field, words in (
        ("skipped_batches", "batches left out (not finite)"),
        ("failed_rounds", "failed averaging rounds"),
        ("rejected_rounds", "averaged steps not applied (not finite)"),
    ):
        if event.get(field):
            parts.append(f"{format_count(event[field])} {words}")
    contributed = f"contributed {format_count(event.get('total_samples') or 0)} samples"
    if event.get("total_seconds"):
        contributed += f" in {format_duration(event['total_seconds'])} of training"
    parts.append(contributed)
    energy = describe_energy(event, price_per_kwh, currency)
    if energy:
        parts.append(energy)
    return " · ".join(parts)


def describe_event(event: Event, price_per_kwh: float | None = None, currency: str = "") -> str | None:
    """The line to print for an event, or None for events a person need not see."""
    kind = event.get("type")
    if kind == "progress":
        return describe_progress(event, price_per_kwh, currency)
    if kind == "state":
        state = str(event.get("state", "?"))
        reason = event.get("reason")
        return f"{state.capitalize()}" + (f": {reason}" if reason and reason != state else "")
    if kind == "error":
        return f"Error: {event.get('message')}"
    if kind == "hello":
        device = event.get("device") or {}
        return (
            f"Joined as peer {str(event.get('peer_id'))[-8:]} on {device.get('name', '?')} "
            f"(batch {event.get('batch_size')}), collaborative step {event.get('step', 0)}"
        )
    if kind == "log" and event.get("level") in ("warning", "error"):
        return f"Warning: {event.get('message')}"
    if kind == "log" and event.get("topic") == "host":  # the host is back: as visible as its going
        return str(event.get("message"))
    return None


def describe_invite(invite: Any, now: datetime | None = None) -> list[str]:
    """What a volunteer should know before joining."""
    now = now or datetime.now(UTC)
    days = (invite.expires - now).total_seconds() / 86400
    return [
        f"Run:        {invite.run_name}",
        f"Organizer:  {invite.fingerprint}  (compare with the one the organizer published)",
        f"Recipe:     {invite.recipe} {invite.recipe_version}, "
        f"target batch {format_count(invite.target_batch_size)}",
        f"Mode:       {invite.spec.mode_words}",
        f"Expires:    {invite.expires:%Y-%m-%d %H:%M} UTC ({days:.0f} days)",
        *(
            [f"Ends:       at collaborative step {format_count(invite.last_step)}"]
            if invite.last_step
            else []
        ),
    ]


def describe_fit(recipe: Any, device: Any, batch_size: int) -> str:
    needs = recipe.needs
    need = needs.memory_for(batch_size)
    free = device.free_memory
    return (
        f"Needs:      {format_bytes(need)} at batch size {batch_size} "
        f"({format_count(needs.parameters)} parameters); "
        f"this machine: {device.label}, {format_bytes(free)} free"
    )
