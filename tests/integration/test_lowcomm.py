"""The low-communication mode with real peers: local steps, exchanges of parameter changes in the
background, and global parameters that every peer holds identically after each outer step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.trial import PeerConfig

from .conftest import Peer, max_difference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

StartPeer = Callable[..., Peer]
# hivemind asks for a matchmaking time above its 3 s request timeout; groups close early once full.
LOCAL = {"local_steps": 20, "matchmaking_time": 5.0}


def local_config(run_id: str, steps: int, **changes: Any) -> PeerConfig:
    return PeerConfig(**{"run_id": run_id, "steps": steps, "strategy": dict(LOCAL), "sleep": 0.02, **changes})


def assert_agree_at_every_common_step(histories: list[dict[int, dict[str, Any]]]) -> set[int]:
    """Every outer step that these peers all took in one and the same round: identical outer parameters.

    Peers that start at once, or a busy machine's failed round, can give two rounds the same step
    number (or a peer steps alone); whoever is behind or in the minority downloads the others' state
    at the next round. So parameters are compared where every peer's round held all of them.
    """
    common = {
        step
        for step in set.intersection(*(set(h) for h in histories))
        if all({other[step]["me"] for other in histories} <= set(h[step]["round"]) for h in histories)
    }
    for step in sorted(common):
        differences = [max_difference(histories[0][step]["params"], h[step]["params"]) for h in histories[1:]]
        assert max(differences) <= 1e-6, f"outer parameters differ by {max(differences):.1e} at step {step}"
    return common


def rounds(histories: list[dict[int, dict[str, Any]]]) -> list[list[tuple[int, int, int, bool]]]:
    """Each peer's outer steps as (step, group size, failed rounds, whether the group held every peer)."""
    everyone = {h[step]["me"] for h in histories for step in h}
    return [
        [(step, e["group"], e["failed_rounds"], everyone <= set(e["round"])) for step, e in sorted(h.items())]
        for h in histories
    ]


def test_outer_parameters_are_identical_after_every_outer_step(start_peer: StartPeer, run_id: str) -> None:
    steps = 12
    # The second peer trains at once, so that the first sees it (a peer that has not trained is not
    # announced); each trains `steps` steps from the moment it saw the other.
    first = start_peer(local_config(run_id, steps, wait_for_peers=2, end_with_peers=2))
    second = start_peer(
        local_config(run_id, steps, data_seed=2, initial_peers=first.address(), end_with_peers=2)
    )
    assert [first.finish(), second.finish()] == [0, 0], [first.process.tail(), second.process.tail()]
    histories = [first.steps(), second.steps()]
    common = assert_agree_at_every_common_step(histories)
    assert len(common) >= 3, f"the peers exchanged together at steps {sorted(common)}: {rounds(histories)}"
    # A round can fail on a busy machine: the peer then takes the others' parameters, and agrees again.
    assert all(h[max(h)]["failed_rounds"] <= 2 for h in histories)
    losses = [e["loss"] for _, e in sorted(histories[0].items()) if e["loss"] == e["loss"]]  # not NaN
    assert losses[-1] < losses[0], "the collaboration learned"


def test_a_newcomer_downloads_the_outer_state_mid_run_and_agrees_from_then_on(
    start_peer: StartPeer, run_id: str
) -> None:
    steps = 16
    first = start_peer(local_config(run_id, steps, wait_for_peers=2, end_with_peers=3))
    address = first.address()
    second = start_peer(local_config(run_id, steps, data_seed=2, initial_peers=address, end_with_peers=3))
    first.wait_for(lambda e: e["type"] == "step" and e["step"] >= 4)
    newcomer = start_peer(local_config(run_id, steps, data_seed=3, initial_peers=address, end_with_peers=3))
    joined = newcomer.wait_for(lambda e: e["type"] == "joined")
    peers = [first, second, newcomer]
    assert [peer.finish() for peer in peers] == [0, 0, 0], [peer.process.tail() for peer in peers]
    histories = [peer.steps() for peer in peers]
    assert min(histories[2]) >= 4, "the newcomer started from the collaboration's outer state"
    assert joined["step"] >= 4 or min(histories[2]) > joined["step"]
    later = set()
    for other in histories[:2]:
        pair = assert_agree_at_every_common_step([histories[2], other])
        later |= {step for step in pair if step > min(histories[2])}
    assert later, f"the newcomer took part in no later exchange: {rounds(histories)}"
    assert max(e["peers"] for e in histories[2].values()) == 3


def test_a_peer_that_leaves_between_exchanges_is_not_waited_for(start_peer: StartPeer, run_id: str) -> None:
    first = start_peer(local_config(run_id, 16, wait_for_peers=2, end_with_peers=2))
    leaver = start_peer(
        local_config(run_id, 3, linger_steps=0, data_seed=2, initial_peers=first.address(), end_with_peers=2)
    )
    assert leaver.finish() == 0, leaver.process.tail()
    left_at = max(leaver.steps())
    assert first.finish() == 0, first.process.tail()
    history = first.steps()
    assert_agree_at_every_common_step([history, leaver.steps()])
    assert any(e["group"] == 2 for e in history.values()), "the two exchanged together before it left"
    after = [e for step, e in history.items() if step > left_at + 1]
    assert len(after) >= 8, "the remaining peer went on stepping (alone)"
    assert all(e["group"] == 1 for e in after[1:])
    # Until it has seen nobody for `alone_after`, the remaining peer's rounds look for the leaver.
    assert history[max(history)]["failed_rounds"] <= 3


def test_the_outer_state_survives_a_restart_from_a_checkpoint(
    start_peer: StartPeer, run_id: str, tmp_path: object
) -> None:
    checkpoints = f"{tmp_path}/checkpoints"
    first = start_peer(local_config(run_id, 4, linger_steps=0, checkpoint_dir=checkpoints, sleep=0.0))
    assert first.finish() == 0, first.process.tail()
    history = first.steps()
    last = max(history)
    resumed = start_peer(
        local_config(run_id, last + 2, resume_from=f"{checkpoints}/last.ckpt", sleep=0.0, linger_steps=0)
    )
    joined = resumed.wait_for(lambda e: e["type"] == "joined")
    assert resumed.finish() == 0, resumed.process.tail()
    assert joined["step"] == last, "the resumed peer is at the outer step it saved"
    assert max_difference(joined["outer"]["params"], history[last]["params"]) == 0.0
    assert joined["outer"]["momentum_norm"] == pytest.approx(history[last]["momentum_norm"])
    assert joined["outer"]["momentum_norm"] > 0
    assert min(resumed.steps()) == last + 1
