"""Where this computer's power, energy and temperatures can be read, best source first.

- NVIDIA GPUs: NVML (``nvidia-ml-py``): the total-energy counter (Volta and newer), else the power
  reading; the GPU temperature; the board's default power limit as its rating.
- CPUs: Linux powercap (RAPL package domains, Intel and AMD Zen) for energy, when readable: most
  kernels since the PLATYPUS fix (2020) let only root read ``energy_uj``; hwmon (coretemp, k10temp,
  zenpower, ...) for temperature.
- AMD GPUs: hwmon's ``amdgpu`` power and temperature.
- Anywhere else: an estimate, the CPU time of the training processes at an assumed power per busy core,
  labelled as such with what it assumed.

Every sensor reads files or NVML and never raises: what it cannot read is None.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SYSFS = Path("/sys")
PROCFS = Path("/proc")
#: A desktop CPU draws roughly 65-125 W with every core busy, 6-16 cores: about 10 W per busy core.
WATTS_PER_BUSY_CORE = 10.0
#: Power readings are integrated over at most this long a gap: nobody read them in between (a pause),
#: and what the device drew then is unknown.
LONGEST_GAP = 10.0
CPU_HWMON_NAMES = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "soc_thermal", "acpitz")


@dataclass(frozen=True)
class Reading:
    """One sensor at one moment."""

    name: str  # "GPU 0 (NVIDIA GeForce RTX 3060)", "CPU package", "CPU time estimate"
    kind: str  # "gpu" | "cpu"
    energy_j: float | None = None  # a counter since the sensor started; differences are what count
    power_w: float | None = None  # the latest power, where the source has one
    temperature_c: float | None = None
    rated_w: float | None = None  # the device's rated power, where known
    estimated: bool = False


class PowerIntegral:
    """Energy from successive power readings (trapezoids), over at most LONGEST_GAP between two."""

    def __init__(self) -> None:
        self.joules = 0.0
        self._last: tuple[float, float] | None = None  # (time, watts)

    def add(self, watts: float | None) -> float:
        """Adds a reading taken now (None: none); returns the energy so far, in J."""
        now = time.monotonic()
        if watts is not None:
            if self._last is not None:
                then, before = self._last
                self.joules += min(now - then, LONGEST_GAP) * (before + watts) / 2
            self._last = (now, watts)
        return self.joules


class Sensor(Protocol):
    """Something that reports a device's energy, power and temperature; tests feed scripted ones."""

    name: str
    description: str  # for `hiveling devices` and the labels: what it measures and how
    estimated: bool  # an estimate, not a measurement
    method: str  # how, in a few words: "NVML's energy counter", "estimated from ..."

    def read(self) -> Reading: ...


class NvmlSensor:
    """One NVIDIA GPU through NVML."""

    estimated = False

    def __init__(self, index: int, nvml: Any, handle: Any, gpu_name: str) -> None:
        self.index = index
        self._nvml = nvml
        self._handle = handle
        self.name = f"GPU {index} ({gpu_name})"
        self._counter = self._query("nvmlDeviceGetTotalEnergyConsumption") is not None
        self._power = PowerIntegral()  # energy from power readings, where there is no counter
        self.method = "NVML's energy counter" if self._counter else "NVML's power readings"
        self.description = f"{self.name}: energy from {self.method}, temperature from NVML"

    def _query(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, function)(self._handle, *args)
        except Exception as error:  # NVMLError, or a function this driver lacks
            logger.debug("%s failed: %s", function, error)
            return None

    def read(self) -> Reading:
        milliwatts = self._query("nvmlDeviceGetPowerUsage")
        power = None if milliwatts is None else milliwatts / 1000.0
        if self._counter:
            millijoules = self._query("nvmlDeviceGetTotalEnergyConsumption")
            energy = None if millijoules is None else millijoules / 1000.0
        else:
            energy = self._power.add(power)
        temperature = self._query("nvmlDeviceGetTemperature", 0)  # NVML_TEMPERATURE_GPU
        rating = self._query("nvmlDeviceGetPowerManagementDefaultLimit")
        return Reading(
            name=self.name,
            kind="gpu",
            energy_j=energy,
            power_w=power,
            temperature_c=None if temperature is None else float(temperature),
            rated_w=None if rating is None else rating / 1000.0,
        )


