"""Whether a port is free, and who holds it: real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hiveling.core.machine.ports import port_holder, port_in_use


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as hivemind's daemon does
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_a_port_something_listens_on_is_in_use_and_its_process_is_named(listening: int) -> None:
    assert port_in_use("127.0.0.1", listening)
    holder = port_holder(listening)
    assert holder is not None
    assert holder.pid == os.getpid()
    # This test process's command line (pytest's, or an xdist worker's), as ps shows it.
    own = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    assert holder.command == own[:300]
    assert holder.hiveling_host is None
    assert holder.parents[0][0] == os.getppid()


def test_a_free_port_is_free_and_held_by_nobody() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    assert not port_in_use("127.0.0.1", port)
    assert port_holder(port) is None
