"""The supervisor's pure parts: the worker's command line and the restart backoff."""

from __future__ import annotations

import json
import sys

import pytest

from hiveling.core.run import RunSpec
from hiveling.core.worker.command import WorkerOptions, worker_command
from hiveling.core.worker.supervisor import RestartPolicy


def test_a_volunteer_worker_command_carries_every_option() -> None:
    options = WorkerOptions(
        invite="HIVE1-XYZ",
        device="cuda:1",
        batch_size=16,
        memory_cap_gb=4.0,
        cpu_threads=2,
        listen=("/ip4/127.0.0.1/tcp/0",),
        announce=("/ip4/203.0.113.5/tcp/31330",),
        max_step=9,
        progress_interval=0.5,
    )
    assert worker_command(options, executable=["py", "-m", "hiveling.core.worker"]) == [
        "py", "-m", "hiveling.core.worker", "--invite", "HIVE1-XYZ", "--role", "volunteer",
        "--device", "cuda:1", "--batch-size", "16", "--memory-cap-gb", "4.0", "--cpu-threads", "2",
        "--max-step", "9", "--listen", "/ip4/127.0.0.1/tcp/0", "--announce", "/ip4/203.0.113.5/tcp/31330",
        "--progress-interval", "0.5",
    ]  # fmt: skip


def test_the_host_worker_gets_its_run_as_json() -> None:
    spec = RunSpec("id", "name", "glyphs", "2.0", 256, {"lr": 0.01})
    cmd = worker_command(WorkerOptions(run_spec=spec, role="host", checkpoint_every=5))
    assert cmd[:3] == [sys.executable, "-m", "hiveling.core.worker"]
    assert RunSpec.from_dict(json.loads(cmd[cmd.index("--run-spec") + 1])) == spec
    assert cmd[cmd.index("--checkpoint-every") + 1] == "5"


def test_a_worker_needs_something_to_train() -> None:
    with pytest.raises(ValueError, match="invite or a run_spec"):
        worker_command(WorkerOptions())


def test_restarts_back_off_exponentially_up_to_a_cap() -> None:
    policy = RestartPolicy(first_delay=1.0, factor=2.0, max_delay=10.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
