"""Energy: sensors read from sysfs trees shaped like real ones, the meter and the governor fed scripted
readings (this machine has no powercap, hwmon or GPU; the real NVML path runs in bench/gpu.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hiveling.core.commands.report import describe_energy
from hiveling.core.energy.governor import (
    MIN_DUTY,
    Conditions,
    Governor,
    Limits,
    parse_power_limit,
    rest_after,
)
from hiveling.core.energy.meter import EnergyMeter, energy_cost, format_energy
from hiveling.core.energy.sensors import (
    CpuTimeEstimate,
    PowercapSensor,
    Reading,
    amd_gpu_sensors,
    cpu_temperature,
    find_sensors,
    powercap_zones,
    process_tree_cpu_seconds,
)
from hiveling.core.energy.watch import EnergyWatch
from hiveling.core.worker.session import Controls
from tests.conftest import wait_until


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def rapl(sysfs: Path, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    zone = sysfs / "class" / "powercap" / "intel-rapl:0"
    write(zone / "name", "package-0")
    write(zone / "energy_uj", str(energy_uj))
    write(zone / "max_energy_range_uj", str(max_uj))
    write(sysfs / "class" / "powercap" / "intel-rapl:0:0" / "name", "core")
    return zone


def test_powercap_counts_the_package_energy_across_a_wraparound(tmp_path: Path) -> None:
    zone = rapl(tmp_path, energy_uj=1_000_000, max_uj=10_000_000)
    zones, why = powercap_zones(tmp_path)
    assert zones == [zone], "the package domain, not its core subdomain"
    assert why is None
    sensor = PowercapSensor(zones, tmp_path)
    assert sensor.read().energy_j == 0.0
    write(zone / "energy_uj", "4000000")
    assert sensor.read().energy_j == pytest.approx(3.0)
    write(zone / "energy_uj", "500000")  # wrapped: 10e6 - 4e6 + 0.5e6 more microjoules
    assert sensor.read().energy_j == pytest.approx(9.5)


def test_an_unreadable_powercap_says_how_to_allow_it(tmp_path: Path) -> None:
    zone = rapl(tmp_path, energy_uj=1)
    (zone / "energy_uj").write_text("not a number")  # what an unreadable counter amounts to here
    zones, why = powercap_zones(tmp_path)
    assert zones == []
    assert why is not None
    assert "readable only by root" in why
    assert "chmod" in why
    sensors, notes = find_sensors("cpu", tmp_path)
    assert [s.estimated for s in sensors] == [True], "the estimate takes over"
    assert any("estimated from CPU time instead" in note for note in notes)


def test_hwmon_gives_the_hottest_cpu_and_the_amd_gpu(tmp_path: Path) -> None:
    hwmon = tmp_path / "class" / "hwmon"
    write(hwmon / "hwmon0" / "name", "k10temp")
    write(hwmon / "hwmon0" / "temp1_input", "61250")
    write(hwmon / "hwmon0" / "temp3_input", "64000")
    write(hwmon / "hwmon1" / "name", "nvme")
    write(hwmon / "hwmon1" / "temp1_input", "90000")  # not the CPU
    write(hwmon / "hwmon2" / "name", "amdgpu")
    write(hwmon / "hwmon2" / "power1_average", "150000000")
    write(hwmon / "hwmon2" / "temp1_input", "71000")
    write(hwmon / "hwmon2" / "power1_cap", "200000000")
    assert cpu_temperature(tmp_path) == 64.0
    (gpu,) = amd_gpu_sensors(tmp_path)
    reading = gpu.read()
    assert (reading.power_w, reading.temperature_c, reading.rated_w) == (150.0, 71.0, 200.0)
    sensors, notes = find_sensors("rocm", tmp_path)
    assert sensors[0] is not gpu
    assert sensors[0].name == gpu.name
    assert notes[-1].startswith("CPU energy")


def test_the_estimate_is_cpu_time_at_the_assumed_power_per_core() -> None:
    seconds = [0.0]
    estimate = CpuTimeEstimate(watts_per_core=10.0, cpu_seconds=lambda: seconds[0])
    seconds[0] = 3.0
    reading = estimate.read()
    assert reading.estimated
    assert reading.energy_j == pytest.approx(30.0)
    assert "10 W per busy core" in estimate.method


def test_the_process_tree_counts_the_cpu_time_of_children() -> None:
    before = process_tree_cpu_seconds()
    code = (
        "import sys, time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
        "sys.stdout.write('done\\n'); sys.stdout.flush(); time.sleep(30)"
    )
    burner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert burner.stdout is not None
        assert burner.stdout.readline() == "done\n"
        assert process_tree_cpu_seconds() - before >= 0.5, "the child's CPU time is counted while it lives"
    finally:
        burner.kill()
        burner.wait()


class Script:
    """A sensor that replays readings."""

    estimated = False
    method = "a script"

    def __init__(self, name: str, readings: list[Reading]) -> None:
        self.name = name
        self.description = f"{name}: scripted"
        self.readings = readings

    def read(self) -> Reading:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def gpu(energy: float, celsius: float = 60.0) -> Reading:
    return Reading("GPU 0", "gpu", energy_j=energy, temperature_c=celsius, rated_w=200.0)


def test_the_meter_counts_what_training_adds_over_idle_and_starts_a_new_day() -> None:
    clock = Clock()
    day = [dt.date(2026, 12, 7)]
    # Idle: 20 W (10 J in 0.5 s); then 120 W while training.
    sensor = Script("GPU 0", [gpu(0.0), gpu(10.0), gpu(10.0 + 120 * 60), gpu(10.0 + 120 * 120, 83.0)])
    meter = EnergyMeter([sensor], clock, lambda: day[0], day_wh=("2026-12-07", 5.0))
    meter.calibrate_idle(0.5, clock.sleep)
    assert meter.status.above_idle
    clock.now += 60
    status = meter.update()
    assert status.session_wh == pytest.approx(100 * 60 / 3600), "120 W less the 20 W idle, for a minute"
    assert status.power_w == pytest.approx(100.0)
    assert status.device_power_w == pytest.approx(120.0)
    assert meter.day_wh == pytest.approx(5.0 + 100 / 60)
    day[0] = dt.date(2026, 12, 8)
    clock.now += 60
    status = meter.update()
    assert meter.day == "2026-12-08"
    assert meter.day_wh == pytest.approx(100 / 60), "a new day, a new budget"
    assert status.hottest == ("GPU", 83.0)
    assert status.temperatures == {"gpu": 83.0}
    assert meter.status.source == "measured: GPU 0 by a script"


def test_the_governor_cools_down_without_flapping_and_pauses_only_when_the_lowest_duty_is_too_hot() -> None:
    governor = Governor(Limits(temperature_c=80.0))
    assert governor.decide(Conditions(("GPU", 70.0))).duty == 1.0
    hot = governor.decide(Conditions(("GPU", 84.0)))
    assert hot.duty < 1.0
    assert hot.reason == "cooling down: GPU at 84 °C, limit 80 °C"
    duties = [governor.decide(Conditions(("GPU", celsius))).duty for celsius in (78, 79, 77, 78, 76)]
    assert len(set(duties)) == 1, "inside the band, the duty holds"
    for _ in range(20):
        decision = governor.decide(Conditions(("GPU", 86.0)))
    assert decision.paused
    assert governor.temperature_duty == MIN_DUTY
    assert governor.decide(Conditions(("GPU", 77.0))).paused, "not resumed before it is 5 °C under"
    resumed = governor.decide(Conditions(("GPU", 74.0)))
    assert not resumed.paused
    assert resumed.duty == MIN_DUTY
    for _ in range(20):
        decision = governor.decide(Conditions(("GPU", 70.0)))
    assert decision.duty == 1.0
    assert decision.reason is None


def test_the_governor_settles_a_power_limit_and_holds_in_its_band() -> None:
    governor = Governor(Limits(power_w=100.0))
    idle, full = 30.0, 170.0  # the device at duty d draws idle + d * (full - idle)
    duty, history = 1.0, []
    for _ in range(15):
        decision = governor.decide(Conditions(power_w=idle + duty * (full - idle)))
        duty = decision.duty
        history.append(idle + duty * (full - idle))
    assert all(90.0 <= watts <= 100.0 for watts in history[-5:]), history
    assert len(set(history[-5:])) == 1, "settled: no flapping"
    assert decision.reason is not None
    assert decision.reason.startswith("keeping under 100 W")


def test_the_daily_budget_pauses_until_tomorrow() -> None:
    governor = Governor(Limits(daily_wh=50.0))
    assert not governor.decide(Conditions(day_wh=49.0)).paused
    paused = governor.decide(Conditions(day_wh=50.5))
    assert paused.paused
    assert paused.reason is not None
    assert "resumes tomorrow" in paused.reason
    assert not governor.decide(Conditions(day_wh=0.2)).paused


def test_rest_and_power_limits_parse() -> None:
    assert rest_after(0.2, 1.0) == 0.0
    assert rest_after(0.2, 0.5) == pytest.approx(0.2)
    assert rest_after(10.0, MIN_DUTY) == 30.0, "never a rest that looks like a hang"
    assert parse_power_limit("120W") == (120.0, None)
    assert parse_power_limit(" 60 % ") == (None, 0.6)
    for bad in ("5kW", "0%", "-3", "nan", ""):
        with pytest.raises(ValueError, match="like 120W"):
            parse_power_limit(bad)


def test_a_power_share_becomes_watts_once_the_rating_is_known() -> None:
    clock = Clock()
    sensor = Script("GPU 0", [gpu(0.0), gpu(200.0 * 10)])
    watch = EnergyWatch(EnergyMeter([sensor], clock), Limits(), power_share=0.5, clock=clock)
    watch.tick()
    clock.now += 10
    decision = watch.tick()
    assert watch.limits.power_w == 100.0, "50% of the 200 W board"
    assert decision.duty < 1.0
    fields = watch.fields()
    assert fields["duty"] == decision.duty
    assert fields["governor"].startswith("keeping under 100 W")
    assert fields["temperatures"] == {"gpu": 60.0}
    assert fields["energy_estimated"] is False


def test_a_rest_ends_at_once_on_pause_and_the_governor_never_resumes_the_users_pause() -> None:
    controls = Controls()
    threading.Timer(0.2, controls.request_pause, args=("now",)).start()
    started = time.monotonic()
    controls.rest(20.0)
    assert time.monotonic() - started < 5.0
    controls = Controls()
    controls.request_pause("step", by="governor")
    assert controls.wait_while_paused(lambda: True, interval=0.05), "the governor's pause ends"
    controls = Controls()
    controls.request_pause("step")
    controls.request_pause("step", by="governor")
    assert controls.paused_by == "user"
    threading.Timer(0.3, controls.request_stop).start()
    assert not controls.wait_while_paused(lambda: True, interval=0.05), "only the user ends it"


def test_the_headless_line_shows_energy_cost_temperature_and_the_governor() -> None:
    event = {
        "energy_wh": 12.34,
        "energy_estimated": True,
        "temperatures": {"cpu": 64.4, "gpu": 81.0},
        "governor": "cooling down: GPU at 81 °C, limit 80 °C",
        "swarm_energy_wh": 1500.0,
        "swarm_energy_peers": 3,
    }
    assert describe_energy(event, 0.30, "EUR") == (
        "12.3 Wh this session (estimated), <0.01 EUR · GPU 81 °C · CPU 64 °C · cooling down: GPU at 81 °C, "
        "limit 80 °C · the run: 1.50 kWh from 3 peers, 0.45 EUR"
    )
    assert describe_energy({"energy_wh": 0.5}) == "0.50 Wh this session"
    assert describe_energy({"step": 3}) is None, "an older worker's event"
    assert energy_cost(100.0, None, "EUR") is None
    assert format_energy(2500.0) == "2.50 kWh"


def test_until_its_pause_comes_the_governor_keeps_the_lowest_duty() -> None:
    governor = Governor(Limits(temperature_c=80.0, daily_wh=10.0))
    over_budget = governor.decide(Conditions(("CPU", 50.0), day_wh=11.0))
    assert over_budget.paused
    assert over_budget.duty == MIN_DUTY, "no full speed while the pause waits for the next step"
    for _ in range(20):
        governor.decide(Conditions(("GPU", 90.0)))
    assert governor.hot
    assert not governor.decide(Conditions(None)).paused, "a sensor that went away holds nobody"


def test_a_pause_is_not_counted_as_training_and_a_failed_reading_is_no_baseline() -> None:
    clock = Clock()
    readings = [gpu(0.0), Reading("GPU 0", "gpu", energy_j=None), gpu(3600.0), gpu(3600.0 + 360.0)]
    meter = EnergyMeter([Script("GPU 0", readings)], clock)
    meter.calibrate_idle(0.5, clock.sleep)  # the second reading failed: no baseline from it
    clock.now += 3600  # an hour paused: the next reading is the new baseline, nothing is counted
    meter.rebase()
    clock.now += 10
    assert meter.update().session_wh == pytest.approx(360.0 / 3600)


def test_a_share_of_an_unknown_rating_leaves_the_other_limits_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    hot = Reading("CPU package", "cpu", energy_j=0.0, temperature_c=95.0)
    watch = EnergyWatch(EnergyMeter([Script("CPU package", [hot])], clock), Limits(80.0), 0.6, clock=clock)
    for _ in range(3):
        clock.now += 5
        decision = watch.tick()
    assert decision.duty < 1.0, "the temperature limit works without a rating"
    assert watch.limits.power_w is None
    assert sum("not applied" in record.message for record in caplog.records) == 1, "said once"


def test_this_machines_powercap_counts_or_the_test_says_why_not() -> None:
    zones, why = powercap_zones()
    if not zones:
        pytest.skip(f"no readable powercap (RAPL) on this machine: {why}")
    sensor = PowercapSensor(zones)
    sensor.read()
    assert wait_until(lambda: (sensor.read().energy_j or 0) > 0, timeout=5), "a package's counter advances"


def test_this_machines_nvml_reads_or_the_test_says_why_not() -> None:
    from hiveling.core.energy.sensors import nvml_sensors

    gpus = nvml_sensors()
    if not gpus:
        pytest.skip("no NVIDIA GPU with NVML on this machine (bench/gpu.py checks it where there is one)")
    reading = gpus[0].read()
    assert reading.power_w is not None
    assert reading.power_w > 0
    assert reading.temperature_c is not None


def test_this_machines_cpu_temperature_is_read_or_the_test_says_why_not() -> None:
    celsius = cpu_temperature()
    if celsius is None:
        pytest.skip("this machine exposes no CPU temperature through hwmon")
    assert 0 < celsius < 130
