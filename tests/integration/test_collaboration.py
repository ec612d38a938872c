"""Real peers, each its own process on 127.0.0.1, training together through HivemindStrategy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.trial import PeerConfig

from .conftest import Peer, max_difference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

StartPeer = Callable[..., Peer]
SETTLE_STEPS = 6
LINGER = 5


def test_peers_end_at_the_same_step_with_identical_parameters_and_a_late_peer_catches_up(
    start_peer: StartPeer, run_id: str
) -> None:
    steps = 60
    config = PeerConfig(run_id=run_id, steps=steps, linger_steps=LINGER)
    first = start_peer(config)
    address = first.address()
    second = start_peer(PeerConfig(**{**config.__dict__, "data_seed": 2}), env={"INITIAL_PEERS": address})
    # Started now, the third peer joins while the first is several steps in (it takes seconds to start);
    # started after the second's first step, it could find the other two finished.
    late = start_peer(PeerConfig(**{**config.__dict__, "data_seed": 3, "initial_peers": address}))
    second.wait_for(lambda e: e["type"] == "step")
    peers = [first, second, late]
    codes = [peer.finish() for peer in peers]
    assert codes == [0, 0, 0], [peer.process.tail() for peer in peers]

    history = [peer.steps() for peer in peers]
    # Reaching, not stepping through: a peer that re-synchronized just then downloaded that step.
    assert all(max(h) >= steps for h in history), "every peer reaches the final collaborative step"
    late_first = min(history[2])
    assert late_first > 5, "the late peer started from the collaboration's step, not from scratch"
    assert max(e["peers"] for e in history[2].values()) == 3

    def agree(step: int) -> bool:
        if not all(step in h for h in history):
            return False  # a peer skipped it while downloading the state
        return all(max_difference(history[0][step]["params"], h[step]["params"]) <= 1e-6 for h in history[1:])

    # Three peers on a two-core machine: a joining peer's first round can close before the others see
    # it, and a loaded round can go wrong; the side that differs then downloads the majority's state.
    assert any(agree(step) for step in range(late_first + 1, late_first + 1 + 2 * SETTLE_STEPS))
    assert any(agree(step) for step in range(steps, steps + LINGER)), (
        "the peers end with identical parameters"
    )
    # Collaboration trained the model: the loss went down.
    assert history[0][max(history[0])]["loss"] < history[0][1]["loss"]


def test_joining_through_a_list_and_the_schedule_steps_once_per_collaborative_step(
    start_peer: StartPeer, run_id: str
) -> None:
    # delay_optimizer_step makes hivemind re-create the optimizer: the schedule must follow it.
    options = {"delay_optimizer_step": True, "offload_optimizer": True}
    config = PeerConfig(run_id=run_id, steps=25, scheduler=True, strategy=options)
    first = start_peer(PeerConfig(**{**config.__dict__, "wait_for_peers": 2}))
    second = start_peer(PeerConfig(**{**config.__dict__, "data_seed": 2, "initial_peers": [first.address()]}))
    assert [first.finish(), second.finish()] == [0, 0]
    for peer in (first, second):
        history = peer.steps()
        assert 25 in history
        for step, event in history.items():
            # Read right after the optimizer step of `step`: the scheduler has advanced once per earlier step.
            assert event["scheduler_steps"] == step
            assert event["lr"] == pytest.approx(3e-3 / step)
    assert max(e["peers"] for e in second.steps().values()) == 2


@pytest.mark.parametrize("overlap", [True, False])
def test_averaging_overlaps_the_next_batches_and_peers_still_take_identical_steps(
    start_peer: StartPeer, run_id: str, overlap: bool
) -> None:
    options = {"overlap_averaging": overlap}
    config = PeerConfig(run_id=run_id, steps=30, linger_steps=LINGER, scheduler=True, strategy=options)
    first = start_peer(PeerConfig(**{**config.__dict__, "wait_for_peers": 2}))
    second = start_peer(PeerConfig(**{**config.__dict__, "data_seed": 2, "initial_peers": first.address()}))
    assert [first.finish(), second.finish()] == [0, 0]
    a, b = first.steps(), second.steps()
    together = sorted(step for step in set(a) & set(b) if a[step]["peers"] == b[step]["peers"] == 2)
    assert len(together) >= 10, "the peers stepped together"
    # On a loaded machine a round can go wrong; the side that differs then downloads the other's state.
    agreeing = [s for s in together[SETTLE_STEPS:] if max_difference(a[s]["params"], b[s]["params"]) <= 1e-6]
    assert agreeing, "the peers take identical steps once settled"
    assert any(
        s in a and s in b and max_difference(a[s]["params"], b[s]["params"]) <= 1e-6
        for s in range(30, 30 + LINGER)
    ), "the peers end with identical parameters"
    for history in (a, b):
        for step, event in history.items():
            assert event["scheduler_steps"] == step, "one scheduler step per collaborative step"
            assert event["lr"] == pytest.approx(3e-3 / step)
    landed_later = [max(e["overlapped"] for e in h.values()) for h in (a, b)]
    if overlap:
        # Updates land between two batches of the next step, not in the step that began them.
        assert min(landed_later) >= len(together) // 2, landed_later
    else:
        assert landed_later == [0, 0]


@pytest.mark.parametrize("compression", ["fp16", "8bit"])
def test_two_peers_train_with_gradient_compression(
    start_peer: StartPeer, run_id: str, compression: str
) -> None:
    # Each trains 40 steps from when it saw the other: a second peer slow to start (a busy machine) would
    # otherwise join as the first one ends.
    config = PeerConfig(run_id=run_id, steps=40, grad_compression=compression, end_with_peers=2)
    first = start_peer(PeerConfig(**{**config.__dict__, "wait_for_peers": 2}))
    second = start_peer(PeerConfig(**{**config.__dict__, "data_seed": 2, "initial_peers": first.address()}))
    assert [first.finish(), second.finish()] == [0, 0]
    a, b = first.steps(), second.steps()
    together = [step for step in sorted(set(a) & set(b)) if a[step]["peers"] == 2]
    assert len(together) >= 5, "the peers averaged compressed gradients together"
    # Compressed averages differ slightly per peer; they must stay close, not drift apart.
    # The last step both took together (under load a peer may end on a step the other did not report).
    assert max_difference(a[together[-1]]["params"], b[together[-1]]["params"]) < 1e-2
    assert a[max(a)]["loss"] < a[min(a)]["loss"]


def test_the_collaborative_step_survives_a_restart_from_a_checkpoint(
    start_peer: StartPeer, run_id: str, tmp_path: object
) -> None:
    checkpoints = f"{tmp_path}/checkpoints"
    first = start_peer(PeerConfig(run_id=run_id, steps=8, checkpoint_dir=checkpoints, sleep=0.0))
    assert first.finish() == 0
    last = max(first.steps())
    resumed = start_peer(
        PeerConfig(run_id=run_id, steps=last + 3, resume_from=f"{checkpoints}/last.ckpt", sleep=0.0)
    )
    assert resumed.finish() == 0
    assert min(resumed.steps()) == last + 1, "training resumed at the next collaborative step"


def test_a_failing_peer_exits_with_its_error_and_leaves_nothing_running(
    start_peer: StartPeer, run_id: str
) -> None:
    peer = start_peer(PeerConfig(run_id=run_id, steps=10, fail_at_step=2, sleep=0.0))
    assert peer.finish() != 0
    assert "failing on purpose" in peer.process.tail()
    # The autouse no_leaks fixture checks that no p2pd daemon or averager outlived the peer.


@pytest.mark.parametrize(
    ("precision", "options"),
    [("bf16-mixed", {}), ("16-mixed", {}), ("16-mixed", {"reuse_grad_buffers": True})],
)
def test_mixed_precision_trains(
    start_peer: StartPeer, run_id: str, precision: str, options: dict[str, bool]
) -> None:
    peer = start_peer(PeerConfig(run_id=run_id, steps=4, precision=precision, strategy=options, sleep=0.0))
    assert peer.finish() == 0, peer.process.tail()
    history = peer.steps()
    assert 4 in history
    assert all(abs(v) < 1e3 for v in history[4]["params"])


def test_a_peer_whose_parameters_went_astray_is_brought_back_in_line(
    start_peer: StartPeer, run_id: str
) -> None:
    steps, perturb = 40, 25
    config = PeerConfig(run_id=run_id, steps=steps, linger_steps=LINGER)
    # The first waits for the second: started late on a busy machine, it could miss the perturbation.
    first = start_peer(PeerConfig(**{**config.__dict__, "perturb_at_step": perturb, "wait_for_peers": 2}))
    second = start_peer(PeerConfig(**{**config.__dict__, "data_seed": 2, "initial_peers": first.address()}))
    assert [first.finish(), second.finish()] == [0, 0]
    a, b = first.steps(), second.steps()
    assert min(b) < perturb, "the second peer had joined before the perturbation"
    # Shifted by 0.01 and then given the same averaged gradients, the first peer's parameters would
    # stay apart from the second's for good: agreeing again proves that one side was re-synchronized.
    # (Whether a step's snapshot still shows the shift depends on how fast that happens.)
    perturbed = first.wait_for(lambda e: e["type"] == "perturbed", timeout=0)["step"]
    # (Its step event may be missing: a peer that reached that step by a download took no optimizer step.)
    assert perturbed + SETTLE_STEPS <= steps, f"perturbed at step {perturbed}, too late to see it heal"

    def agree(step: int) -> bool:
        return step in a and step in b and max_difference(a[step]["params"], b[step]["params"]) <= 1e-6

    healed = range(perturbed + 1, perturbed + SETTLE_STEPS + 1)
    assert any(agree(step) for step in healed), "healed in time"
    # On a loaded two-core machine a round can still time out for one side; it must heal within a few
    # steps as well, and the run must end identical.
    streak = longest = 0
    for step in range(perturbed + SETTLE_STEPS, steps + 1):
        streak = 0 if agree(step) else streak + 1
        longest = max(longest, streak)
    assert longest <= 3, f"parameters differed for {longest} steps in a row"
    assert any(agree(step) for step in range(steps, steps + LINGER)), "the peers end identical"


def test_a_peer_whose_loss_turns_nan_poisons_nobody_and_stops_saying_why(
    start_peer: StartPeer, run_id: str
) -> None:
    import math

    steps = 30
    config = PeerConfig(run_id=run_id, steps=steps, linger_steps=LINGER)
    # The healthy peer waits for the sick one, so that its steps overlap the sick one's NaN batches.
    healthy = start_peer(PeerConfig(**{**config.__dict__, "wait_for_peers": 2}))
    address = healthy.address()
    sick = start_peer(
        PeerConfig(**{**config.__dict__, "data_seed": 2, "nan_after_batches": 40}),
        env={"INITIAL_PEERS": address},
    )
    assert healthy.finish() == 0, healthy.process.tail()
    assert sick.finish() != 0
    assert "non-finite gradients (NaN or inf) for 20 batches in a row" in sick.process.tail()
    history = healthy.steps()
    assert max(history) >= steps
    assert all(math.isfinite(x) for event in history.values() for x in event["params"])
    assert all(math.isfinite(x) for event in sick.steps().values() for x in event["params"])
