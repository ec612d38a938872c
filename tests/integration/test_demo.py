"""`hiveling demo`, the README's main job: a host and two volunteers train and agree."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]


def test_the_demo_trains_and_ends_with_peers_that_agree() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hiveling.core.commands.cli",
            "demo",
        ],  # as `make demo` runs it: 90 s of training
        capture_output=True,
        text=True,
        timeout=330,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    # The demo exits 0 only when no peer failed, the loss fell and all three peers' parameters agree.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    summary = result.stdout.rsplit("\n\n", 1)[-1]
    assert "Parameters of all 3 peers agree" in summary
    assert summary.count("contributed") == 2
