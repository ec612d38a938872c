"""Energy with real workers: reported in events and on the headless line, summed by the host, governed.

This machine has no powercap, hwmon or GPU, so the workers estimate from CPU time (and say so); the
measured sources are tested from sysfs trees in tests/core/test_energy.py and on a GPU by bench/gpu.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hiveling.core.worker.command import WorkerOptions
from hiveling.core.worker.supervisor import RestartPolicy, Supervisor
from tests.conftest import wait_until
from tests.integration.test_volunteer import LOOPBACK, Recorder, progress, state
from tests.support.cli import Cli, start_local_host

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    started = start_local_host(tmp_path / "host")
    yield started
    started[0].stop()


@pytest.fixture
def volunteer(tmp_path: Path) -> Iterator[Callable[..., tuple[Supervisor, Recorder]]]:
    made: list[Supervisor] = []

    def make(invite: str, **options: Any) -> tuple[Supervisor, Recorder]:
        recorder = Recorder()
        worker = WorkerOptions(
            invite=invite,
            device="cpu",
            batch_size=32,
            cpu_threads=1,
            listen=LOOPBACK,
            progress_interval=0.5,
            env={"HIVELING_HOME": str(tmp_path / f"volunteer{len(made)}")},
            **options,
        )
        supervisor = Supervisor(worker, recorder, policy=RestartPolicy(first_delay=0.2, max_delay=1.0))
        made.append(supervisor)
        supervisor.start()
        return supervisor, recorder

    yield make
    for supervisor in made:
        supervisor.stop()


def test_energy_is_reported_shown_headless_and_summed_by_the_host(
    host: tuple[Cli, str], tmp_path: Path
) -> None:
    cli, invite = host
    volunteer = Cli(
        ["--headless", "--invite", invite, "--batch-size", "32", "--cpu-threads", "1",
         "--listen", LOOPBACK[0], "--progress-interval", "0.5",
         "--price-per-kwh", "0.30", "--currency", "EUR"],
        tmp_path / "volunteer",
    )  # fmt: skip
    try:
        assert wait_until(
            lambda: any("Wh this session (estimated), " in line for line in volunteer.lines), 180
        ), volunteer.tail()
        line = next(line for line in volunteer.lines if "Wh this session (estimated), " in line)
        assert "EUR" in line, "the cost at the volunteer's price"
        # Each peer publishes its total every 15 s: the host's sum lags that much behind.
        summed = cli.wait_for(
            lambda e: progress(e) and e.get("swarm_energy_peers") == 2 and e["swarm_energy_wh"] > 0,
            timeout=90,
        )
        assert summed["energy_total_wh"] >= summed["energy_wh"] >= 0
        assert summed["energy_estimated"] is True
        hello = cli.wait_for(lambda e: e.get("type") == "hello", timeout=5)
        assert "estimated from the CPU time" in hello["energy_source"]
        assert wait_until(
            lambda: any(e.get("energy_wh", 0) > 0 for e in cli.events if progress(e)), timeout=60
        ), "training used some energy"
        volunteer.send_signal(signal.SIGINT)
        assert volunteer.wait() == 0, volunteer.tail()
        final = [line for line in volunteer.lines if line.startswith("Energy: ")]
        assert final, volunteer.tail()
        assert "this session" in final[0]
        assert "for this run (estimated)" in final[0]
        assert "EUR in all" in final[0]
    finally:
        volunteer.stop()


def test_the_governor_slows_to_a_power_limit_and_pauses_after_a_step_at_the_daily_budget(
    host: tuple[Cli, str], volunteer: Any
) -> None:
    _, invite = host
    # Both at once: the limited one takes about a minute to settle, the budget runs out in seconds.
    _, events = volunteer(invite, power_limit="1W")
    _, budget = volunteer(invite, daily_energy_wh=0.001)
    slowed = events.wait_for(lambda e: progress(e) and (e.get("duty") or 1.0) <= 0.5, timeout=180)
    assert slowed["governor"].startswith("keeping under 1 W: training"), slowed
    assert slowed["power_w"] is not None

    pausing = budget.wait_for(state("pausing"), timeout=180)
    assert "today's energy budget (0.001 Wh) is used" in pausing["reason"]
    paused = budget.wait_for(state("paused"), timeout=90)
    assert paused.get("source") != "supervisor", "the worker paused by itself, after a step"
    assert "today's energy budget" in paused["reason"]
    assert paused["unused_samples"] == 0, "no computed contribution was lost"
