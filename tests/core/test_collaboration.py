from __future__ import annotations

import pytest

from hiveling.core.swarm.collaboration import StepRate


def test_step_rate_measures_samples_per_second_from_collaborative_steps() -> None:
    rate = StepRate(alpha=1.0)
    assert rate.update(step=3, samples_per_step=256, now=10.0) == 0.0
    assert rate.update(step=3, samples_per_step=256, now=10.5) == 0.0
    assert rate.update(step=5, samples_per_step=256, now=11.0) == pytest.approx(512.0)


def test_step_rate_smooths_and_restarts_after_the_step_goes_back() -> None:
    rate = StepRate(alpha=0.5)
    rate.update(0, 100, now=0.0)
    assert rate.update(1, 100, now=1.0) == pytest.approx(100.0)
    assert rate.update(2, 100, now=1.5) == pytest.approx(150.0)
    rate.update(0, 100, now=2.0)  # loaded an older checkpoint: restart the clock, keep the estimate
    assert rate.update(1, 100, now=4.0) == pytest.approx(100.0)
