"""Where the worker runs: here, or inside WSL2 on Windows (command lines and paths, tested on Linux)."""

from __future__ import annotations

import sys

import pytest

from hiveling.core.worker.command import WorkerOptions, worker_command
from hiveling.core.worker.launcher import (
    LocalLauncher,
    WslDistribution,
    WslError,
    WslLauncher,
    choose_distribution,
    parse_distributions,
    to_wsl_path,
)

OPTIONS = WorkerOptions(
    invite="HIVE1-XYZ",
    device="cuda:0",
    listen=("/ip4/0.0.0.0/tcp/0",),
    env={"HIVELING_HOME": r"C:\Users\Ann Lee\AppData\Local\Hiveling", "HIVELING_LOG": "debug"},
)


def test_a_local_worker_is_our_own_python_in_its_own_process_group() -> None:
    launcher = LocalLauncher()
    assert launcher.command(OPTIONS) == worker_command(OPTIONS)
    assert launcher.command(OPTIONS)[:3] == [sys.executable, "-m", "hiveling.core.worker"]
    env = launcher.environment(OPTIONS, {"PATH": "/usr/bin"})
    assert env["PATH"] == "/usr/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HIVELING_LOG"] == "debug"
    assert launcher.popen_options() == {"start_new_session": True}


def test_a_wsl_worker_runs_the_distributions_python_with_its_variables_translated() -> None:
    command = WslLauncher("Ubuntu-22.04").command(OPTIONS)
    assert command[:7] == ["wsl.exe", "--distribution", "Ubuntu-22.04", "--cd", "~", "--exec", "env"]
    assignments = command[7:10]
    assert assignments == [
        "HIVELING_HOME=/mnt/c/Users/Ann Lee/AppData/Local/Hiveling",  # one argument: no shell splits it
        "HIVELING_LOG=debug",
        "PYTHONUNBUFFERED=1",
    ]
    worker = command[10:]
    assert worker[:3] == ["python3", "-m", "hiveling.core.worker"]
    # Every argument of the local worker's command line, in order: the protocol does not change.
    assert worker[3:] == worker_command(OPTIONS)[3:]
    assert (
        WslLauncher("Debian", python="/opt/hiveling/bin/python").command(OPTIONS)[10]
        == "/opt/hiveling/bin/python"
    )


@pytest.mark.parametrize(
    ("windows", "linux"),
    [
        (r"C:\Users\ann\AppData", "/mnt/c/Users/ann/AppData"),
        ("D:/data/runs", "/mnt/d/data/runs"),
        (r"c:\\", "/mnt/c"),
        (r"\\wsl$\Ubuntu\home\ann\.hiveling", "/home/ann/.hiveling"),
        (r"\\wsl.localhost\Ubuntu-22.04\home\ann", "/home/ann"),
        (r"\\wsl$\Ubuntu", "/"),
        ("/home/ann", "/home/ann"),
        ("relative/path", "relative/path"),
    ],
)
def test_windows_paths_become_the_distributions_paths(windows: str, linux: str) -> None:
    assert to_wsl_path(windows) == linux


def test_the_distribution_list_is_read_from_wsls_utf16_output() -> None:
    text = (
        "  NAME              STATE           VERSION\r\n"
        "* Ubuntu-22.04      Running         2\r\n"
        "  docker-desktop    Stopped         2\r\n"
        "  Legacy Debian     Stopped         1\r\n"
    )
    for raw in (text.encode("utf-16"), text.encode("utf-16-le"), text.encode()):
        assert parse_distributions(raw) == [
            WslDistribution("Ubuntu-22.04", "Running", 2, default=True),
            WslDistribution("docker-desktop", "Stopped", 2, default=False),
            WslDistribution("Legacy Debian", "Stopped", 1, default=False),
        ]
    assert parse_distributions(b"") == []


def test_the_worker_goes_to_the_default_wsl2_distribution_or_the_one_asked_for() -> None:
    ubuntu = WslDistribution("Ubuntu", "Running", 2, default=False)
    legacy = WslDistribution("Legacy", "Stopped", 1, default=True)
    debian = WslDistribution("Debian", "Stopped", 2, default=False)
    assert choose_distribution([legacy, ubuntu, debian]) == ubuntu  # the default runs WSL 1
    assert choose_distribution([ubuntu, WslDistribution("Debian", "Stopped", 2, True)]).name == "Debian"
    assert choose_distribution([ubuntu, debian], "debian") == debian
    with pytest.raises(WslError, match="wsl --install -d Ubuntu"):
        choose_distribution([])
    with pytest.raises(WslError, match="wsl --set-version Legacy 2"):
        choose_distribution([legacy])
    with pytest.raises(WslError, match="no distribution 'Fedora'.*Ubuntu, Debian"):
        choose_distribution([ubuntu, debian], "Fedora")
