"""The volunteer journey without a GUI: a real host, real headless volunteers, a real supervised worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hiveling.core.worker.command import WorkerOptions
from hiveling.core.worker.supervisor import RestartPolicy, Supervisor
from tests.conftest import wait_until
from tests.support.cli import Cli, start_local_host

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
# Collaborative steps between the re-issued invite and the run's end. The host trains alone at about
# two steps a second until the volunteer has started, which took over 60 s under two busy processes
# beside the parallel suite (the host was 130 steps on): 160 leaves it about 80 s.
END_AHEAD = 160
Event = dict[str, Any]


class Recorder:
    """Collects a supervisor's events; waits on them with a timeout."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 90, after: int = 0) -> Event:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                match = next((e for e in self.events[after:] if predicate(e)), None)
                if match is not None:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out; last events: {self.events[-8:]}")
                self.changed.wait(remaining)

    def mark(self) -> int:
        with self.changed:
            return len(self.events)


def progress(e: Event) -> bool:
    return e.get("type") == "progress"


def state(name: str) -> Callable[[Event], bool]:
    return lambda e: e.get("type") == "state" and e.get("state") == name


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    started = start_local_host(tmp_path / "host")
    yield started
    started[0].stop()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., tuple[Supervisor, Recorder]]]:
    made: list[Supervisor] = []

    def make(invite: str, name: str = "volunteer", **options: Any) -> tuple[Supervisor, Recorder]:
        recorder = Recorder()
        worker = WorkerOptions(
            invite=invite,
            device="cpu",
            batch_size=32,
            cpu_threads=1,
            listen=LOOPBACK,
            progress_interval=0.5,
            env={"HIVELING_HOME": str(tmp_path / name)},
            **options,
        )
        supervisor = Supervisor(worker, recorder, policy=RestartPolicy(first_delay=0.2, max_delay=1.0))
        made.append(supervisor)
        supervisor.start()
        return supervisor, recorder

    yield make
    for supervisor in made:
        supervisor.stop()


def test_a_host_and_two_headless_volunteers_train_together(host: tuple[Cli, str], tmp_path: Path) -> None:
    _, invite = host
    volunteers = [
        Cli(
            [
                "--headless",
                "--invite",
                invite,
                "--json",
                "--device",
                "cpu",
                "--batch-size",
                "32",
                "--cpu-threads",
                "1",
                "--listen",
                LOOPBACK[0],
                "--progress-interval",
                "0.5",
            ],
            tmp_path / f"v{i}",
        )
        for i in range(2)
    ]
    try:
        hellos = [v.wait_for(lambda e: e.get("type") == "hello", timeout=120) for v in volunteers]
        assert hellos[0]["peer_id"] != hellos[1]["peer_id"]
        assert all(h["device"]["kind"] == "cpu" and h["role"] == "volunteer" for h in hellos)
        assert all(h["versions"]["hivemind"] == "1.1.12" and h["versions"]["torch"] for h in hellos)
        together = [v.wait_for(lambda e: progress(e) and e["peers"] == 3, timeout=120) for v in volunteers]
        later = [
            v.wait_for(lambda e, s=t["step"]: progress(e) and e["step"] >= s + 2, timeout=120)
            for v, t in zip(volunteers, together, strict=True)
        ]
        for event in later:
            assert event["target_batch_size"] == 256
            assert event["local_sps"] > 0
            assert event["session_samples"] > 0
            assert event["loss"] is not None
            assert event["samples_accumulated"] >= 0
        swarm = volunteers[0].wait_for(
            lambda e: progress(e) and e["collab_sps"] > 0 and e["eta_seconds"] is not None, timeout=60
        )
        assert swarm["eta_seconds"] >= 0
        # Ctrl-C in a terminal, SIGTERM from a service manager: both end the volunteer cleanly.
        for volunteer, sig in zip(volunteers, (signal.SIGINT, signal.SIGTERM), strict=True):
            volunteer.send_signal(sig)
            assert volunteer.wait() == 0, volunteer.tail()
            assert any(e.get("type") == "bye" for e in volunteer.events)
            assert any(state("stopped")(e) for e in volunteer.events)
    finally:
        for volunteer in volunteers:
            volunteer.stop()


