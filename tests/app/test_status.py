"""The Status window, its charts and the Logs window, rendered offscreen from replayed worker streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QColor, QGuiApplication, QImage

from hiveling.app.state import AppState
from hiveling.app.windows.charts import PALETTE, Chart, nice_ceiling
from hiveling.app.windows.logs import LogsWindow
from hiveling.app.windows.status import StatusWindow
from hiveling.app.worker_process import read_stream
from hiveling.core.machine.devices import Device
from hiveling.core.worker.events import make_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"


def replayed(name: str, count: int | None = None) -> AppState:
    state = AppState()
    state.join("Glyph classifier", "75gguw7nvukmie47", announce=False)
    for item in read_stream((FIXTURES / name).read_bytes())[:count]:
        state.apply(item)
    return state


def window(qtbot: Any, *, with_quit: bool = False) -> StatusWindow:
    status = StatusWindow(with_quit=with_quit)
    qtbot.addWidget(status)
    return status


def colour_pixels(image: QImage, colour: str, tolerance: int = 40) -> int:
    """How many pixels of ``image`` are close to ``colour`` (every 2nd column, to stay fast)."""
    target = QColor(colour)
    found = 0
    for y in range(image.height()):
        for x in range(0, image.width(), 2):
            pixel = image.pixelColor(x, y)
            if (
                abs(pixel.red() - target.red()) + abs(pixel.green() - target.green())
                + abs(pixel.blue() - target.blue()) < tolerance
            ):  # fmt: skip
                found += 1
    return found


def test_a_training_run_shows_its_step_share_and_contribution(qtbot: Any, tmp_path: Path) -> None:
    state = replayed("training.jsonl")
    status = window(qtbot)
    status.show_state(state)
    status.show()
    assert status.headline.text() == "Training"
    assert status.detail.text() == state.status_line.removeprefix("Training: ")
    assert status.run.text() == (
        "Run: Glyph classifier · training on AMD EPYC (23.5 GiB RAM) · "
        "all computers together: 1,158 samples/s"
    )
    assert status.step.text() == "1,214"
    assert status.gathered.text() == "88% gathered (224 of 256 samples)"
    assert status.eta.text() == "under a second"
    assert status.session.text().startswith("24,960 samples, ")
    assert status.all_time.text().startswith("76,194 samples, ")
    assert not status.start_button.isEnabled()
    assert status.pause_button.isEnabled()
    assert status.progress_view.isVisible()
    assert not status.welcome.isVisible()
    assert not status.quit_button.isVisible()
    image = status.grab().toImage()
    image.save(str(tmp_path / "status-training.png"))
    assert colour_pixels(image, PALETTE[0]) > 200  # this computer's line is drawn
    assert colour_pixels(image, PALETTE[1]) > 100  # and all computers' line


def test_before_joining_the_window_explains_what_to_do(qtbot: Any) -> None:
    status = window(qtbot, with_quit=True)
    status.show_state(AppState())
    status.show()
    assert status.headline.text() == "Not joined"
    assert status.detail.text() == "Choose “Join a run…” to start helping"
    assert status.welcome.isVisible()
    assert "Join a run…" in status.welcome.text()
    assert not status.progress_view.isVisible()
    assert status.quit_button.isVisible()
    assert not status.start_button.isEnabled()


def test_an_error_says_what_happened_and_what_to_do(qtbot: Any) -> None:
    status = window(qtbot)
    status.show_state(replayed("crash_loop.jsonl"))
    assert status.headline.text() == "Error"
    assert status.detail.text().startswith("The worker crashed 5 times in 300 s")
    assert status.run.text() == "Run: Glyph classifier · Logs… shows what happened; Start tries again."
    assert status.start_button.isEnabled()
    assert not status.pause_button.isEnabled()


def test_charts_get_new_points_only_when_there_are_new_points(qtbot: Any) -> None:
    state = replayed("training.jsonl", count=20)
    status = window(qtbot)
    status.show_state(state)
    assert status.speed_chart.series() == []  # hidden: nothing is handed over
    status.show()
    first = status.speed_chart.series()
    assert [len(points) for _, points in first] == [14, 14]
    state.apply(make_event("state", state="training", reason="still"))
    status.show_state(state)
    assert status.speed_chart.series() is first  # no new points: the chart keeps what it has
    state.apply(make_event("progress", step=1300, peers=4, local_sps=500.0, collab_sps=2000.0, loss=0.5))
    status.show_state(state)
    assert [len(points) for _, points in status.speed_chart.series()] == [15, 15]
    assert status.peers_chart.series()[0][1][-1][1] == 4.0


def test_a_chart_without_data_says_so_and_draws_no_line(qtbot: Any) -> None:
    chart = Chart("Samples per second")
    qtbot.addWidget(chart)
    chart.resize(300, 160)
    assert colour_pixels(chart.grab().toImage(), PALETTE[0]) == 0
    chart.set_series([("", [(0.0, 5.0)])])  # one point, constant values: no division by zero
    chart.grab()
    chart.set_series([("", [(float(t), 7.0) for t in range(10)])])
    assert colour_pixels(chart.grab().toImage(), PALETTE[0]) > 20


@pytest.mark.parametrize(
    ("value", "nice"), [(0.3, 0.5), (1.0, 1.0), (1.1, 2.0), (2.2, 2.5), (659, 1000), (1318, 2000), (4.9, 5.0)]
)
def test_axis_tops_are_round_numbers(value: float, nice: float) -> None:
    assert nice_ceiling(value) == pytest.approx(nice)


def test_axis_ranges_hold_every_value(qtbot: Any) -> None:
    loss = Chart("loss", zero_based=False)
    peers = Chart("peers", whole=True)
    speed = Chart("speed")
    qtbot.addWidget(loss)
    assert loss._value_range([1.13, 2.71]) == pytest.approx((1.0, 3.0))
    assert peers._value_range([1.0, 3.0]) == (0.0, 4.0)
    assert speed._value_range([400.0, 1318.0]) == (0.0, 2000.0)
    low, high = loss._value_range([0.3001, 0.3002])
    assert low <= 0.3001 < 0.3002 <= high


def test_the_device_panel_shows_the_training_device(qtbot: Any) -> None:
    status = window(qtbot)
    cpu = Device("cpu", 0, "AMD EPYC", 24 * 2**30, None, None, None, True, None)
    gpu = Device("cuda", 0, "Old GPU", 2 * 2**30, 2**30, "470", "3.0", False, "too old; use the CPU")
    status.show_devices([gpu, cpu], "cpu")
    status.show()
    assert status.devices_box.isVisible()
    assert "AMD EPYC" in status.device_panel.summary.text()
    assert "too old" in status.device_panel.status_labels[0].text()


def test_every_look_renders(qtbot: Any, tmp_path: Path) -> None:
    status = window(qtbot)
    status.show()
    states = {
        "not_joined": AppState(),
        "training": replayed("training.jsonl"),
        "error": replayed("crash_loop.jsonl"),
        "finished": replayed("finished.jsonl"),
    }
    paused = replayed("training.jsonl")
    paused.set_hold("on battery")
    paused.apply(make_event("state", state="paused", reason="paused"))
    states["paused"] = paused
    for name, state in states.items():
        status.show_state(state)
        path = tmp_path / f"status-{name}.png"
        assert status.grab().save(str(path))
        assert path.stat().st_size > 5000
    assert status.headline.text() == "Paused"
    assert status.detail.text() == "On battery"


def test_the_logs_window_shows_appends_and_copies(qtbot: Any, tmp_path: Path) -> None:
    logs = LogsWindow(tmp_path / "logs")
    qtbot.addWidget(logs)
    logs.set_lines(["12:00:01 INFO    one", "12:00:02 STATE   training"])
    logs.append_line("12:00:03 ERROR   two (crash)")
    assert logs.lines() == [
        "12:00:01 INFO    one",
        "12:00:02 STATE   training",
        "12:00:03 ERROR   two (crash)",
    ]
    logs.copy_all()
    assert QGuiApplication.clipboard().text().splitlines()[-1] == "12:00:03 ERROR   two (crash)"
    assert str(tmp_path / "logs") in logs.intro.text()


def test_energy_cost_temperature_and_the_governor_show_where_the_volunteer_looks(qtbot: Any) -> None:
    state = replayed("training.jsonl", count=20)
    state.price_per_kwh, state.currency = 0.30, "EUR"
    status = window(qtbot)
    status.show()
    status.show_state(state)
    assert status.energy.text() == "–", "an older worker reports no energy"
    assert status.temperature_chart.isHidden(), "no temperature line where none is exposed"
    for celsius in (78.0, 84.0):
        state.apply(
            make_event(
                "progress", step=1300, peers=2, local_sps=250.0, collab_sps=500.0, loss=0.5,
                energy_wh=12.34, energy_total_wh=840.0, energy_estimated=False,
                temperatures={"gpu": celsius, "cpu": 61.0},
                governor="cooling down: GPU at 84 °C, limit 80 °C", duty=0.64,
            )
        )  # fmt: skip
    status.show_state(state)
    assert status.energy.text() == "12.3 Wh this session, 840 Wh for this run · 0.25 EUR in all"
    assert status.detail.text().endswith("· cooling down: GPU at 84 °C, limit 80 °C")
    assert not status.temperature_chart.isHidden()
    assert [value for _, value in status.temperature_chart.series()[0][1]] == [78.0, 84.0]
