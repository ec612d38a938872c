from __future__ import annotations

import pytest

from hiveling.core.optimizer import is_reference_group

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

    from hiveling.core.averagers import fingerprint, same_fingerprint

    params = [torch.linspace(-1, 1, 1000), torch.ones(10)]
    base = fingerprint(params)
    rounded = fingerprint([p + 1e-9 * torch.randn_like(p) for p in params])
    astray = fingerprint([params[0] + 1e-3, params[1]])
    assert same_fingerprint(base, rounded)
    assert not same_fingerprint(base, astray)
    assert same_fingerprint(base, None), "a peer that sends no fingerprint is not judged"
