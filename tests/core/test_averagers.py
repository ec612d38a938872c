"""Our state averager against real hivemind peers on 127.0.0.1: serving a state to a joining peer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.timed, pytest.mark.timeout(120)]


def live_tensors(optimizer: Any) -> list[Any]:
    """Parameters, then each one's optimizer state in a fixed order."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = [optimizer.state[p][key] for p in params for key in sorted(optimizer.state[p])]
    return params + state


@pytest.fixture
def two_peers() -> Iterator[tuple[Any, Any]]:
    import hivemind
    import torch

    from hiveling.core.swarm.averagers import SizedStateAverager

    first = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    second = hivemind.DHT(
        start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=first.get_visible_maddrs()
    )
    averagers = []
    try:
        for dht, seed in ((first, 0), (second, 1)):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.Linear(512, 8))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            model(torch.randn(4, 64)).sum().backward()
            optimizer.step()  # optimizer state exists, as on a peer that has trained
            averagers.append(
                SizedStateAverager(dht=dht, optimizer=optimizer, prefix="averager_test", start=True)
            )
        yield averagers[0], averagers[1]
    finally:
        for averager in averagers:
            averager.shutdown()
        second.shutdown()
        first.shutdown()


def test_serving_the_state_copies_it_and_leaves_the_live_tensors_where_they_are(
    two_peers: tuple[Any, Any],
) -> None:
    import torch

    server, joiner = two_peers
    server.local_epoch = server.applied_epoch = 7
    live = live_tensors(server.optimizer)
    addresses = [t.data_ptr() for t in live]
    expected = [t.detach().clone() for t in live]

    joiner.load_state_from_peers(timeout=30)

    assert joiner.served_epoch == 7
    assert joiner.local_epoch == 7
    # Pickling a CPU tensor for the averager's pipe moves it into shared memory in place; done to the
    # live tensors from hivemind's background thread, that frees them under the training thread.
    assert [t.data_ptr() for t in live] == addresses
    assert not any(t.is_shared() for t in live)
    received = live_tensors(joiner.optimizer)
    assert len(received) == len(expected)
    for got, want in zip(received, expected, strict=True):
        assert torch.equal(got, want)


def make_broken_reducer(name: str) -> type:
    """A hivemind averager that fails every part it is asked to reduce for others (a stream that breaks).

    hivemind names its calls after the averager's class: both sides of a round need the same name.
    """
    from hivemind.averaging import DecentralizedAverager

    async def rpc_aggregate_part(self: Any, stream: Any, context: Any) -> Any:
        raise RuntimeError("this reducer's stream breaks")
        yield  # an async generator, as hivemind's

    return type(name, (DecentralizedAverager,), {"rpc_aggregate_part": rpc_aggregate_part})


def whole_rounds_averager() -> type:
    from hivemind.averaging import DecentralizedAverager

    from hiveling.core.swarm.averagers import WholeRounds

    return type("DecentralizedAverager", (WholeRounds, DecentralizedAverager), {})


@pytest.mark.parametrize("whole", [False, True], ids=["hivemind", "whole-rounds"])
def test_a_round_that_lost_part_of_the_average_fails_instead_of_passing(whole: bool) -> None:
    import hivemind
    import torch
    from hivemind.averaging import DecentralizedAverager

    first = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    second = hivemind.DHT(
        start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=first.get_visible_maddrs()
    )
    tested_kind = whole_rounds_averager() if whole else DecentralizedAverager
    # Several of hivemind's 512 KB parts, so that each peer reduces some of them for the other.
    ones, zeros = torch.ones(1_000_000), torch.zeros(1_000_000)
    options = dict(
        prefix="partial", target_group_size=2, min_matchmaking_time=2.0, request_timeout=1.0, start=True
    )
    tested = tested_kind([ones], first, **options)
    broken = make_broken_reducer("DecentralizedAverager")([zeros], second, **options)
    try:
        controls = [
            averager.step(wait=False, timeout=30, allow_retries=False) for averager in (tested, broken)
        ]
        if whole:
            with pytest.raises(Exception, match="did not arrive"):
                controls[0].result(timeout=60)
        else:
            controls[0].result(timeout=60)  # hivemind calls it a success...
            with tested.get_tensors() as (averaged,):
                # ...though the parts the other peer reduces kept this peer's own values: not the average.
                assert int((averaged == 1.0).sum()) > 0
                assert not torch.allclose(averaged, torch.full_like(averaged, 0.5))
    finally:
        for averager in (tested, broken):
            averager.shutdown()
        second.shutdown()
        first.shutdown()
