"""Hiveling's Qt-free core. Importing it does nothing: names load on first use.

What is listed in ``__all__`` is the public surface: the tray app (and anyone else) imports from here,
never from the subpackages, so that the layout below can change without breaking them.

- ``swarm/``: the Lightning strategy and everything that adapts hivemind
- ``invites/``: invites, their wire format, the organizer's keys, QR codes
- ``machine/``: what this computer has (``hardware``) and what torch can train on (``devices``)
- ``worker/``: the training worker, its events, its command line, where it runs (here or in WSL2)
  and its supervisor
- ``commands/``: the ``hiveling`` command (host, volunteer, demo); nothing imports it
- ``recipes/``: the models a run may train
- ``energy/``: what training costs in energy, and the governor that keeps it within limits
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it (a name equal to its module's last part is that module).
_PUBLIC = {
    "HivemindStrategy": "hiveling.core.swarm.strategy",
    "Invite": "hiveling.core.invites.invite",
    "InviteError": "hiveling.core.invites.invite",
    "parse_invite": "hiveling.core.invites.invite",
    "looks_like_invite": "hiveling.core.invites.invite",
    "qr": "hiveling.core.invites.qr",
    "Device": "hiveling.core.machine.devices",
    "DeviceError": "hiveling.core.machine.devices",
    "choose_device": "hiveling.core.machine.devices",
    "detect_devices": "hiveling.core.machine.devices",
    "fit_batch_size": "hiveling.core.machine.devices",
    "Needs": "hiveling.core.recipes",
    "RecipeError": "hiveling.core.recipes",
    "find_recipe": "hiveling.core.recipes",
    "Event": "hiveling.core.worker.events",
    "LineReader": "hiveling.core.worker.events",
    "make_event": "hiveling.core.worker.events",
    "Supervisor": "hiveling.core.worker.supervisor",
    "WorkerOptions": "hiveling.core.worker.command",
    "Settings": "hiveling.core.config",
    "load_settings": "hiveling.core.config",
    "save_settings": "hiveling.core.config",
    "load_contribution": "hiveling.core.config",
    "write_json": "hiveling.core.config",
    "configure_logging": "hiveling.core.logs",
    "config": "hiveling.core.config",
    "paths": "hiveling.core.paths",
    "format_energy": "hiveling.core.energy.meter",
    "energy_cost": "hiveling.core.energy.meter",
    "parse_power_limit": "hiveling.core.energy.governor",
}

__all__ = [
    "Device",
    "DeviceError",
    "Event",
    "HivemindStrategy",
    "Invite",
    "InviteError",
    "LineReader",
    "Needs",
    "RecipeError",
    "Settings",
    "Supervisor",
    "WorkerOptions",
    "choose_device",
    "config",
    "configure_logging",
    "detect_devices",
    "energy_cost",
    "find_recipe",
    "fit_batch_size",
    "format_energy",
    "load_contribution",
    "load_settings",
    "looks_like_invite",
    "make_event",
    "parse_invite",
    "parse_power_limit",
    "paths",
    "qr",
    "save_settings",
    "write_json",
]

if TYPE_CHECKING:
    from hiveling.core import config, paths
    from hiveling.core.config import Settings, load_contribution, load_settings, save_settings, write_json
    from hiveling.core.energy.governor import parse_power_limit
    from hiveling.core.energy.meter import energy_cost, format_energy
    from hiveling.core.invites import qr
    from hiveling.core.invites.invite import Invite, InviteError, looks_like_invite, parse_invite
    from hiveling.core.logs import configure_logging
    from hiveling.core.machine.devices import (
        Device,
        DeviceError,
        choose_device,
        detect_devices,
        fit_batch_size,
    )
    from hiveling.core.recipes import Needs, RecipeError, find_recipe
    from hiveling.core.swarm.strategy import HivemindStrategy
    from hiveling.core.worker.command import WorkerOptions
    from hiveling.core.worker.events import Event, LineReader, make_event
    from hiveling.core.worker.supervisor import Supervisor


def __getattr__(name: str) -> Any:
    where = _PUBLIC.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where)
    return module if where.rsplit(".", 1)[1] == name else getattr(module, name)
