"""The devices this machine can train on, whether the installed torch build can use each, and the local
batch size that fits. Nothing here imports torch: the tray and the CLI ask before any worker exists.

GPU indexes follow NVML's (PCI bus) order; a worker that starts torch must set
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (see :data:`TORCH_ENVIRONMENT`) so that ``cuda:N`` names the same GPU.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from hiveling.core.machine import hardware
from hiveling.core.machine.hardware import AppleChip, Gpu, Host
from hiveling.core.recipes import Needs

logger = logging.getLogger(__name__)

# What a worker sets before importing torch, so torch numbers GPUs as detect_devices() does.
TORCH_ENVIRONMENT = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
WHEELS = "https://download.pytorch.org/whl/"
ROCM_WHEELS = "rocm6.4"
MEMORY_SHARE = 0.8  # of free memory a batch may plan on; the rest absorbs allocator overhead
GIB = 2**30

# Messages torch raises when an allocation fails, across its backends and versions.
OOM_MESSAGES = (
    "cuda out of memory",
    "cuda error: out of memory",
    "hip out of memory",
    "hiperroroutofmemory",
    "mps backend out of memory",
    "cublas_status_alloc_failed",
    "defaultcpuallocator: can't allocate memory",
    "defaultcpuallocator: not enough memory",
)


class DeviceError(Exception):
    """A device that cannot be used or a batch that does not fit; the message says what to do."""


@dataclass(frozen=True)
class TorchBuild:
    version: str | None  # None: torch is not installed
    cuda: str | None  # the CUDA version the build targets, "12.4"
    hip: str | None  # the HIP version of a ROCm build


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" | "rocm" | "mps" | "cpu"
    index: int  # torch's numbering among the GPUs it sees
    name: str
    total_memory: int | None  # bytes
    free_memory: int | None
    driver: str | None
    compute_capability: str | None  # "8.6"; the gfx target for AMD, "gfx1100"
    usable: bool
    reason: str | None  # why not usable: one line that ends with the fix
    driver_cuda: str | None = None  # the newest CUDA the NVIDIA driver supports, "12.2"

    @property
    def torch_device(self) -> str:
        if self.kind in ("cuda", "rocm"):
            return f"cuda:{self.index}"  # torch's ROCm builds also call their GPUs cuda
        return self.kind

    @property
    def label(self) -> str:
        if self.total_memory is None:
            return self.name
        size = _gib(self.total_memory)
        if self.kind == "cpu":
            return f"{self.name} ({size} RAM)"
        if self.kind == "mps":
            return f"{self.name} GPU ({size} shared)"
        return f"{self.name} ({size})"


def torch_build() -> TorchBuild:
    """The installed torch build, read from ``torch/version.py`` without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return TorchBuild(version=None, cuda=None, hip=None)
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        values = _string_constants(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as error:
        logger.warning("Cannot read the torch build from %s (%s)", path, error)
        values = {}
    version = values.get("__version__") or _distribution_version()
    return TorchBuild(version=version, cuda=values.get("cuda"), hip=values.get("hip"))


def _string_constants(source: str) -> dict[str, str | None]:
    """The module-level ``name = "text"`` and ``name = None`` assignments of a Python source."""
    values: dict[str, str | None] = {}
    for statement in ast.parse(source).body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign):
            target, value = statement.target, statement.value
        constant = value.value if isinstance(value, ast.Constant) else ...
        if isinstance(target, ast.Name) and (constant is None or isinstance(constant, str)):
            values[target.id] = constant
    return values


def _distribution_version() -> str:
    try:
        return installed_version("torch")
    except PackageNotFoundError:
        return "unknown"


