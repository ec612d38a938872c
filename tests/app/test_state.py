"""AppState: recorded worker streams, read by the protocol's reader, give the right look and words."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hiveling.app.state import (
    HISTORY_POINTS,
    LOOKS,
    NOTICE_REPEAT_SECONDS,
    AppState,
    MenuState,
    format_duration,
    format_rate,
    format_time_trained,
)
from hiveling.app.worker_process import read_stream
from hiveling.core.worker.events import make_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"


def replay(name: str, state: AppState | None = None, chunk_size: int = 61) -> AppState:
    state = state or AppState()
    for event in read_stream((FIXTURES / name).read_bytes(), chunk_size):
        state.apply(event)
    return state


def joined() -> AppState:
    state = AppState()
    state.join("Glyph classifier", "75gguw7nvukmie47")
    return state


def event(type_: str, when: float = 1000.0, **fields: object) -> dict[str, object]:
    return {**make_event(type_, **fields), "time": when}


def test_before_joining_the_tray_says_how_to_start_and_offers_no_training_actions() -> None:
    state = AppState()
    assert state.look == "not_joined"
    assert state.status_line == "Not joined: choose “Join a run…” to start helping"
    assert state.tooltip == state.status_line
    assert state.menu == MenuState()


def test_a_recorded_training_stream_shows_rate_peers_and_step() -> None:
    events = read_stream((FIXTURES / "training.jsonl").read_bytes(), 61)
    # The fixture hides junk between the events: a line that is not JSON and a JSON list.
    assert len(events) == len((FIXTURES / "training.jsonl").read_text().splitlines()) - 2
    state = replay("training.jsonl", joined())
    last = [e for e in events if e["type"] == "progress"][-1]
    assert state.look == "training"
    assert state.status_line == f"Training: {last['local_sps']:.0f} samples/s, 3 peers, step 1,214"
    assert state.tooltip == state.status_line + "\nRun: Glyph classifier"
    assert state.device == "AMD EPYC (23.5 GiB RAM)"
    assert state.device_id == "cpu"
    assert state.progress.total_samples == last["total_samples"]
    assert state.menu == MenuState(can_start=False, can_pause_now=True, can_pause_step=True, can_snooze=True)
    assert len(state.history.local_sps) == 60
    assert state.history.loss[-1] == (last["time"], last["loss"])
    assert state.warning is not None
    assert state.warning.startswith("Could not save the checkpoint")
    titles = [n.title for n in state.take_notices()]
    assert titles == ["Joined", "Hiveling"]  # joined, then the checkpoint error (training went on)
    assert state.take_notices() == []


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_the_reader_gives_the_same_events_for_any_chunking(chunk_size: int) -> None:
    data = (FIXTURES / "training.jsonl").read_bytes()
    assert read_stream(data, chunk_size) == read_stream(data, len(data))


def test_a_last_line_without_newline_is_read() -> None:
    data = b'{"type":"state","state":"training"}\n{"type":"state","state":"paused"}'
    assert [e["state"] for e in read_stream(data, 5)] == ["training", "paused"]


def test_unknown_types_and_log_lines_change_nothing_visible() -> None:
    state = joined()
    version = state.version
    assert not state.apply(event("metrics", value=1))
    assert not state.apply(event("log", level="info", message="hello"))
    assert not state.apply({"type": "state", "state": 3})
    assert state.version == version


def test_before_the_first_step_training_says_it_waits() -> None:
    state = joined()
    state.apply(event("state", state="training", reason=None))
    assert state.status_line == "Training: waiting for the first step"


def test_a_hold_before_the_worker_starts_names_its_reason() -> None:
    state = joined()
    assert state.look == "connecting"
    assert state.set_hold("on battery")
    assert not state.set_hold("on battery")
    assert state.look == "paused"
    assert state.status_line == "Paused: on battery"
    assert state.menu == MenuState(can_start=True, can_pause_now=False, can_pause_step=False, can_snooze=True)


def test_pause_after_this_step_goes_through_pausing() -> None:
    state = replay("training.jsonl", joined())
    state.set_hold("by you")
    assert state.look == "training"  # until the worker answers
    state.apply(event("state", 2000.0, state="pausing", reason="pausing after this step"))
    assert (state.look, state.status_line) == ("paused", "Pausing: by you")
    state.apply(event("state", 2001.0, state="paused", reason="paused"))
    assert state.status_line == "Paused: by you"
    assert state.menu.can_start
    assert not state.menu.can_pause_now


def test_paused_without_a_hold_does_not_repeat_the_state_as_its_reason() -> None:
    state = joined()
    state.apply(event("state", state="paused", reason="paused"))
    assert state.worker_reason is None
    assert state.status_line == "Paused: waiting for the worker"


def test_connecting_and_restarting_show_the_supervisor_reason() -> None:
    state = joined()
    state.apply(event("state", state="connecting", reason="joining the run's peers"))
    assert (state.look, state.status_line) == ("connecting", "Connecting: joining the run's peers")
    state.apply(event("state", state="restarting", reason="restarting in 4 s"))
    assert state.status_line == "Connecting: restarting the worker (restarting in 4 s)"


def test_a_finished_run_says_so_once_and_can_be_started_again() -> None:
    state = replay("finished.jsonl", joined())
    assert state.finished
    assert (state.look, state.status_line) == ("paused", "Stopped: the run has finished")
    assert [n.title for n in state.take_notices()] == ["Joined", "Run finished"]
    assert state.menu.can_start
    assert not state.menu.can_pause_now


def test_a_stop_the_app_asked_for_is_not_a_finished_run() -> None:
    state = replay("training.jsonl", joined())
    state.take_notices()
    state.expect_stop()
    state.apply(event("state", 5000.0, state="stopped", reason="stopped"))
    state.apply(event("bye", 5001.0, exit_code=0, reason="stopped"))
    assert not state.finished
    assert state.take_notices() == []
    assert state.status_line == "Stopped: choose Start to train again"


def test_an_outcome_field_marks_a_finished_run() -> None:
    state = joined()
    state.take_notices()
    state.apply(event("state", state="stopped", reason="reached the last step", outcome="finished"))
    assert state.finished
    assert [n.title for n in state.take_notices()] == ["Run finished"]


def test_a_run_that_finished_before_this_start_is_shown_finished_without_a_new_notice() -> None:
    state = joined()
    state.take_notices()
    finished = event("state", state="stopped", reason="the run has finished", outcome="finished", again=True)
    state.apply(finished)
    state.apply(event("bye", exit_code=0, reason="stopped"))
    assert state.finished
    assert state.status_line == "Stopped: the run has finished"
    assert state.take_notices() == []


def test_a_crash_loop_ends_in_the_error_look_with_the_reason_and_two_notices() -> None:
    state = joined()
    seen = set()
    for item in read_stream((FIXTURES / "crash_loop.jsonl").read_bytes(), 33):
        state.apply(item)
        seen.add(state.look)
        if item.get("state") == "restarting":
            assert state.status_line.startswith("Connecting: restarting the worker (the worker stopped")
    assert seen == {"connecting", "error"}
    assert state.look == "error"
    assert state.status_line.startswith("Error: The worker crashed 5 times in 300 s")
    notices = state.take_notices()
    # five crashes within ten minutes are announced once; the crash loop once; "failed" adds nothing.
    assert [n.error for n in notices] == [True, True]
    assert "crashed 5 times" in notices[1].message
    assert state.menu == MenuState(
        can_start=True, can_pause_now=False, can_pause_step=False, can_snooze=False
    )


def test_the_same_error_is_announced_again_only_after_a_while() -> None:
    state = joined()
    for when in (0.0, 10.0, NOTICE_REPEAT_SECONDS + 1):
        state.apply(event("error", when, code="disk_full", message="The disk is full", fatal=True))
    assert len(state.take_notices()) == 2


def test_training_again_clears_the_error() -> None:
    state = joined()
    state.apply(event("error", code="crash", message="The worker failed\nsecond line", fatal=True))
    state.apply(event("bye", exit_code=1, reason="crash"))
    assert state.status_line == "Error: The worker failed"
    state.apply(event("state", state="training", reason=None))
    assert state.look == "training"
    assert state.error is None


def test_a_goodbye_after_the_supervisor_paused_keeps_the_paused_state() -> None:
    state = joined()
    state.set_hold("by you")
    state.apply(event("state", 1.0, state="training", reason=None))
    state.apply(event("state", 2.0, state="paused", reason="paused (the worker was stopped)"))
    state.apply(event("bye", 3.0, exit_code=0, reason="stopped"))
    assert state.worker == "paused"
    assert not state.finished
    assert state.status_line == "Paused: by you"


def test_training_time_counts_only_while_training() -> None:
    state = joined()
    state.apply(event("state", 100.0, state="training", reason=None))
    state.apply(event("state", 200.0, state="paused", reason=None))
    assert state.session_seconds(now=500.0) == pytest.approx(100.0)
    state.apply(event("state", 300.0, state="training", reason=None))
    assert state.session_seconds(now=350.0) == pytest.approx(150.0)
    state.base_seconds = 3600.0
    assert state.total_seconds(now=350.0) == pytest.approx(3750.0)
    state.apply(event("bye", 400.0, exit_code=1, reason="crash"))
    assert state.session_seconds(now=10_000.0) == pytest.approx(200.0)


def test_bad_progress_fields_are_ignored_not_fatal() -> None:
    state = joined()
    state.apply(event("state", state="training", reason=None))
    assert state.apply(
        event(
            "progress",
            step="12",
            peers=True,
            local_sps=math.nan,
            loss=math.inf,
            collab_sps=5,
            eta_seconds=None,
        )
    )
    assert state.progress.step is None
    assert state.progress.peers is None
    assert state.progress.local_sps is None
    assert state.progress.loss is None
    assert state.progress.collab_sps == 5.0
    assert state.status_line == "Training: waiting for the first step"


def test_history_keeps_a_bounded_window_and_counts_versions() -> None:
    state = joined()
    for i in range(HISTORY_POINTS + 10):
        state.apply(event("progress", float(i), step=i, local_sps=float(i), peers=2))
    assert len(state.history.local_sps) == HISTORY_POINTS
    assert state.history.local_sps[0] == (10.0, 10.0)
    assert state.history.version == HISTORY_POINTS + 10
    assert len(state.history.loss) == 0


def test_joining_another_run_forgets_the_old_one() -> None:
    state = replay("training.jsonl", joined())
    state.join("Another run", "abc")
    assert state.run_name == "Another run"
    assert state.progress.step is None
    assert len(state.history.local_sps) == 0
    assert state.look == "connecting"


def test_hello_names_the_gpu_as_torch_does() -> None:
    state = joined()
    state.apply(
        event("hello", run_name="Glyph classifier", device={"kind": "cuda", "index": 1, "name": "RTX"})
    )
    assert (state.device, state.device_id) == ("RTX", "cuda:1")
    assert not state.apply(
        event("hello", run_name="Glyph classifier", device={"kind": "cuda", "index": 1, "name": "RTX"})
    )


@pytest.mark.parametrize(
    ("worker", "hold", "look"),
    [
        (None, None, "connecting"),
        ("starting", None, "connecting"),
        ("training", None, "training"),
        ("training", "on battery", "training"),
        ("pausing", None, "paused"),
        ("paused", "on battery", "paused"),
        ("stopping", None, "paused"),
        ("stopped", None, "paused"),
        ("failed", None, "error"),
    ],
)
def test_every_worker_state_has_a_look(worker: str | None, hold: str | None, look: str) -> None:
    state = joined()
    if worker is not None:
        state.apply(event("state", state=worker, reason=None))
    state.set_hold(hold)
    assert state.look == look
    assert state.look in LOOKS
    assert state.status_line.split(": ", 1)[0] in {
        "Connecting", "Training", "Pausing", "Paused", "Stopping…", "Stopped", "Error"
    }  # fmt: skip


def test_formats_read_like_people_write() -> None:
    assert [format_rate(v) for v in (412.4, 1234.0, 41.26, 4.126)] == ["412", "1,234", "41.3", "4.13"]
    assert format_duration(None) == "unknown"
    assert [format_duration(s) for s in (45, 720, 12_000, 3600 * 50)] == [
        "45 s",
        "12 min",
        "3 h 20 min",
        "2 days 2 h",
    ]
    assert format_time_trained(0) == "0 s"
    assert format_time_trained(42.7) == "42 s"
    assert format_time_trained(1805) == "30 min 5 s"
    assert format_time_trained(5400) == "1.5 h"
    assert format_time_trained(3600 * 1234) == "1,234.0 h"


def test_a_stream_recorded_from_the_real_worker_reads_as_it_happened() -> None:
    """recorded_glyphs.jsonl: a real worker (glyphs recipe) joined a local host, paused after a step,
    resumed, and was stopped by its supervisor."""
    state = joined()
    seen: list[tuple[str, str]] = []
    for item in read_stream((FIXTURES / "recorded_glyphs.jsonl").read_bytes(), 128):
        if item["type"] == "state" and item["state"] == "pausing":
            state.set_hold("by you")  # what the app does when the volunteer chooses "Pause after this step"
        if item["type"] == "state" and item["state"] == "connecting" and state.hold:
            state.set_hold(None)  # ... and "Start"
        if item["type"] == "state" and item["state"] == "stopped":
            state.expect_stop()  # ... and Quit
        state.apply(item)
        if not seen or seen[-1] != (state.look, state.status_line.split(":")[0]):
            seen.append((state.look, state.status_line.split(":")[0]))
    assert seen == [
        ("connecting", "Connecting"),
        ("training", "Training"),
        ("paused", "Pausing"),
        ("paused", "Paused"),
        ("connecting", "Connecting"),
        ("training", "Training"),
        ("paused", "Stopped"),
    ]
    assert state.device_id == "cpu"
    assert state.progress.step == 95
    assert state.progress.total_samples == 16128
    assert not state.finished
    assert state.status_line == "Stopped: choose Start to train again"


def test_a_pause_of_the_energy_governor_is_known_as_such() -> None:
    state = AppState()
    state.join("run", announce=False)
    state.apply(
        make_event("state", state="paused", reason="cooling down: GPU at 86 °C, limit 80 °C", by="governor")
    )
    assert state.paused_by == "governor"
    assert state.status_line == "Paused: cooling down: GPU at 86 °C, limit 80 °C"
    state.apply(make_event("state", state="training", reason=None))
    assert state.paused_by is None
