from __future__ import annotations

import warnings

import pytest
import torch

from hiveling.core.swarm.schedules import CollaborativeScheduler, check_scheduler, rebind_scheduler


def make_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.5)


def test_plateau_and_foreign_schedulers_are_refused() -> None:
    optimizer = make_optimizer()
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        check_scheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer))
    with pytest.raises(ValueError, match="LRScheduler"):
        check_scheduler(object())


def test_rebinding_keeps_the_schedule_on_a_recreated_optimizer() -> None:
    old = make_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(old, step_size=1, gamma=0.5)
    old.step()
    scheduler.step()
    assert old.param_groups[0]["lr"] == 0.25
    # hivemind re-creates the optimizer from copies of the groups, current lr included.
    new = torch.optim.SGD(
        [dict(group, params=[torch.nn.Parameter(torch.zeros(3))]) for group in old.param_groups]
    )
    rebind_scheduler(scheduler, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new.step()
        scheduler.step()
    assert new.param_groups[0]["lr"] == 0.125
    assert scheduler.last_epoch == 2


def test_lightning_facing_proxy_ignores_step_but_forwards_state() -> None:
    optimizer = make_optimizer()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    proxy = CollaborativeScheduler(scheduler)
    proxy.step()
    assert scheduler.last_epoch == 0
    assert proxy.optimizer is optimizer
    assert proxy.get_last_lr() == [0.5]
    assert proxy.last_epoch == 0
    optimizer.step()
    scheduler.step()
    state = proxy.state_dict()
    fresh = CollaborativeScheduler(torch.optim.lr_scheduler.LambdaLR(make_optimizer(), lambda step: 1.0))
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 1
