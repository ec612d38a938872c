"""The network lab of bench/netlab.py: shaped links that hold their rate, cuts, and a teardown that
leaves nothing behind, also on an exception, Ctrl-C, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import netlab

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(netlab.unavailable() is not None, reason=f"network lab: {netlab.unavailable()}"),
]

ROOT = Path(__file__).resolve().parents[2]

# Counts what arrives on a port until the sender closes: {"bytes": ..., "seconds": ...}.
RECEIVER = textwrap.dedent(
    """
    import json, socket, sys, time
    server = socket.create_server((sys.argv[1], 5001))
    print("ready", flush=True)
    conn, _ = server.accept()
    total, began = 0, None
    while chunk := conn.recv(1 << 16):
        began = began or time.monotonic()
        total += len(chunk)
    print(json.dumps({"bytes": total, "seconds": time.monotonic() - began}), flush=True)
    """
)
SENDER = textwrap.dedent(
    """
    import socket, sys, time
    conn = socket.create_connection((sys.argv[1], 5001), timeout=float(sys.argv[3]))
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        conn.sendall(b"x" * 16384)
    conn.close()
    """
)


def machine_links() -> list[str]:
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in listed.splitlines())


def megabits_per_second(lab: netlab.Lab, sender: netlab.Node, receiver: netlab.Node) -> float:
    listening = receiver.start([sys.executable, "-c", RECEIVER, receiver.address])
    assert listening.stdout is not None
    assert listening.stdout.readline().strip() == b"ready"
    sent = sender.run([sys.executable, "-c", SENDER, receiver.address, "2.0", "10"], timeout=30)
    assert sent.returncode == 0, sent.stderr
    measured = json.loads(listening.stdout.readline())
    listening.wait(timeout=10)
    return float(measured["bytes"]) * 8 / 1e6 / float(measured["seconds"])


def test_links_hold_their_rates_in_each_direction_and_a_cut_link_is_silent() -> None:
    before = machine_links()
    with netlab.Lab() as lab:
        home = lab.add_node("home", up_mbit=5, down_mbit=20)
        server = lab.add_node("server")
        assert before == machine_links(), "nothing appears in the machine's own namespace"
        upload = megabits_per_second(lab, home, server)
        download = megabits_per_second(lab, server, home)
        # A token bucket never lets more through than its rate; a Python sender reaches most of it.
        assert 0.6 * 5 < upload < 1.15 * 5, upload
        assert 0.6 * 20 < download < 1.15 * 20, download
        assert "not simulated" in str(lab.describe()["delay_and_loss"]) or lab.has_netem

        lab.cut(home)
        blocked = home.run([sys.executable, "-c", SENDER, server.address, "0.1", "1"], timeout=30)
        assert blocked.returncode != 0
        assert "timed out" in blocked.stderr, blocked.stderr  # silence, not a refusal
        lab.restore(home)
        assert megabits_per_second(lab, home, server) > 0.6 * 5
    assert netlab.lab_namespaces(os.getpid()) == []
    assert before == machine_links()


def test_an_exception_inside_the_lab_kills_its_processes_and_removes_it() -> None:
    started: list[subprocess.Popen[bytes]] = []

    def fail_inside_a_lab() -> None:
        with netlab.Lab() as lab:
            started.append(lab.add_node("a", up_mbit=10, down_mbit=10).start(["sleep", "600"]))
            assert netlab.lab_namespaces(os.getpid())
            raise ValueError("a failure inside the lab")

    with pytest.raises(ValueError, match="inside"):
        fail_inside_a_lab()
    assert started[0].poll() is not None
    assert netlab.lab_namespaces(os.getpid()) == []


LAB_IN_A_CHILD = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (xdist's workers ignore it)
    sys.path.insert(0, sys.argv[1])
    from bench import netlab
    try:
        with netlab.Lab() as lab:
            node = lab.add_node("a", up_mbit=10, down_mbit=10)
            sleeper = node.start(["sleep", "600"])
            print(sleeper.pid, flush=True)
            time.sleep(600)  # holds the lab open until the test stops this process
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after the lab's teardown
        sys.exit(130)
    """
)


@pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "term", "kill"]
)
def test_a_stopped_lab_leaves_no_namespace_and_no_process(stop: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LAB_IN_A_CHILD, str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        sleeper = int(child.stdout.readline())
        assert netlab.lab_namespaces(child.pid)
        child.send_signal(stop)
        child.wait(timeout=30)
        if stop == signal.SIGKILL:
            # Nothing ran its teardown: the next lab removes what the dead one left.
            assert netlab.lab_namespaces(child.pid)
            assert child.pid in {netlab._owner(n) for n in netlab.remove_stale()}
        else:
            assert "Traceback" not in (child.stderr.read() if child.stderr else "")
        assert netlab.lab_namespaces(child.pid) == []
        assert (
            not Path(f"/proc/{sleeper}").exists()
            or "Z" in Path(f"/proc/{sleeper}/stat").read_text().split()[2]
        )
    finally:
        child.kill()
        child.wait(timeout=10)
