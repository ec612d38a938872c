"""Idle time from GNOME's compositor (Mutter) over D-Bus: works under Wayland, where X11 cannot tell."""

from __future__ import annotations

import logging

from hiveling.app.platform.idle import IdleSource

logger = logging.getLogger(__name__)

SERVICE = "org.gnome.Mutter.IdleMonitor"
OBJECT = "/org/gnome/Mutter/IdleMonitor/Core"
METHOD = "GetIdletime"  # milliseconds since the last input, as a uint64


class MutterIdle(IdleSource):
    def __init__(self, bus_address: str | None = None, timeout_ms: int = 500) -> None:
        self._bus_address = bus_address  # None: the session bus
        self._timeout_ms = timeout_ms

    def idle_seconds(self) -> float | None:
        from PySide6.QtDBus import QDBus, QDBusConnection, QDBusMessage

        name = f"hiveling-idle-{id(self)}"
        if self._bus_address is None:
            connection = QDBusConnection.sessionBus()
        else:
            connection = QDBusConnection.connectToBus(self._bus_address, name)
        try:
            if not connection.isConnected():
                return None
            call = QDBusMessage.createMethodCall(SERVICE, OBJECT, SERVICE, METHOD)
            reply = connection.call(call, QDBus.CallMode.Block, self._timeout_ms)
        finally:
            if self._bus_address is not None:
                QDBusConnection.disconnectFromBus(name)
        if reply.type() != QDBusMessage.MessageType.ReplyMessage:
            return None  # not GNOME, or no session bus: an error reply comes at once
        values = reply.arguments()
        if not values or not isinstance(values[0], int) or isinstance(values[0], bool):
            logger.info("Idle time unknown: Mutter answered %r", values)
            return None
        return values[0] / 1000.0