def detect_devices(*, build: TorchBuild | None = None) -> list[Device]:
    """Every device found, GPUs first (NVIDIA, AMD, Apple), the CPU always last."""
    build = build or torch_build()
    devices: list[Device] = []
    nvidia = _visible(hardware.nvidia_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    for index, gpu in enumerate(nvidia):
        devices.append(_gpu_device("cuda", index, gpu, _cuda_problem(build, gpu)))
    amd_filter = os.environ.get("HIP_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    for index, gpu in enumerate(_visible(hardware.amd_gpus(), amd_filter)):
        devices.append(_gpu_device("rocm", index, gpu, _rocm_problem(build, gpu)))
    chip = hardware.apple_chip()
    machine = hardware.host()
    if chip is not None:
        devices.append(_mps_device(chip, machine, _mps_problem(build, chip)))
    devices.append(_cpu_device(machine, build))
    return devices


def _visible(gpus: list[Gpu], selection: str | None) -> list[Gpu]:
    """The GPUs a ``CUDA_VISIBLE_DEVICES``-style list leaves, in its order (it ends at an unknown entry)."""
    if selection is None:
        return gpus
    chosen: list[Gpu] = []
    for entry in (part.strip() for part in selection.split(",")):
        matches = [
            gpu
            for gpu in gpus
            if (entry.isdigit() and gpu.index == int(entry))
            or (entry.startswith("GPU-") and gpu.uuid is not None and gpu.uuid.startswith(entry))
        ]
        if len(matches) != 1 or matches[0] in chosen:
            break
        chosen.append(matches[0])
    if len(chosen) < len(gpus):
        logger.info("%d of %d GPUs are visible (selection %r)", len(chosen), len(gpus), selection)
    return chosen


def _gpu_device(kind: str, index: int, gpu: Gpu, problem: str | None) -> Device:
    return Device(
        kind=kind,
        index=index,
        name=gpu.name,
        total_memory=gpu.total_memory,
        free_memory=gpu.free_memory,
        driver=gpu.driver,
        compute_capability=gpu.capability,
        usable=problem is None,
        reason=problem,
        driver_cuda=gpu.cuda_version,
    )


def _mps_device(chip: AppleChip, machine: Host, problem: str | None) -> Device:
    return Device(
        kind="mps",
        index=0,
        name=chip.name,
        total_memory=chip.memory,
        free_memory=machine.available_memory,  # memory is unified: the GPU gets what the system has free
        driver=None,
        compute_capability=None,
        usable=problem is None,
        reason=problem,
    )


def _cpu_device(machine: Host, build: TorchBuild) -> Device:
    problem = None if build.version else "torch is not installed; install it: pip install torch"
    return Device(
        kind="cpu",
        index=0,
        name=machine.cpu_name,
        total_memory=machine.total_memory,
        free_memory=machine.available_memory,
        driver=None,
        compute_capability=None,
        usable=problem is None,
        reason=problem,
    )


def _cuda_problem(build: TorchBuild, gpu: Gpu) -> str | None:
    """Why this torch build cannot use this NVIDIA GPU (ending with the fix), or None when it can."""
    wheels = _cuda_wheels(gpu)
    if build.version is None:
        return f"torch is not installed; install the CUDA build: {_install(wheels, build)}"
    if build.cuda is None:
        kind = "for AMD ROCm" if build.hip else "CPU-only"
        return (
            f"this torch build ({build.version}) is {kind}; install the CUDA build: {_install(wheels, build)}"
        )
    needed = _numbers(build.cuda)
    supported = _numbers(gpu.cuda_version)
    # Within one CUDA major version a newer build runs on an older driver (minor version
    # compatibility); across major versions it does not start at all.
    if needed and supported and supported[0] < needed[0]:
        fix = "update the NVIDIA driver"
        if supported[0] >= 11:
            fix += f", or install a torch build for CUDA {supported[0]}: {_install(wheels, build)}"
        driver = f"the NVIDIA driver {gpu.driver}" if gpu.driver else "the NVIDIA driver"
        return (
            f"{driver} supports CUDA up to {gpu.cuda_version}, but this torch build ({build.version}) "
            f"needs CUDA {build.cuda}; {fix}"
        )
    capability = _numbers(gpu.capability)
    if capability and needed:
        lowest = _lowest_capability(build)
        if capability < lowest:
            fix = (
                f"install the CUDA 12.6 build: {_install('cu126', build)}"
                if capability >= (5, 0) and lowest > (5, 0)
                else "this GPU is too old for current torch builds; train on the CPU"
            )
            return (
                f"{gpu.name} has compute capability {gpu.capability}, below the "
                f"{'.'.join(map(str, lowest))} this torch build ({build.version}) supports; {fix}"
            )
        if capability >= (10, 0) and needed < (12, 8):
            return (
                f"{gpu.name} (compute capability {gpu.capability}) needs a torch build for CUDA 12.8 or "
                f"newer, this one ({build.version}) is for CUDA {build.cuda}; install it: "
                f"{_install(wheels, build)}"
            )
    return None


def _lowest_capability(build: TorchBuild) -> tuple[int, ...]:
    """The oldest GPU generation PyTorch's published wheels of this build compile for.

    From PyTorch's CUDA support matrix (RELEASE.md): CUDA 13 cannot target anything before Turing (7.5);
    the 12.8/12.9 wheels dropped Maxwell and Pascal in torch 2.8; 12.0-12.6 wheels start at Maxwell.
    Where unsure this errs low: a missed warning ends in torch's own error, a false one blocks a GPU.
    """
    cuda = _numbers(build.cuda) or (0,)
    torch = _numbers(build.version) or (0,)
    if cuda >= (13,):
        return (7, 5)
    if cuda >= (12, 8):
        return (7, 0) if torch >= (2, 8) else (5, 0)
    if cuda >= (12,):
        return (5, 0)
    return (3, 7)


def _cuda_wheels(gpu: Gpu) -> str:
    """The PyTorch wheel index (``cu126``) that suits this GPU and its driver."""
    supported = _numbers(gpu.cuda_version)
    capability = _numbers(gpu.capability)
    if supported is not None and supported < (12,):
        return "cu118"
    if capability is not None and capability < (7, 5):
        return "cu126"  # the last builds for Maxwell, Pascal and Volta
    if supported is not None and supported >= (13,):
        return "cu130"
    if capability is not None and capability >= (10, 0):
        return "cu128"  # the first builds for Blackwell
    return "cu126"


def _rocm_problem(build: TorchBuild, gpu: Gpu) -> str | None:
    if build.version is None:
        return f"torch is not installed; install the ROCm build: {_install(ROCM_WHEELS, build)}"
    if build.hip is None:
        kind = "for NVIDIA CUDA" if build.cuda else "CPU-only"
        return (
            f"this torch build ({build.version}) is {kind}; install the ROCm build: "
            f"{_install(ROCM_WHEELS, build)}"
        )
    return None


def _mps_problem(build: TorchBuild, chip: AppleChip) -> str | None:
    if chip.translated:
        return (
            "this Python runs under Rosetta (as an Intel Mac), which cannot use the Apple GPU; "
            "install an arm64 Python (python.org or Homebrew) and Hiveling in it"
        )
    if chip.macos and chip.macos < (12, 3):
        return "the Apple GPU needs macOS 12.3 or newer; update macOS"
    if build.version is None:
        return "torch is not installed; install it: pip install torch"
    if (_numbers(build.version) or (0,)) < (1, 12):
        return f"torch {build.version} predates Apple GPU support; upgrade it: pip install --upgrade torch"
    return None


def _install(wheels: str, build: TorchBuild) -> str:
    command = f"pip install torch --index-url {WHEELS}{wheels}"
    # pip keeps an installed torch of the same version, whatever its build: remove it first.
    return command if build.version is None else f"pip uninstall -y torch && {command}"


def _numbers(text: str | None) -> tuple[int, ...] | None:
    """The leading dotted numbers of a version: "2.5.1+cu121" -> (2, 5, 1); None when there are none."""
    match = re.match(r"\d+(?:\.\d+)*", text or "")
    return tuple(int(part) for part in match.group(0).split(".")) if match else None


def choose_device(devices: Sequence[Device], preference: str = "auto") -> Device:
    """The device to train on.

    ``"auto"``: the usable GPU with the most free memory, else the CPU; ``"gpu"`` or ``"cuda"``: the
    best usable GPU; otherwise the device whose torch name (``"cuda:1"``, ``"mps"``, ``"cpu"``) matches.
    """
    wanted = (preference or "auto").strip().lower()
    usable = [device for device in devices if device.usable]
    if wanted in ("auto", "gpu", "cuda"):
        kinds = ("cuda", "rocm") if wanted == "cuda" else ("cuda", "rocm", "mps")
        gpus = [device for device in usable if device.kind in kinds]
        if gpus:
            return max(gpus, key=_room)
        if wanted == "auto" and any(device.kind == "cpu" for device in usable):
            return next(device for device in usable if device.kind == "cpu")
        if wanted == "auto":
            raise DeviceError(f"no device can train here: {_reasons(devices)}")
        found = [device for device in devices if device.kind in kinds]
        if not found:
            raise DeviceError(f"no GPU was found on this computer; choose one of: {_choices(devices)}")
        raise DeviceError(f"no GPU here can be used: {_reasons(found)}; choose one of: {_choices(devices)}")
    matches = [device for device in devices if device.torch_device == wanted]
    for device in matches:
        if device.usable:
            return device
    if not matches:
        raise DeviceError(f"device {preference!r} does not exist here; choose one of: {_choices(devices)}")
    device = matches[0]
    raise DeviceError(
        f"device {wanted} ({device.label}) cannot be used: {device.reason}; "
        f"or choose one of: {_choices(devices)}"
    )


def _room(device: Device) -> int:
    if device.free_memory is not None:
        return device.free_memory
    return device.total_memory or 0


def _choices(devices: Sequence[Device]) -> str:
    usable = [device.torch_device for device in devices if device.usable]
    return ", ".join(["auto", *usable]) if usable else "none (install torch first)"


def _reasons(devices: Sequence[Device]) -> str:
    return "; ".join(f"{device.torch_device}: {device.reason}" for device in devices if not device.usable)


def fit_batch_size(needs: Needs, device: Device, memory_cap: int | None = None) -> int:
    """The largest power-of-two local batch (up to 4x the recipe's default) that fits the device.

    A batch may plan on 80% of the device's free memory (of available RAM for the CPU), and on no more
    than ``memory_cap`` bytes. Raises DeviceError when even the recipe's minimum batch does not fit.
    """
    memory = device.free_memory if device.free_memory is not None else device.total_memory
    if memory_cap is not None:
        memory = memory_cap if memory is None else min(memory, memory_cap)
    if memory is None:
        logger.warning("The free memory of %s is unknown; using the recipe's default batch", device.label)
        return max(needs.default_batch_size, needs.min_batch_size)
    budget = int(memory * MEMORY_SHARE)
    for batch_size in _powers_of_two(needs.default_batch_size * 4, needs.min_batch_size):
        if needs.memory_for(batch_size) <= budget:
            return batch_size
    if needs.memory_for(needs.min_batch_size) <= budget:
        return needs.min_batch_size
    capped = memory_cap is not None and memory == memory_cap and memory != device.free_memory
    share = f"the {_gib(memory)} memory cap" if capped else f"{_gib(memory)} free"
    fix = "raise the memory cap" if capped else "close programs that use its memory"
    raise DeviceError(
        f"this recipe needs {_gib(needs.memory_for(needs.min_batch_size))} even at batch size "
        f"{needs.min_batch_size}, but {device.torch_device} ({device.label}) has {_gib(budget)} to spare "
        f"(80% of {share}); {fix} or choose another device"
    )


def _powers_of_two(highest: int, lowest: int) -> Iterator[int]:
    """Powers of two from the largest <= ``highest`` down to ``lowest``."""
    batch_size = 1 << max(highest, 1).bit_length() - 1
    while batch_size >= max(lowest, 1):
        yield batch_size
        batch_size //= 2


def reduce_after_oom(batch_size: int, needs: Needs) -> int | None:
    """The batch size to retry with after running out of memory: half, not below the recipe's minimum;
    None when the batch is already at the minimum."""
    if batch_size <= needs.min_batch_size:
        return None
    return max(batch_size // 2, needs.min_batch_size)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is an allocation failure on any torch device."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if any(cls.__name__ == "OutOfMemoryError" for cls in type(current).__mro__):
            return True  # torch.OutOfMemoryError, alias torch.cuda.OutOfMemoryError
        message = str(current).lower()
        if any(pattern in message for pattern in OOM_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def describe(devices: Sequence[Device]) -> str:
    """A table of the devices for people (``hiveling devices``)."""
    rows = [("DEVICE", "NAME", "MEMORY FREE/TOTAL", "DRIVER", "CAPABILITY", "USABLE")]
    for device in devices:
        driver = device.driver or "-"
        if device.driver_cuda:
            driver += f" (CUDA {device.driver_cuda})"
        rows.append(
            (
                device.torch_device,
                device.name,
                _memory(device),
                driver,
                device.compute_capability or "-",
                "yes" if device.usable else f"no: {device.reason}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = ("  ".join([*(row[i].ljust(width) for i, width in enumerate(widths)), row[-1]]) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _memory(device: Device) -> str:
    total = device.total_memory
    free = device.free_memory
    if total is None:
        return "-" if free is None else f"{_gib(free)} free"
    if free is None:
        return f"? / {_gib(total)}"
    return f"{free / GIB:.1f} / {_gib(total)}"


def to_json(devices: Sequence[Device]) -> list[dict[str, Any]]:
    """The devices as JSON objects: every field, plus ``torch_device`` and ``label``."""
    return [
        {**dataclasses.asdict(device), "torch_device": device.torch_device, "label": device.label}
        for device in devices
    ]


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"