def nvml_sensors(only: int | None = None) -> list[NvmlSensor]:
    """A sensor per NVIDIA GPU (only GPU ``only``, in NVML's numbering, which the worker makes torch's);
    none when NVML cannot be used. NVML stays initialised for them."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        sensors = []
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            if only is not None and index != only:
                continue
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            sensors.append(NvmlSensor(index, pynvml, handle, name))
        return sensors
    except Exception as error:  # NVMLError: no driver, no GPU
        logger.debug("NVML is not available: %s", error)
        return []


class PowercapSensor:
    """The CPU packages' energy through Linux powercap (RAPL), with the hottest hwmon CPU temperature."""

    estimated = False

    def __init__(self, zones: list[Path], sysfs: Path = SYSFS) -> None:
        self.zones = zones
        self.sysfs = sysfs
        self.name = "CPU package" if len(zones) == 1 else f"CPU packages ({len(zones)})"
        self.method = "Linux powercap (RAPL)"
        self.description = f"{self.name}: energy from {self.method}, temperature from hwmon"
        self._last: dict[Path, int] = {}
        self._total = 0.0

    def read(self) -> Reading:
        for zone in self.zones:
            value = _integer(zone / "energy_uj")
            if value is None:
                continue
            previous = self._last.get(zone)
            if previous is not None:
                delta = value - previous
                if delta < 0:  # the counter wrapped around
                    delta += _integer(zone / "max_energy_range_uj") or 0
                self._total += max(delta, 0) / 1e6
            self._last[zone] = value
        limits = [_integer(zone / "constraint_0_max_power_uw") for zone in self.zones]
        rated = sum(limit for limit in limits if limit) / 1e6 or None
        return Reading(
            name=self.name,
            kind="cpu",
            energy_j=self._total,
            temperature_c=cpu_temperature(self.sysfs),
            rated_w=rated,
        )


def powercap_zones(sysfs: Path = SYSFS) -> tuple[list[Path], str | None]:
    """The readable package zones, or none and why (for `hiveling devices`)."""
    root = sysfs / "class" / "powercap"
    zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    packages = [z for z in zones if (_text(z / "name") or "").startswith("package")]
    if not packages:
        return [], "no powercap (RAPL) package domains here"
    readable = [z for z in packages if _integer(z / "energy_uj") is not None]
    if not readable:
        return [], (
            f"{packages[0] / 'energy_uj'} is readable only by root; to let Hiveling measure the CPU's "
            "energy: sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj"
        )
    return readable, None


class HwmonGpuSensor:
    """An AMD GPU's power and temperature through hwmon (``amdgpu``), integrated into energy."""

    estimated = False

    def __init__(self, folder: Path, index: int) -> None:
        self.folder = folder
        self.name = f"GPU {index} (AMD)"
        self.method = "hwmon's power readings (amdgpu)"
        self.description = f"{self.name}: power and temperature from hwmon (amdgpu)"
        self._power = PowerIntegral()

    def read(self) -> Reading:
        microwatts = _integer(self.folder / "power1_average")
        if microwatts is None:
            microwatts = _integer(self.folder / "power1_input")
        power = None if microwatts is None else microwatts / 1e6
        energy = self._power.add(power)
        millidegrees = _integer(self.folder / "temp1_input")
        cap = _integer(self.folder / "power1_cap")
        return Reading(
            name=self.name,
            kind="gpu",
            energy_j=energy,
            power_w=power,
            temperature_c=None if millidegrees is None else millidegrees / 1000,
            rated_w=None if not cap else cap / 1e6,
        )


def amd_gpu_sensors(sysfs: Path = SYSFS) -> list[HwmonGpuSensor]:
    folders = [f for f in sorted((sysfs / "class" / "hwmon").glob("hwmon*")) if _text(f / "name") == "amdgpu"]
    return [HwmonGpuSensor(folder, index) for index, folder in enumerate(folders)]


