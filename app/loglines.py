"""The Logs window's line for each worker event: time, kind and what happened."""

from __future__ import annotations

from datetime import datetime

from hiveling.core import Event


def log_line(event: Event) -> str | None:
    moment = event.get("time")
    stamp = "--:--:--"
    if isinstance(moment, int | float):
        stamp = datetime.fromtimestamp(moment).strftime("%H:%M:%S")
    kind = event.get("type")
    if kind == "log":
        return f"{stamp} {str(event.get('level', 'info')).upper():7} {event.get('message')}"
    if kind == "error":
        return f"{stamp} ERROR   {event.get('message')} ({event.get('code')})"
    if kind == "state":
        reason = event.get("reason")
        return f"{stamp} STATE   {event.get('state')}" + (f": {reason}" if reason else "")
    if kind == "hello":
        return f"{stamp} HELLO   run {event.get('run_name')} ({event.get('run_id')})"
    if kind == "bye":
        return f"{stamp} BYE     exit {event.get('exit_code')} ({event.get('reason')})"
    return None
