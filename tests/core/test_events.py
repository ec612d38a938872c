"""The worker's event protocol: encoding, tolerant decoding, partial lines, commands."""

from __future__ import annotations

import json
import math

import pytest

from hiveling.core.worker.events import (
    PROTOCOL_VERSION,
    LineReader,
    decode,
    decode_command,
    encode,
    make_command,
    make_event,
)


def test_an_event_is_one_json_line_with_version_and_type() -> None:
    line = encode(make_event("progress", step=3, loss=0.5))
    assert line.endswith("\n")
    assert line.count("\n") == 1
    event = json.loads(line)
    assert event["v"] == PROTOCOL_VERSION
    assert event["type"] == "progress"
    assert event["step"] == 3


def test_non_finite_numbers_become_null_instead_of_breaking_the_stream() -> None:
    event = json.loads(
        encode(make_event("progress", eta_seconds=math.inf, loss=math.nan, nested={"x": [math.inf]}))
    )
    assert event["eta_seconds"] is None
    assert event["loss"] is None
    assert event["nested"] == {"x": [None]}


@pytest.mark.parametrize("line", ["", "garbage", "[1, 2]", '{"no_type": 1}', '{"type": 3}', b"\xff\xfe"])
def test_anything_but_an_event_is_ignored(line: str | bytes) -> None:
    assert decode(line) is None


def test_unknown_types_and_fields_are_passed_on_for_readers_to_ignore() -> None:
    assert decode('{"type": "from_the_future", "v": 9, "extra": true}') == {
        "type": "from_the_future",
        "v": 9,
        "extra": True,
    }


def test_a_line_split_across_reads_is_decoded_once_whole() -> None:
    reader = LineReader()
    line = encode(make_event("state", state="training")).encode()
    assert reader.feed(line[:10]) == []
    assert reader.feed(line[10:] + b"not json\n" + line[:5]) == [json.loads(line)]
    assert reader.feed(line[5:]) == [json.loads(line)]


def test_commands_round_trip_and_unknown_ones_are_refused() -> None:
    assert decode_command(make_command("pause", when="step")) == {"cmd": "pause", "when": "step"}
    assert decode_command('{"cmd": "format_disk"}') is None
    assert decode_command("pause") is None
    with pytest.raises(ValueError, match="unknown worker command"):
        make_command("format_disk")
