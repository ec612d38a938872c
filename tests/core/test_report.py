"""What the headless client prints for the worker's events."""

from __future__ import annotations

from hiveling.core.commands.report import describe_event, describe_progress, format_bytes, format_duration


def test_a_progress_line_says_everything_the_tray_shows() -> None:
    line = describe_progress(
        {
            "step": 1204,
            "peers": 7,
            "collab_sps": 4120.4,
            "local_sps": 412.2,
            "samples_accumulated": 256,
            "target_batch_size": 8192,
            "eta_seconds": 12.4,
            "loss": 2.34567,
            "accuracy": 0.873,
            "total_samples": 123456,
            "total_seconds": 7200,
        }
    )
    assert line == (
        "step 1,204 · 7 peers · 4,120 samples/s (this machine 412/s) · 256/8,192 toward the next step · "
        "next in 12 s · loss 2.346 · held-out accuracy 87% · contributed 123,456 samples in 2.0 h of training"
    )


def test_missing_numbers_are_left_out_not_invented() -> None:
    line = describe_progress({"step": 0, "peers": 1})
    assert "next in" not in line
    assert "loss" not in line
    assert "accuracy" not in line
    assert line.startswith("step 0 · 1 peer · ")


def test_events_a_person_need_not_see_print_nothing() -> None:
    assert describe_event({"type": "log", "level": "info", "message": "checkpoint saved"}) is None
    assert describe_event({"type": "something_new"}) is None
    assert (
        describe_event({"type": "error", "message": "disk full; free space"})
        == "Error: disk full; free space"
    )
    assert (
        describe_event({"type": "state", "state": "paused", "reason": "on battery"}) == "Paused: on battery"
    )


def test_sizes_and_durations_read_naturally() -> None:
    assert [format_duration(s) for s in (None, 5, 600, 7200)] == ["?", "5 s", "10 min", "2.0 h"]
    assert [format_bytes(b) for b in (None, 512, 3 * 2**20, 6 * 2**30)] == [
        "?",
        "512 B",
        "3.0 MiB",
        "6.0 GiB",
    ]
