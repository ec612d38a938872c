"""Tens of thousands of worker events through the real update path: a background thread (as the
supervisor's reader) -> WorkerBridge's queued signal -> AppState -> tray tooltip, icon and menu, and a
visible Status window. PySide6-Essentials 6.12.0 aborted ("none_dealloc") after a few thousand Qt calls
that return None; a tray app gets that many updates within hours."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hiveling.app.application import TrayApp
from hiveling.app.state import HISTORY_POINTS
from hiveling.app.worker_process import read_stream
from hiveling.core.config import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"
EVENTS = 40_000
STATE_EVERY = 500  # a pause/resume pair this often, so the icon and the menu change too


class ThreadedStream:
    """Stands in for the Supervisor: calls ``on_event`` from its own thread, as its reader threads do."""

    def __init__(self, events: list[dict[str, Any]], on_event: Any) -> None:
        self.events = events
        self.on_event = on_event
        self.state = "stopped"
        self._thread = threading.Thread(target=self._run, name="stress-stream")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for event in self.events:
            self.on_event(event)

    def pause(self, when: Any = "now") -> None:
        pass

    def resume(self) -> None:
        pass

    def stop(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def log_tail(self, lines: int = 50) -> list[str]:
        return []


def stream() -> list[dict[str, Any]]:
    recorded = read_stream((FIXTURES / "training.jsonl").read_bytes())
    head = [e for e in recorded if e["type"] != "progress"][:6]
    progress = [e for e in recorded if e["type"] == "progress"]
    start = time.time() - EVENTS
    events: list[dict[str, Any]] = list(head)
    for i in range(EVENTS):
        if (i % STATE_EVERY == 0 and i) or i == EVENTS - 1:
            paused = (i // STATE_EVERY) % 2 == 1 and i != EVENTS - 1
            events.append({"type": "state", "state": "paused" if paused else "training"})
        events.append({**progress[i % len(progress)], "step": i + 1, "time": start + i})
    return events


def test_tens_of_thousands_of_updates_reach_tray_and_status_window(qtbot: Any) -> None:
    events = stream()
    received = 0

    def count(_event: object) -> None:
        nonlocal received
        received += 1

    app = TrayApp(
        Settings(invite="HIVE1-STRESS"),
        factory=lambda options, on_event: ThreadedStream(events, on_event),
        detect_devices=False,
        on_quit=lambda: None,
    )
    app.bridge.received.connect(count)
    app.token = "HIVE1-STRESS"  # skip invite parsing: this test is about updates
    app.state.join("Glyph classifier", announce=False)
    assert app.tray is not None
    app.tray.show()
    app.open_status()
    looks: set[str] = set()
    app.bridge.received.connect(lambda _e: looks.add(app.state.look))
    started = time.monotonic()
    app.apply_policy()
    try:
        qtbot.waitUntil(lambda: received == len(events), timeout=120_000)
        elapsed = time.monotonic() - started
    finally:
        app.quit()
        assert app.status is not None
        app.status.close()
    assert app.state.progress.step == EVENTS
    assert looks >= {"training", "paused"}
    assert app.tray.status_action.text() == app.state.status_line
    assert app.tray.icon.toolTip() == app.state.tooltip
    assert app.state.tooltip.startswith("Training: ")
    assert app.state.tooltip.endswith(f"step {EVENTS:,}\nRun: Glyph classifier")
    assert len(app.state.history.local_sps) == HISTORY_POINTS
    assert app.status.step.text() == f"{EVENTS:,}"
    print(f"{len(events)} events in {elapsed:.1f} s ({len(events) / elapsed:,.0f}/s)")
