"""The hivemind names core/swarm/ overrides, calls or reads (core/swarm/README.md lists why): each one
still exists on the installed hivemind, with the parameters the code expects."""

from __future__ import annotations

import inspect

import pytest
from hivemind.averaging.allreduce import AllReduceRunner
from hivemind.averaging.averager import DecentralizedAverager
from hivemind.averaging.control import StepControl
from hivemind.averaging.matchmaking import Matchmaking
from hivemind.averaging.partition import TensorPartContainer
from hivemind.dht.protocol import DHTProtocol
from hivemind.optim.grad_averager import GradientAverager
from hivemind.optim.optimizer import Optimizer
from hivemind.optim.progress_tracker import ProgressTracker
from hivemind.optim.state_averager import TrainingStateAverager

METHODS = [
    (Optimizer, "_update_global_epoch", ["self", "grad_scaler"]),
    (Optimizer, "_begin_averaging_gradients", ["self", "grad_scaler"]),
    (Optimizer, "_average_gradients_and_load_into_optimizer", ["self", "maybe_step_control"]),
    (Optimizer, "_load_averaged_gradients_into_optimizer_", ["self"]),
    (Optimizer, "_check_and_accumulate_gradients", ["self", "batch_size", "grad_scaler"]),
    (Optimizer, "_compute_schema_hash", ["self"]),
    (Optimizer, "_make_state_averager", ["self", "kwargs"]),
    (Optimizer, "_make_progress_tracker", ["self", "target_batch_size", "kwargs"]),
    (Optimizer, "_maybe_schedule_gradient_averaging", ["self"]),
    (Optimizer, "_maybe_schedule_state_averaging", ["self"]),
    (Optimizer, "_should_load_state_from_peers", ["self"]),
    (Optimizer, "load_state_from_peers", ["self", "kwargs"]),
    (Optimizer, "load_state_dict", ["self", "state_dict"]),
    (Optimizer, "state_dict", ["self"]),
    (Optimizer, "step", ["self", "closure", "batch_size", "grad_scaler"]),
    (Optimizer, "shutdown", ["self"]),
    (ProgressTracker, "_parse_swarm_progress_data", ["self", "metadata"]),
    (ProgressTracker, "_progress_reporter", ["self"]),
    (ProgressTracker, "_progress_fetcher", ["self"]),
    (ProgressTracker, "pause_updates", ["self"]),
    (DecentralizedAverager, "load_state_from_peers", ["self", "wait", "timeout"]),
    (DecentralizedAverager, "get_current_state", ["self"]),
    (TrainingStateAverager, "load_state_from_peers", ["self", "kwargs"]),
    (TrainingStateAverager, "get_current_state", ["self"]),
    (TrainingStateAverager, "_update_scheduler", ["self"]),
    (GradientAverager, "schedule_step", ["self", "scheduled_time", "kwargs"]),
    (GradientAverager, "load_accumulators_into_averager_", ["self"]),
    (DecentralizedAverager, "_step", ["self", "step", "future_for_init"]),
    (DecentralizedAverager, "_aggregate_with_group", ["self", "group_info", "min_vector_size", "kwargs"]),
    (DHTProtocol, "call_ping", ["self", "peer", "validate", "strict"]),
    (
        DecentralizedAverager,
        "_run_allreduce_inplace_",
        ["self", "tensors", "group_info", "group_id", "kwargs"],
    ),
    (AllReduceRunner, "_communicate_with_peer", ["self", "peer_id"]),
    (AllReduceRunner, "_accumulate_parts_streaming", ["self", "stream", "sender_index"]),
    (AllReduceRunner, "_ban_sender", ["self", "peer_id"]),
]

# Attributes (set in __init__ or in a method): found in the class's source.
ATTRIBUTES = [
    (AllReduceRunner, "self.parts_for_local_averaging"),
    (AllReduceRunner, "self.tensor_part_reducer"),
    (AllReduceRunner, "self.sender_peer_ids"),
    (DecentralizedAverager, "self._state_updated"),
    (Optimizer, "self._schema_hash"),
    (Optimizer, "self._should_check_synchronization_on_update"),
    (Optimizer, "self.scheduled_grads"),
    (Optimizer, "self.scheduled_state"),
    (ProgressTracker, "self._local_public_key"),
    (DecentralizedAverager, "self._outer_pipe"),
    (DecentralizedAverager, "self._matchmaking"),
    (Matchmaking, "self.target_group_size"),
    (DecentralizedAverager, "self._running_groups"),
    (TensorPartContainer, "self.failed_size"),
    (TensorPartContainer, "self.total_size"),
    (StepControl, "self._allow_retries"),
    (TrainingStateAverager, "self.lock_optimizer"),
]


@pytest.mark.parametrize(("owner", "name", "parameters"), METHODS, ids=lambda v: getattr(v, "__name__", v))
def test_each_hivemind_method_we_touch_exists_with_the_expected_parameters(
    owner: type, name: str, parameters: list[str]
) -> None:
    method = getattr(owner, name, None)
    assert callable(method), f"hivemind's {owner.__name__}.{name} is gone: see core/swarm/README.md"
    assert list(inspect.signature(method).parameters) == parameters


@pytest.mark.parametrize(("owner", "attribute"), ATTRIBUTES, ids=lambda v: getattr(v, "__name__", v))
def test_each_hivemind_attribute_we_touch_is_still_used(owner: type, attribute: str) -> None:
    assert attribute in inspect.getsource(owner), f"{owner.__name__} no longer uses {attribute}"


def test_the_averager_process_runs_methods_sent_on_its_pipe_by_name() -> None:
    # GroupSizeMixin sends ("_apply_target_group_size", args, kwargs) and relies on this dispatch.
    source = inspect.getsource(DecentralizedAverager)
    assert "getattr(self, method)" in source
