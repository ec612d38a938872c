"""Kept for ``python -m hiveling.core.cli`` (autostart entries written by earlier versions use it).
The command lives in :mod:`hiveling.core.commands.cli`."""

import sys

from hiveling.core.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
