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
