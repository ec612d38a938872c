"""Logging set-up for entry points (the CLI, the tray): never done at import."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys

from hiveling.core import paths


def configure_logging(verbose: bool = False) -> None:
    """Rotating log file under the platform's log folder; only warnings on stderr (called by entry points)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    with contextlib.suppress(OSError):
        handler = logging.handlers.RotatingFileHandler(
            paths.log_dir() / "hiveling.log", maxBytes=2_000_000, backupCount=5, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.addFilter(lambda record: record.name != "hiveling.worker")
    root.addHandler(console)
