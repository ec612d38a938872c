"""``hiveling tray``: the tray app's process entry (arguments, one instance per user, signals, crashes)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from PySide6.QtCore import QSocketNotifier
from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon

from hiveling.app.application import ENV_REPLAY, TrayApp
from hiveling.app.instance import SingleInstance
from hiveling.app.worker_process import replay_factory
from hiveling.core import load_settings, paths

logger = logging.getLogger(__name__)

__all__ = ["TrayApp", "main"]


# -- the entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiveling tray", description="Hiveling's tray app.")
    parser.add_argument("--status", action="store_true", help="open the Status window at start")
    parser.add_argument("--verbose", action="store_true", help="also print log messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the tray app until Quit; a second start brings the first one to the front and exits."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["tray"]:
        args = args[1:]
    options = build_parser().parse_args(args)
    from hiveling.core import configure_logging

    configure_logging(options.verbose)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "hiveling"])
    assert isinstance(app, QApplication)
    app.setApplicationName("Hiveling")
    app.setApplicationDisplayName("Hiveling")
    app.setDesktopFileName("hiveling")
    app.setQuitOnLastWindowClosed(False)

    instance = SingleInstance()
    if not instance.claim():
        print("Hiveling is already running; its Status window was brought to the front.")
        return 0
    try:
        replay = os.environ.get(ENV_REPLAY)
        factory = replay_factory(Path(replay)) if replay else None
        use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        if not use_tray:
            logger.info("No system tray on this desktop; showing the Status window instead")
        tray_app = TrayApp(load_settings(), use_tray=use_tray, factory=factory)
        instance.message.connect(tray_app.open_status)
        app.aboutToQuit.connect(tray_app.quit)
        notifier = _quit_on_signals(tray_app.quit)
        sys.excepthook = _excepthook
        tray_app.start()
        if options.status:
            tray_app.open_status()
        code = app.exec()
        tray_app.quit()
        del notifier
        return int(code)
    finally:
        instance.release()


def _quit_on_signals(quit_app: Any) -> QSocketNotifier:
    """SIGTERM/SIGINT quit cleanly (stopping the worker) although Qt's event loop holds the thread."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # the wake-up byte does the work
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read)

    def on_signal() -> None:
        with contextlib.suppress(OSError):
            data = reader.recv(64)
            if any(number in (signal.SIGTERM, signal.SIGINT) for number in data):
                quit_app()

    notifier.activated.connect(on_signal)
    notifier._sockets = (reader, writer)  # type: ignore[attr-defined]  # keep them open with the notifier
    return notifier


def _excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    logger.error("Unexpected error\n%s", "".join(traceback.format_exception(kind, error, trace)))
    with contextlib.suppress(Exception):
        QMessageBox.critical(
            None,
            "Hiveling",
            f"Hiveling hit an unexpected error: {error}\n\nDetails are in the log folder:\n{paths.log_dir()}",
        )