def test_pause_now_frees_the_worker_quickly_and_resume_catches_up(
    host: tuple[Cli, str], supervised: Any
) -> None:
    _, invite = host
    supervisor, events = supervised(invite)
    events.wait_for(lambda e: progress(e) and e["peers"] == 2, timeout=120)
    mark = events.mark()
    asked = time.monotonic()
    supervisor.pause("now")
    paused = events.wait_for(state("paused"), timeout=10, after=mark)
    assert time.monotonic() - asked <= 2.5, "paused (device memory released) within about 2 seconds"
    assert paused.get("device_memory_bytes", 0) == 0 or paused.get("source") == "supervisor"
    step_at_pause = max((e["step"] for e in events.events if progress(e)), default=0)
    supervisor.resume()
    events.wait_for(lambda e: progress(e) and e["step"] > step_at_pause, timeout=120, after=mark)
    # A volunteer clicking Pause then Start at once must not end up with two workers.
    supervisor.pause("now")
    supervisor.resume()
    events.wait_for(progress, timeout=120, after=events.mark())
    assert len(worker_processes()) == 1


def worker_processes() -> list[int]:
    """Workers this test process started (their own children share their command line)."""
    from tests.conftest import _cmdline

    children = [
        int(pid)
        for task in Path(f"/proc/{os.getpid()}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    return [pid for pid in children if "hiveling.core.worker" in _cmdline(pid)]


def test_pause_after_this_step_keeps_the_work_done(host: tuple[Cli, str], supervised: Any) -> None:
    _, invite = host
    supervisor, events = supervised(invite)
    first = events.wait_for(lambda e: progress(e) and e["peers"] == 2, timeout=120)
    mark = events.mark()
    supervisor.pause("step")
    pausing = events.wait_for(state("pausing"), timeout=30, after=mark)
    paused = events.wait_for(state("paused"), timeout=60, after=mark)
    assert paused.get("source") != "supervisor", "the worker paused by itself, at a step boundary"
    assert paused["step"] > pausing["step"] >= first["step"], "it trained on until the next step"
    assert paused["unused_samples"] == 0, "everything this machine trained went into a step"
    supervisor.resume()
    events.wait_for(state("training"), timeout=120, after=events.mark())


def test_a_killed_worker_is_restarted_and_catches_up(host: tuple[Cli, str], supervised: Any) -> None:
    _, invite = host
    supervisor, events = supervised(invite)
    hello = events.wait_for(lambda e: e.get("type") == "hello", timeout=120)
    before = events.wait_for(lambda e: progress(e) and e["peers"] == 2 and e["step"] >= 2, timeout=120)
    mark = events.mark()
    pid = supervisor.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    events.wait_for(state("restarting"), timeout=30, after=mark)
    again = events.wait_for(lambda e: e.get("type") == "hello", timeout=120, after=mark)
    assert again["peer_id"] == hello["peer_id"], "the same identity after a restart"
    resumed = events.wait_for(progress, timeout=120, after=events.events.index(again))
    assert resumed["step"] >= before["step"], "caught up from the peers, not from scratch"


def test_a_worker_that_keeps_crashing_is_given_up_with_its_log(tmp_path: Path) -> None:
    from hiveling.core.run import RunSpec

    events = Recorder()
    spec = RunSpec("crash", "crash", "glyphs", "2.0", 64)
    options = WorkerOptions(
        run_spec=spec,
        role="host",
        device="cpu",
        listen=LOOPBACK,
        strategy_options={"no_such_option": 1},  # HivemindStrategy raises TypeError: a crash every time
        env={"HIVELING_HOME": str(tmp_path / "crash")},
    )
    supervisor = Supervisor(options, events, policy=RestartPolicy(first_delay=0.05, crash_loop_count=3))
    supervisor.start()
    try:
        failure = events.wait_for(lambda e: e.get("code") == "crash_loop", timeout=120)
        assert "no_such_option" in "\n".join(failure["log_tail"])
        events.wait_for(state("failed"), timeout=10)
        assert len([e for e in events.events if state("restarting")(e)]) == 2
    finally:
        supervisor.stop()


def test_a_restarted_host_resumes_from_its_checkpoint_not_from_scratch(tmp_path: Path) -> None:
    host, _ = start_local_host(tmp_path / "host")
    try:
        reached = host.wait_for(lambda e: progress(e) and e["step"] >= 7, timeout=120)
    finally:
        assert host.stop() == 0
    saved = [e for e in host.events if e.get("type") == "log" and "checkpoint" in str(e.get("message"))]
    assert saved, "the host saved checkpoints while training"
    again, _ = start_local_host(tmp_path / "host")
    try:
        run_ids = [h.wait_for(lambda e: e.get("type") == "invite")["run_id"] for h in (host, again)]
        assert run_ids[0] == run_ids[1], "the same organizer key and run name: the same run"
        hello = again.wait_for(lambda e: e.get("type") == "hello", timeout=120)
        assert hello["step"] >= reached["step"], "training continues where it stopped"
    finally:
        again.stop()


def test_when_every_volunteer_left_a_newcomer_continues_from_the_last_step(
    host: tuple[Cli, str], supervised: Any
) -> None:
    _, invite = host
    first, first_events = supervised(invite, name="first")
    last = first_events.wait_for(lambda e: progress(e) and e["peers"] == 2 and e["step"] >= 3, timeout=120)
    first.stop()
    _, later_events = supervised(invite, name="later")
    first_progress = later_events.wait_for(progress, timeout=120)
    assert first_progress["step"] >= last["step"]
    joined = later_events.wait_for(lambda e: progress(e) and e["peers"] == 2, timeout=120)
    assert joined["step"] >= last["step"]


def test_an_announced_address_gets_the_hosts_peer_id_and_a_bad_qr_path_only_warns(tmp_path: Path) -> None:
    host = Cli(
        ["host", "--recipe", "glyphs", "--local", "--announce", "/ip4/127.0.0.1/tcp/9", "--qr-png",
         str(tmp_path / "missing" / "dir" / "x.png"), "--batch-size", "32", "--target-batch-size", "64"],
        tmp_path / "host",
    )  # fmt: skip
    try:
        assert wait_until(lambda: any("Volunteers join with" in line for line in host.lines), timeout=120), (
            host.tail()
        )
        invite_line = next(line for line in host.lines if line.startswith("HIVE1-"))
        from hiveling.core.invites.invite import parse_invite

        peers = parse_invite(invite_line).peers
        assert len(peers) == 1
        assert peers[0].startswith("/ip4/127.0.0.1/tcp/9/p2p/Qm")
        assert any("could not write the QR code" in line for line in host.lines)
    finally:
        assert host.stop() == 0


def test_the_host_prints_its_invite_as_text_terminal_qr_and_png(tmp_path: Path) -> None:
    from hiveling.core.invites import qr
    from hiveling.core.invites.invite import parse_invite

    png = tmp_path / "invite.png"
    host = Cli(
        ["host", "--recipe", "glyphs", "--local", "--qr-png", str(png), "--batch-size", "32",
         "--target-batch-size", "64"],
        tmp_path / "host",
    )  # fmt: skip
    try:
        assert wait_until(lambda: any("Volunteers join with" in line for line in host.lines), timeout=120), (
            host.tail()
        )
        lines = list(host.lines)
        token = next(line for line in lines if line.startswith("HIVE1-"))
        invite = parse_invite(token)
        link = next(line for line in lines if line.startswith("Link: ")).removeprefix("Link: ")
        assert link == invite.link
        drawn = lines[lines.index(token) + 1 : lines.index(f"Link: {link}")]
        assert drawn == qr.terminal_text(invite.link).splitlines() + [""]
        assert qr.read_qr(png) == [token], "the PNG holds the invite for a phone or the tray to scan"

        # A second host on the same port, from another folder, is refused: volunteers could join it.
        port = invite.peers[0].split("/tcp/")[1].split("/")[0]
        second = hiveling("host", "--recipe", "glyphs", "--local", "--port", port, home=tmp_path / "other")
        assert second.returncode == 2, second
        assert second.stderr.count("\n") == 1, second.stderr
        assert f"a Hiveling host is already running on port {port} (process " in second.stderr
        # From the same folder on another port, it is the same run: refused by the run's identity lock.
        again = hiveling("host", "--recipe", "glyphs", "--local", "--json", home=tmp_path / "host")
        assert again.returncode != 0, again
        refusal = next(json.loads(line) for line in again.stdout.splitlines() if '"error"' in line)
        assert "A host for " in refusal["message"]
        assert "is already running on this machine" in refusal["message"]
    finally:
        assert host.stop() == 0


def hiveling(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hiveling.core.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HIVELING_HOME": str(home)},
    )


def test_out_of_memory_halves_the_batch_instead_of_crashing(tmp_path: Path) -> None:
    from hiveling.core.run import RunSpec

    plugin = Path(__file__).parent.parent / "fixtures" / "oom_recipe"
    events = Recorder()
    options = WorkerOptions(
        run_spec=RunSpec("oom", "oom", "oomtest", "1.0", 64),
        role="host",
        device="cpu",
        batch_size=64,
        listen=LOOPBACK,
        progress_interval=0.5,
        env={"HIVELING_HOME": str(tmp_path / "oom"), "PYTHONPATH": str(plugin)},
    )
    supervisor = Supervisor(options, events)
    supervisor.start()
    try:
        trained = events.wait_for(lambda e: progress(e) and e["session_samples"] > 0, timeout=120)
        assert trained["batch_size"] == 16
        warnings = [
            e["message"] for e in events.events if e.get("type") == "log" and e.get("level") == "warning"
        ]
        assert any("batch size 64; retrying with 32" in w for w in warnings), warnings
        assert any("batch size 32; retrying with 16" in w for w in warnings), warnings
        assert not any(state("restarting")(e) for e in events.events), "no crash, no restart"
    finally:
        supervisor.stop()


def test_a_run_with_a_last_step_finishes_for_its_volunteers(host: tuple[Cli, str], tmp_path: Path) -> None:
    from datetime import timedelta

    from hiveling.core.invites.invite import OrganizerKey, make_invite, parse_invite

    cli, token = host
    invite = parse_invite(token)
    now = cli.wait_for(lambda e: progress(e) and e["step"] >= 1, timeout=120)["step"]
    # The organizer re-issues the run's invite with an end ahead (same key, same run): far enough that
    # the host, training alone at about two steps a second, is not there before the volunteer joins.
    key = OrganizerKey.load(cli.home / "config" / "organizer.key")
    bounded = make_invite(
        key,
        run_name=invite.run_name,
        recipe=invite.recipe,
        recipe_version=invite.recipe_version,
        hparams=dict(invite.hparams),
        target_batch_size=invite.target_batch_size,
        peers=invite.peers,
        expires=timedelta(days=1),
        last_step=now + END_AHEAD,
        join_secret=invite.join_secret,
    )
    assert bounded.run_id == invite.run_id
    volunteer = Cli(
        ["--headless", "--invite", bounded.token, "--json", "--device", "cpu", "--batch-size", "32",
         "--cpu-threads", "1", "--listen", LOOPBACK[0], "--progress-interval", "0.5"],
        tmp_path / "volunteer",
    )  # fmt: skip
    try:
        finished = volunteer.wait_for(
            lambda e: state("stopped")(e) and e.get("outcome") == "finished", timeout=240
        )
        assert finished["reason"] == "reached the last step"
        assert finished["step"] >= now + END_AHEAD
        assert volunteer.wait(timeout=60) == 0, volunteer.tail()  # it ended by itself, successfully
        steps = [e["step"] for e in volunteer.events if progress(e)]
        assert min(steps) < now + END_AHEAD, "it trained up to the end, not joined after it"
    finally:
        volunteer.stop()
    home = tmp_path / "volunteer"
    again = Cli(["--headless", "--invite", bounded.token, "--json", "--device", "cpu"], home)
    try:
        assert again.wait(timeout=120) == 0, again.tail()
        assert any(state("stopped")(e) and e.get("again") for e in again.events), again.tail()
        assert not any(state("connecting")(e) for e in again.events), "a finished run is not joined again"
    finally:
        again.stop()


def test_a_host_with_a_last_step_ends_the_run_there(tmp_path: Path) -> None:
    host, token = start_local_host(tmp_path / "host", "--last-step", "2")
    try:
        from hiveling.core.invites.invite import parse_invite

        assert parse_invite(token).last_step == 2
        host.wait_for(lambda e: state("stopped")(e) and e.get("outcome") == "finished", timeout=180)
        assert host.wait(timeout=60) == 0, host.tail()
    finally:
        host.stop()


def kill_tree(pid: int) -> None:
    """kill -9 of a process and all its descendants at once, as when a machine loses power."""
    from tests.conftest import descendants

    for victim in {pid, *descendants(pid)}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def test_a_volunteer_killed_without_a_word_is_not_counted_or_waited_for(
    host: tuple[Cli, str], tmp_path: Path
) -> None:
    cli, invite = host
    volunteers = [
        Cli(["--headless", "--invite", invite, "--json", "--batch-size", "32", "--cpu-threads", "1",
             "--listen", LOOPBACK[0], "--progress-interval", "0.5"], tmp_path / name)
        for name in ("first", "second")
    ]  # fmt: skip
    try:
        everyone = cli.wait_for(lambda e: progress(e) and e["peers"] == 3, timeout=180)
        kill_tree(volunteers[0].proc.pid)
        mark = len(cli.events)
        # Its record stays on the DHT for a minute; the first round without it tells the others.
        fewer = cli.wait_for(lambda e: progress(e) and e["peers"] == 2, timeout=60, after=mark)
        assert fewer["step"] > everyone["step"]
        later = cli.wait_for(lambda e: progress(e) and e["step"] >= fewer["step"] + 3, timeout=60, after=mark)
        assert later["peers"] == 2, "the dead volunteer is not counted again"
    finally:
        for volunteer in volunteers:
            volunteer.stop()


def test_a_lone_volunteer_says_when_the_host_is_gone_and_waits(tmp_path: Path) -> None:
    cli, invite = start_local_host(tmp_path / "host")
    volunteer = Cli(
        ["--headless", "--invite", invite, "--batch-size", "32", "--cpu-threads", "1",
         "--listen", LOOPBACK[0]],
        tmp_path / "volunteer",
    )  # fmt: skip
    try:
        assert wait_until(lambda: any("Joined as peer" in line for line in volunteer.lines), timeout=180), (
            volunteer.tail()
        )
        kill_tree(cli.proc.pid)
        cli.wait()
        assert wait_until(lambda: any("The host is not answering" in line for line in volunteer.lines), 30), (
            volunteer.tail()
        )
        said = next(line for line in volunteer.lines if "The host is not answering" in line)
        assert "waits for the host or other volunteers" in said, said
        assert volunteer.proc.poll() is None, "the volunteer keeps its work and waits"
    finally:
        volunteer.stop()
        cli.stop()
