"""What the machine has, read without torch: NVIDIA GPUs (NVML, else nvidia-smi), AMD GPUs (the kfd
topology in sysfs, names from rocm-smi), Apple silicon, the CPU and its memory.

Every probe returns what it could read and logs why it could not read the rest; none raises.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MIB = 2**20
PROBE_TIMEOUT = 10.0  # seconds; a hung driver makes nvidia-smi wait forever
SYSFS = Path("/sys")
SMI_FIELDS = ("index", "uuid", "name", "memory.total", "memory.free", "driver_version", "compute_cap")
AMD_VENDOR_ID = 0x1002


@dataclass(frozen=True)
class Gpu:
    vendor: str  # "nvidia" | "amd"
    index: int  # the driver's numbering: NVML / nvidia-smi order, kfd order for AMD
    name: str
    uuid: str | None
    total_memory: int | None  # bytes
    free_memory: int | None
    driver: str | None
    cuda_version: str | None  # the newest CUDA the NVIDIA driver supports, "12.2"
    capability: str | None  # "8.6" (NVIDIA) or the gfx target, "gfx1100" (AMD)


@dataclass(frozen=True)
class AppleChip:
    name: str  # "Apple M2 Pro"
    memory: int | None  # unified memory, bytes
    macos: tuple[int, ...]  # (14, 2)
    translated: bool  # this Python runs under Rosetta, so torch sees an Intel Mac


@dataclass(frozen=True)
class Host:
    cpu_name: str
    cores: int
    total_memory: int | None  # bytes, within the container's limit
    available_memory: int | None


def nvidia_gpus() -> list[Gpu]:
    """NVIDIA GPUs through NVML; nvidia-smi when NVML is missing or fails."""
    gpus = nvml_gpus()
    return smi_gpus() if gpus is None else gpus


def nvml_gpus() -> list[Gpu] | None:
    """GPUs as NVML (nvidia-ml-py) reports them; None when NVML cannot be used here."""
    try:
        import pynvml
    except ImportError:
        logger.debug("nvidia-ml-py is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        logger.debug("NVML is not available: %s", error)
        return None
    try:
        driver = _nvml_value(pynvml.nvmlSystemGetDriverVersion)
        cuda = _nvml_value(pynvml.nvmlSystemGetCudaDriverVersion)
        count = int(pynvml.nvmlDeviceGetCount())
        gpus = []
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = _nvml_value(pynvml.nvmlDeviceGetMemoryInfo, handle)
            capability = _nvml_value(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
            gpus.append(
                Gpu(
                    vendor="nvidia",
                    index=index,
                    name=_text(_nvml_value(pynvml.nvmlDeviceGetName, handle)) or f"NVIDIA GPU {index}",
                    uuid=_text(_nvml_value(pynvml.nvmlDeviceGetUUID, handle)),
                    total_memory=None if memory is None else int(memory.total),
                    free_memory=None if memory is None else int(memory.free),
                    driver=_text(driver),
                    cuda_version=None if cuda is None else _cuda_version(int(cuda)),
                    capability=None if capability is None else f"{capability[0]}.{capability[1]}",
                )
            )
        return gpus
    except pynvml.NVMLError as error:
        logger.warning("NVML failed (%s); asking nvidia-smi instead", error)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            logger.debug("NVML shutdown failed: %s", error)


def _nvml_value(function: Any, *args: Any) -> Any:
    """One NVML query; None when this GPU or driver does not support it."""
    import pynvml

    try:
        return function(*args)
    except pynvml.NVMLError as error:
        logger.debug("%s failed: %s", getattr(function, "__name__", function), error)
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(encoded: int) -> str:
    """NVML's 12020 -> "12.2"."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def smi_gpus(executable: str = "nvidia-smi") -> list[Gpu]:
    """GPUs as nvidia-smi reports them; [] when it is missing or fails."""
    path = shutil.which(executable)
    if path is None:
        return []
    fields: tuple[str, ...] = SMI_FIELDS
    output = _run([path, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if output is None:
        fields = SMI_FIELDS[:-1]  # drivers before compute_cap existed reject the whole query
        output = _run([path, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if output is None:
        logger.warning("nvidia-smi is installed but could not list the GPUs; run nvidia-smi to see why")
        return []
    summary = _run([path, "-q", "-d", "COMPUTE"]) or ""
    match = re.search(r"^\s*CUDA Version\s*:\s*(\d+\.\d+)", summary, re.MULTILINE)
    return parse_smi_csv(output, fields, match.group(1) if match else None)


def parse_smi_csv(text: str, fields: tuple[str, ...], cuda_version: str | None) -> list[Gpu]:
    gpus = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if len(row) != len(fields):
            continue
        values: dict[str, str | None] = {
            name: None if value.startswith("[") else value.strip()
            for name, value in zip(fields, row, strict=True)
        }
        index = _integer(values["index"])
        if index is None:
            continue
        total = _integer(values["memory.total"])
        free = _integer(values["memory.free"])
        gpus.append(
            Gpu(
                vendor="nvidia",
                index=index,
                name=values["name"] or f"NVIDIA GPU {index}",
                uuid=values["uuid"],
                total_memory=None if total is None else total * MIB,
                free_memory=None if free is None else free * MIB,
                driver=values["driver_version"],
                cuda_version=cuda_version,
                capability=values.get("compute_cap"),
            )
        )
    return gpus


def amd_gpus() -> list[Gpu]:
    """AMD GPUs from the kfd topology (what ROCm itself enumerates), in its order."""
    try:
        topology = SYSFS / "class" / "kfd" / "kfd" / "topology" / "nodes"
        nodes = sorted((p for p in topology.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    except OSError:
        return []
    driver = _read(SYSFS / "module" / "amdgpu" / "version")
    found: list[tuple[dict[str, int], Path]] = []
    for node in nodes:
        properties = _properties(node / "properties")
        if properties.get("simd_count", 0) > 0 and properties.get("vendor_id") == AMD_VENDOR_ID:
            found.append((properties, node))
    names: list[str] | None = None  # from rocm-smi, asked only when sysfs lacks a product name
    gpus = []
    for index, (properties, node) in enumerate(found):
        target = _gfx_name(properties.get("gfx_target_version", 0))
        device = SYSFS / "class" / "drm" / f"renderD{properties.get('drm_render_minor', -1)}" / "device"
        name = _read(device / "product_name")
        if name is None:
            names = _rocm_smi_names() if names is None else names
            name = names[index] if len(names) == len(found) else None
        total = _integer(_read(device / "mem_info_vram_total"))
        used = _integer(_read(device / "mem_info_vram_used"))
        if total is None:
            banks = _properties(node / "mem_banks" / "0" / "properties")
            total = banks.get("size_in_bytes")
        gpus.append(
            Gpu(
                vendor="amd",
                index=index,
                name=name or f"AMD GPU {target}",
                uuid=None,
                total_memory=total,
                free_memory=None if total is None or used is None else total - used,
                driver=driver,
                cuda_version=None,
                capability=target,
            )
        )
    return gpus


def _gfx_name(version: int) -> str:
    """kfd's gfx_target_version 90010 -> "gfx90a" (major*10000 + minor*100 + stepping)."""
    major, minor, stepping = version // 10000, version // 100 % 100, version % 100
    return f"gfx{major}{minor:x}{stepping:x}"


def _properties(path: Path) -> dict[str, int]:
    values = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        number = _integer(value)
        if number is not None:
            values[key] = number
    return values


def _rocm_smi_names() -> list[str]:
    path = shutil.which("rocm-smi")
    output = _run([path, "--showproductname", "--json"]) if path else None
    try:
        cards = json.loads(output) if output else {}
    except ValueError:
        return []
    names = []
    for key in sorted((k for k in cards if k.startswith("card")), key=lambda k: _integer(k[4:]) or 0):
        fields = {name.lower(): value for name, value in cards[key].items()}
        names.append(str(fields.get("card series") or fields.get("card model") or "AMD GPU"))
    return names


def apple_chip() -> AppleChip | None:
    """The Apple silicon chip this Mac has, also when Python runs under Rosetta; None elsewhere."""
    if sys.platform != "darwin" or _sysctl("hw.optional.arm64") != "1":
        return None
    version = tuple(_integer(part) or 0 for part in platform.mac_ver()[0].split(".") if part)
    return AppleChip(
        name=_sysctl("machdep.cpu.brand_string") or "Apple silicon",
        memory=_integer(_sysctl("hw.memsize")),
        macos=version,
        translated=_sysctl("sysctl.proc_translated") == "1",
    )


def host() -> Host:
    """The CPU and the memory this process may use."""
    total, available = _memory()
    return Host(
        cpu_name=_cpu_name(), cores=os.cpu_count() or 1, total_memory=total, available_memory=available
    )


def _cpu_name() -> str:
    if sys.platform == "darwin":
        name = _sysctl("machdep.cpu.brand_string")
        if name:
            return name
    for line in (_read(Path("/proc/cpuinfo")) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model") and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "CPU"


def _memory() -> tuple[int | None, int | None]:
    if sys.platform == "win32":
        return _windows_memory()
    if sys.platform == "darwin":
        return _integer(_sysctl("hw.memsize")), _mac_available_memory()
    meminfo = {}
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        key, _, value = line.partition(":")
        number = _integer(value.split()[0]) if value.split() else None
        if number is not None:
            meminfo[key] = number * 1024
    total = meminfo.get("MemTotal") or _sysconf_memory()
    available = meminfo.get("MemAvailable")
    limit, used = _cgroup_memory()
    if limit is not None:
        total = min(total, limit) if total else limit
        if used is not None:
            room = max(limit - used, 0)
            available = min(available, room) if available is not None else room
    return total, available


def _cgroup_memory() -> tuple[int | None, int | None]:
    """The cgroup v2 memory limit and use of this process (a container's limit); None: no limit."""
    relative = ""
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        if line.startswith("0::"):
            relative = line[3:].strip().lstrip("/")
    for folder in (Path("/sys/fs/cgroup") / relative, Path("/sys/fs/cgroup")):
        limit = _read(folder / "memory.max")
        if limit is not None:
            return _integer(limit), _integer(_read(folder / "memory.current"))
    return None, None


def _sysconf_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _mac_available_memory() -> int | None:
    output = _run(["vm_stat"])
    if output is None:
        return None
    page = re.search(r"page size of (\d+) bytes", output)
    pages = dict(re.findall(r"^Pages (free|inactive|speculative):\s+(\d+)", output, re.MULTILINE))
    if page is None or not pages:
        return None
    return int(page.group(1)) * sum(int(count) for count in pages.values())


def _windows_memory() -> tuple[int | None, int | None]:
    if sys.platform != "win32":
        return None, None
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return _sysconf_memory(), None
    return int(status.ullTotalPhys), int(status.ullAvailPhys)


def _sysctl(name: str) -> str | None:
    output = _run(["sysctl", "-n", name]) if shutil.which("sysctl") else None
    return output.strip() if output else None


def _run(argv: list[str]) -> str | None:
    """The stdout of a short query command; None (logged) when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning("%s failed: %s", argv[0], error)
        return None
    if done.returncode != 0:
        first = (done.stdout + done.stderr).strip().splitlines()
        logger.debug("%s exited with %d: %s", " ".join(argv), done.returncode, first[0] if first else "")
        return None
    return done.stdout


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _integer(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None