class CpuTimeEstimate:
    """The training processes' CPU time at an assumed power per busy core: an estimate, said to be one."""

    estimated = True

    def __init__(
        self,
        watts_per_core: float = WATTS_PER_BUSY_CORE,
        cpu_seconds: Callable[[], float] | None = None,
        sysfs: Path = SYSFS,
    ) -> None:
        self.watts_per_core = watts_per_core
        self.sysfs = sysfs
        self._cpu_seconds = cpu_seconds or process_tree_cpu_seconds
        self._start = self._cpu_seconds()
        self._last = (time.monotonic(), self._start)
        self.name = "CPU time estimate"
        self.method = (
            f"estimated from the CPU time of Hiveling's processes at {watts_per_core:g} W per busy core"
        )
        self.description = f"CPU: {self.method}"

    def read(self) -> Reading:
        now, seconds = time.monotonic(), self._cpu_seconds()
        then, before = self._last
        self._last = (now, seconds)
        power = (seconds - before) / (now - then) * self.watts_per_core if now > then else None
        return Reading(
            name=self.name,
            kind="cpu",
            energy_j=(seconds - self._start) * self.watts_per_core,
            power_w=power,
            temperature_c=cpu_temperature(self.sysfs),
            rated_w=(os.cpu_count() or 1) * self.watts_per_core,
            estimated=True,
        )


def process_tree_cpu_seconds(pid: int | None = None, procfs: Path = PROCFS) -> float:
    """CPU seconds of a process and its living descendants (hivemind's DHT, averagers, p2pd): Linux /proc;
    elsewhere this process alone."""
    root = os.getpid() if pid is None else pid
    if not (procfs / str(root) / "stat").is_file():
        times = os.times()
        return times.user + times.system
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in procfs.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()  # the name may hold spaces and parentheses
            parents[int(entry.name)] = int(fields[1])
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    total, todo = 0.0, [root]
    while todo:
        current = todo.pop()
        total += used.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


def cpu_temperature(sysfs: Path = SYSFS) -> float | None:
    """The hottest CPU temperature hwmon reports, in °C; None where it reports none."""
    hottest: float | None = None
    for folder in (sysfs / "class" / "hwmon").glob("hwmon*"):
        if _text(folder / "name") not in CPU_HWMON_NAMES:
            continue
        for file in folder.glob("temp*_input"):
            value = _integer(file)
            if value is not None and (hottest is None or value / 1000 > hottest):
                hottest = value / 1000
    return hottest


def find_sensors(
    device_kind: str = "cpu", sysfs: Path = SYSFS, index: int | None = None
) -> tuple[list[Sensor], list[str]]:
    """The sensors for training on ``device_kind`` ("cpu", "cuda", "rocm", "mps") GPU ``index``, and why
    others are missing: the GPU's own sensor where it has one, the CPU's energy (measured, else
    estimated)."""
    sensors: list[Sensor] = []
    notes: list[str] = []
    if device_kind == "cuda":
        gpus = nvml_sensors(index)
        sensors.extend(gpus)
        if not gpus:
            notes.append("NVIDIA GPU energy: NVML is not available (install nvidia-ml-py and the driver)")
    elif device_kind == "rocm":
        gpus_amd = amd_gpu_sensors(sysfs)
        if index is not None:
            gpus_amd = gpus_amd[index : index + 1]
        sensors.extend(gpus_amd)
        if not gpus_amd:
            notes.append("AMD GPU energy: no amdgpu hwmon folder readable here")
    elif device_kind == "mps":
        notes.append("Apple GPU energy: macOS has no source readable without administrator rights")
    zones, why = powercap_zones(sysfs)
    if zones:
        sensors.append(PowercapSensor(zones, sysfs))
    else:
        notes.append(f"CPU energy: {why}; estimated from CPU time instead")
        sensors.append(CpuTimeEstimate(sysfs=sysfs))
    return sensors, notes


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _integer(path: Path) -> int | None:
    text = _text(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def energy_sources(device_kind: str, sysfs: Path = SYSFS) -> dict[str, str]:
    """How energy and temperature are read for training on ``device_kind``, for ``hiveling devices``."""
    sensors, notes = find_sensors(device_kind, sysfs)
    missing = [note for note in notes if "estimated" not in note]
    energy = "; ".join([sensor.description for sensor in sensors] + missing)
    why = next((n.split(": ", 1)[1] for n in notes if "estimated" in n), None)
    if why:
        energy += f" ({why.removesuffix('; estimated from CPU time instead')})"
    readings = [sensor.read() for sensor in sensors]
    temperatures = [
        f"{kind.upper()}: {'hwmon' if kind == 'cpu' else 'its driver'}"
        for kind in ("gpu", "cpu")
        if any(r.kind == kind and r.temperature_c is not None for r in readings)
    ]
    return {"energy": energy, "temperature": ", ".join(temperatures) or "not exposed here"}
