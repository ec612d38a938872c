from __future__ import annotations

import pytest

from hiveling.core.swarm.optimizer import is_reference_group, keeps_its_state

A, B, C, D = b"a", b"b", b"c", b"d"


@pytest.mark.parametrize(
    ("group", "expected", "keeps"),
    [
        ({A, B}, {A, B}, True),  # everyone averaged together
        ({A, B, C}, {A, B}, True),  # a peer the tracker had not seen yet joined
        ({A, B}, {A, B, C}, True),  # majority of a 2+1 split keeps its state
        ({C}, {A, B, C}, False),  # ...and the peer left out downloads it
        ({A}, {A, B}, True),  # halves: the side with the smallest id keeps its state
        ({B}, {A, B}, False),
        ({C, D}, {A, B, C, D}, False),
        ({B}, {A, B, C, D}, False),
    ],
)
def test_exactly_one_side_of_a_split_round_keeps_its_state(
    group: set[bytes], expected: set[bytes], keeps: bool
) -> None:
    assert is_reference_group(group, expected) is keeps


def test_fingerprints_ignore_rounding_but_catch_real_differences() -> None:
    import torch

    from hiveling.core.swarm.averagers import fingerprint, same_fingerprint

    params = [torch.linspace(-1, 1, 1000), torch.ones(10)]
    base = fingerprint(params)
    rounded = fingerprint([p + 1e-9 * torch.randn_like(p) for p in params])
    astray = fingerprint([params[0] + 1e-3, params[1]])
    assert same_fingerprint(base, rounded)
    assert not same_fingerprint(base, astray)
    assert same_fingerprint(base, None), "a peer that sends no fingerprint is not judged"


SAME, OTHER = (10.0, 20.0), (11.0, 20.0)


@pytest.mark.parametrize(
    ("gathered", "keeps", "why"),
    [
        ({A: (*SAME, 7), B: (*SAME, 7)}, {A: True, B: True}, ""),
        # A stalled peer (say, one that just joined) averaged with one that moved on: it downloads,
        # whatever its id, and the newer peer keeps its state.
        ({A: (*OTHER, 3), B: (*SAME, 7)}, {A: False, B: True}, "behind"),
        # Same step, different parameters: halves, the side with the smallest id keeps its state.
        ({A: (*OTHER, 7), B: (*SAME, 7)}, {A: True, B: False}, "differ"),
        # The majority at the newest step wins; the peer behind downloads anyway.
        ({A: (*OTHER, 7), B: (*SAME, 7), C: (*SAME, 7), D: (*SAME, 6)}, {A: False, B: True, D: False}, ""),
        # Peers that send no step (another client version) are judged by fingerprint alone.
        ({A: OTHER, B: SAME, C: SAME}, {A: False, B: True}, "differ"),
    ],
)
def test_after_a_round_the_peers_behind_or_in_the_minority_download_the_state(
    gathered: dict[bytes, tuple[float, ...]], keeps: dict[bytes, bool], why: str
) -> None:
    for peer, expected in keeps.items():
        kept, reason = keeps_its_state(peer, gathered, set(gathered))
        assert kept is expected, peer
        if not kept and why:
            assert why in reason


def test_shutdown_survives_a_scheduled_round_cancelled_behind_its_back() -> None:
    """hivemind's shutdown cancels a round still looking for a group; if another thread cancelled it
    first (a delayed step whose peers all left), hivemind's cancel raised and the peer's exit failed."""
    import hivemind
    import torch

    from hiveling.core.swarm.optimizer import CollaborativeOptimizer

    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    try:
        optimizer = CollaborativeOptimizer(
            dht=dht,
            run_id="shutdown-test",
            params=torch.nn.Linear(4, 2).parameters(),
            optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
            target_batch_size=8,
            batch_size_per_step=4,
            matchmaking_time=3.0,
            averaging_timeout=10.0,
        )
        control = optimizer.grad_averager.schedule_step(timeout=10.0)
        # The other thread's cancel as the averager process sees it: requested, not yet reflected here.
        control._cancel.set_result(None)
        assert not control.done()
        optimizer.scheduled_grads = control
        optimizer.shutdown()
        assert optimizer.scheduled_grads is None
    finally:
        dht.shutdown()
