"""Device detection against a fake NVML library (built here with gcc), a fake nvidia-smi and a fake kfd
tree; the rules for usability, choice, batch size and out-of-memory on exact values.

Detection runs in a subprocess wherever PATH or LD_LIBRARY_PATH must differ, which also proves that it
never imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from ctypes.util import find_library
from pathlib import Path
from typing import Any

import pytest

from hiveling.core.machine.devices import (
    Device,
    DeviceError,
    TorchBuild,
    choose_device,
    describe,
    fit_batch_size,
    is_out_of_memory,
    reduce_after_oom,
    to_json,
    torch_build,
)
from hiveling.core.machine.hardware import AppleChip
from hiveling.core.recipes import Needs

FIXTURES = Path(__file__).parent.parent / "fixtures" / "devices"
GIB = 2**30
MIB = 2**20
INSTALL = "pip uninstall -y torch && pip install torch --index-url https://download.pytorch.org/whl/"
CU124 = {"version": "2.5.1+cu124", "cuda": "12.4", "hip": None}
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the fakes stand in for Linux drivers")

# Runs detection with the given torch build ("real": the installed one) and reports what it found.
RUNNER = """
import json, sys
from pathlib import Path
options = json.loads(sys.argv[1])
if options["block_nvml"]:
    sys.modules["pynvml"] = None  # as if nvidia-ml-py were not installed
if options["no_torch"]:
    sys.modules["torch"] = None  # as if torch were not installed
from hiveling.core.machine import devices, hardware
hardware.SYSFS = Path(options["sysfs"])
build = None if options["build"] == "real" else devices.TorchBuild(**options["build"])
found = devices.detect_devices(build=build)
try:
    choice = devices.choose_device(found).torch_device
except devices.DeviceError as error:
    choice = "error: " + str(error)
torch = sys.modules.get("torch") is not None
print(json.dumps({"devices": devices.to_json(found), "auto": choice, "torch": torch}))
"""


@pytest.fixture(scope="session")
def nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the fake libnvidia-ml.so.1, compiled from fixtures/devices/fake_nvml.c."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None or sys.platform != "linux":
        pytest.skip("building the fake NVML library needs Linux and a C compiler (gcc or cc)")
    folder = tmp_path_factory.mktemp("nvml")
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-o",
            str(folder / "libnvidia-ml.so.1"),
            str(FIXTURES / "fake_nvml.c"),
        ],
        check=True,
        timeout=60,
    )
    return folder


@pytest.fixture
def smi_dir(tmp_path: Path) -> Path:
    """A folder whose only program is the fake nvidia-smi."""
    folder = tmp_path / "smi"
    folder.mkdir()
    shutil.copy(FIXTURES / "nvidia-smi", folder / "nvidia-smi")
    (folder / "nvidia-smi").chmod(0o755)
    return folder


def detect(
    tmp_path: Path,
    *,
    build: dict[str, Any] | str = "real",
    path: Path | None = None,
    library: Path | None = None,
    block_nvml: bool = False,
    no_torch: bool = False,
    sysfs: Path | None = None,
    **env: str,
) -> dict[str, Any]:
    """Runs RUNNER in a fresh interpreter: PATH holds only ``path``, the loader searches ``library``."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "CUDA_", "HIP_", "ROCR_"))}
    base.update(PATH=str(path or empty), LD_LIBRARY_PATH=str(library or empty), **env)
    options = {
        "build": build,
        "block_nvml": block_nvml,
        "no_torch": no_torch,
        "sysfs": str(sysfs or empty),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(options)],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["torch"] is False, "detection imported torch"
    assert report["devices"][-1]["kind"] == "cpu"
    return report


def gpus(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [device for device in report["devices"] if device["kind"] != "cpu"]


RTX_3080 = {
    "kind": "cuda",
    "index": 0,
    "name": "NVIDIA GeForce RTX 3080",
    "total_memory": 10 * GIB,
    "free_memory": 9 * GIB,
    "driver": "550.54.14",
    "driver_cuda": "12.4",
    "compute_capability": "8.6",
    "usable": True,
    "reason": None,
    "torch_device": "cuda:0",
    "label": "NVIDIA GeForce RTX 3080 (10.0 GiB)",
}
P100 = {
    **RTX_3080,
    "index": 1,
    "name": "Tesla P100-PCIE-16GB",
    "total_memory": 16 * GIB,
    "free_memory": 15 * GIB,
    "compute_capability": "6.0",
    "torch_device": "cuda:1",
    "label": "Tesla P100-PCIE-16GB (16.0 GiB)",
}


@linux_only
def test_nvml_reports_every_field_of_each_gpu(tmp_path: Path, nvml_dir: Path) -> None:
    report = detect(tmp_path, build=CU124, library=nvml_dir)
    assert gpus(report) == [RTX_3080, P100]
    assert report["auto"] == "cuda:1"  # the most free memory


@linux_only
def test_the_cpu_only_torch_installed_here_reports_gpus_as_unusable(tmp_path: Path, nvml_dir: Path) -> None:
    installed = torch_build()
    assert installed.version is not None
    if installed.cuda is not None or installed.hip is not None:
        pytest.skip(f"torch {installed.version} here is a GPU build; this test is about a CPU-only one")
    report = detect(tmp_path, library=nvml_dir)
    reason = f"this torch build ({installed.version}) is CPU-only; install the CUDA build: {INSTALL}"
    assert gpus(report) == [
        {**RTX_3080, "usable": False, "reason": reason + "cu126"},
        {**P100, "usable": False, "reason": reason + "cu126"},
    ]
    cpu = report["devices"][-1]
    assert cpu["usable"] is True
    assert report["auto"] == "cpu"


@linux_only
def test_a_driver_older_than_the_builds_cuda_major_version_is_unusable(
    tmp_path: Path, nvml_dir: Path
) -> None:
    build = {"version": "2.5.1+cu121", "cuda": "12.1", "hip": None}
    report = detect(
        tmp_path, build=build, library=nvml_dir, FAKE_NVML_CUDA="11040", FAKE_NVML_DRIVER="470.82.01"
    )
    reason = (
        "the NVIDIA driver 470.82.01 supports CUDA up to 11.4, but this torch build (2.5.1+cu121) needs "
        f"CUDA 12.1; update the NVIDIA driver, or install a torch build for CUDA 11: {INSTALL}cu118"
    )
    assert [(d["driver"], d["driver_cuda"], d["usable"], d["reason"]) for d in gpus(report)] == [
        ("470.82.01", "11.4", False, reason)
    ] * 2


@linux_only
def test_a_gpu_older_than_the_build_supports_is_unusable(tmp_path: Path, nvml_dir: Path) -> None:
    build = {"version": "2.8.0+cu128", "cuda": "12.8", "hip": None}
    report = detect(tmp_path, build=build, library=nvml_dir, FAKE_NVML_CUDA="12080")
    rtx, p100 = gpus(report)
    assert rtx["usable"] is True
    assert p100["reason"] == (
        "Tesla P100-PCIE-16GB has compute capability 6.0, below the 7.0 this torch build (2.8.0+cu128) "
        f"supports; install the CUDA 12.6 build: {INSTALL}cu126"
    )
    assert report["auto"] == "cuda:0"


@linux_only
def test_a_query_the_driver_does_not_support_leaves_only_that_field_empty(
    tmp_path: Path, nvml_dir: Path
) -> None:
    report = detect(tmp_path, build=CU124, library=nvml_dir, FAKE_NVML_UNSUPPORTED="capability")
    assert gpus(report) == [
        {**RTX_3080, "compute_capability": None},
        {**P100, "compute_capability": None},
    ]


@linux_only
def test_cuda_visible_devices_selects_and_renumbers_like_torch(tmp_path: Path, nvml_dir: Path) -> None:
    report = detect(tmp_path, build=CU124, library=nvml_dir, CUDA_VISIBLE_DEVICES="GPU-aaaa,0,7,1")
    assert [(d["torch_device"], d["name"]) for d in gpus(report)] == [
        ("cuda:0", "Tesla P100-PCIE-16GB"),
        ("cuda:1", "NVIDIA GeForce RTX 3080"),
    ]  # the unknown 7 ends the list, as in CUDA
    assert gpus(detect(tmp_path, build=CU124, library=nvml_dir, CUDA_VISIBLE_DEVICES="")) == []


SMI_RTX_3080 = {**RTX_3080, "total_memory": 10240 * MIB, "free_memory": 9216 * MIB}
SMI_P100 = {**P100, "total_memory": 16384 * MIB, "free_memory": None}


@linux_only
def test_nvidia_smi_answers_when_nvml_fails(tmp_path: Path, nvml_dir: Path, smi_dir: Path) -> None:
    report = detect(tmp_path, build=CU124, library=nvml_dir, path=smi_dir, FAKE_NVML_INIT_ERROR="9")
    assert gpus(report) == [SMI_RTX_3080, SMI_P100]
    assert report["auto"] == "cuda:1"  # unknown free memory counts as the total


@linux_only
def test_nvidia_smi_answers_when_nvidia_ml_py_is_missing(tmp_path: Path, smi_dir: Path) -> None:
    report = detect(
        tmp_path, build=CU124, path=smi_dir, block_nvml=True, FAKE_SMI_GPUS="1", FAKE_SMI_CUDA="12.2"
    )
    assert gpus(report) == [{**SMI_RTX_3080, "driver_cuda": "12.2"}]  # 12.4 runs on a 12.2 driver


@linux_only
def test_nvidia_smi_answers_when_the_nvml_library_is_missing(tmp_path: Path, smi_dir: Path) -> None:
    if find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVML library")
    report = detect(tmp_path, build=CU124, path=smi_dir)
    assert gpus(report) == [SMI_RTX_3080, SMI_P100]


@linux_only
def test_an_nvidia_smi_too_old_for_compute_cap_still_lists_gpus(tmp_path: Path, smi_dir: Path) -> None:
    report = detect(tmp_path, build=CU124, path=smi_dir, block_nvml=True, FAKE_SMI_OLD="1")
    assert gpus(report) == [
        {**SMI_RTX_3080, "compute_capability": None},
        {**SMI_P100, "compute_capability": None},
    ]


@linux_only
def test_a_broken_driver_or_no_gpu_leaves_only_the_cpu(tmp_path: Path, smi_dir: Path) -> None:
    broken = detect(tmp_path, path=smi_dir, block_nvml=True, FAKE_SMI_BROKEN="1")
    nothing = detect(tmp_path, block_nvml=True)
    assert [d["kind"] for d in broken["devices"]] == ["cpu"]
    assert [d["kind"] for d in nothing["devices"]] == ["cpu"]
    cpu = nothing["devices"][0]
    assert cpu["name"]
    assert cpu["usable"] is True
    assert 0 < cpu["free_memory"] <= cpu["total_memory"]
    assert nothing["auto"] == "cpu"


@linux_only
def test_without_torch_nothing_is_usable_and_the_fix_installs_it(tmp_path: Path, nvml_dir: Path) -> None:
    report = detect(tmp_path, library=nvml_dir, no_torch=True, FAKE_NVML_GPUS="1")
    assert [(d["torch_device"], d["usable"], d["reason"]) for d in report["devices"]] == [
        (
            "cuda:0",
            False,
            "torch is not installed; install the CUDA build: "
            "pip install torch --index-url https://download.pytorch.org/whl/cu126",
        ),
        ("cpu", False, "torch is not installed; install it: pip install torch"),
    ]
    assert report["auto"] == (
        "error: no device can train here: cuda:0: torch is not installed; install the CUDA build: "
        "pip install torch --index-url https://download.pytorch.org/whl/cu126; "
        "cpu: torch is not installed; install it: pip install torch"
    )


def make_sysfs(root: Path) -> Path:
    """A sysfs with the amdgpu driver, a kfd topology of a CPU node and one gfx1100 GPU, its render node."""
    (root / "module" / "amdgpu").mkdir(parents=True)
    (root / "module" / "amdgpu" / "version").write_text("6.8.5\n")
    nodes = root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    (nodes / "0").mkdir(parents=True)
    (nodes / "0" / "properties").write_text("cpu_cores_count 16\nsimd_count 0\nvendor_id 0\n")
    (nodes / "1" / "mem_banks" / "0").mkdir(parents=True)
    (nodes / "1" / "properties").write_text(
        "cpu_cores_count 0\nsimd_count 192\nvendor_id 4098\ngfx_target_version 110000\ndrm_render_minor 128\n"
    )
    (nodes / "1" / "mem_banks" / "0" / "properties").write_text(f"heap_type 1\nsize_in_bytes {24 * GIB}\n")
    device = root / "class" / "drm" / "renderD128" / "device"
    device.mkdir(parents=True)
    (device / "product_name").write_text("Radeon RX 7900 XTX\n")
    (device / "mem_info_vram_total").write_text(f"{24 * GIB}\n")
    (device / "mem_info_vram_used").write_text(f"{2 * GIB}\n")
    return root


@linux_only
@pytest.mark.parametrize(
    ("build", "reason"),
    [
        ({"version": "2.5.1+rocm6.2", "cuda": None, "hip": "6.2.41133"}, None),
        (
            CU124,
            f"this torch build (2.5.1+cu124) is for NVIDIA CUDA; install the ROCm build: {INSTALL}rocm6.4",
        ),
    ],
)
def test_amd_gpus_come_from_the_kfd_topology(
    tmp_path: Path, build: dict[str, Any], reason: str | None
) -> None:
    report = detect(tmp_path, build=build, block_nvml=True, sysfs=make_sysfs(tmp_path / "sys"))
    assert gpus(report) == [
        {
            "kind": "rocm",
            "index": 0,
            "name": "Radeon RX 7900 XTX",
            "total_memory": 24 * GIB,
            "free_memory": 22 * GIB,
            "driver": "6.8.5",
            "driver_cuda": None,
            "compute_capability": "gfx1100",
            "usable": reason is None,
            "reason": reason,
            "torch_device": "cuda:0",
            "label": "Radeon RX 7900 XTX (24.0 GiB)",
        }
    ]


@linux_only
def test_amd_gpu_names_come_from_rocm_smi_when_sysfs_has_none(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path / "sys")
    (sysfs / "class" / "drm" / "renderD128" / "device" / "product_name").unlink()
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "rocm-smi").write_text(
        "#!/bin/sh\n"
        'echo \'{"card0": {"Card Series": "Radeon RX 7900 XTX", "Card Model": "0x744c", "GFX Version": '
        '"gfx1100"}}\'\n'
    )
    (tools / "rocm-smi").chmod(0o755)
    report = detect(tmp_path, block_nvml=True, sysfs=sysfs, path=tools)
    assert [(d["name"], d["compute_capability"]) for d in gpus(report)] == [("Radeon RX 7900 XTX", "gfx1100")]
    (tools / "rocm-smi").unlink()
    report = detect(tmp_path, block_nvml=True, sysfs=sysfs, path=tools)
    assert [d["name"] for d in gpus(report)] == ["AMD GPU gfx1100"]


def test_torch_build_reads_version_py_without_importing_torch(tmp_path: Path) -> None:
    package = tmp_path / "torch"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('a build must not be imported')\n")
    (package / "version.py").write_text(
        "from typing import Optional\n__version__ = '2.5.1+cu124'\ndebug = False\n"
        "cuda: Optional[str] = '12.4'\ngit_version = 'abc'\nhip: Optional[str] = None\n"
    )
    probe = (
        "import json; from hiveling.core.machine.devices import torch_build; "
        "print(json.dumps(vars(torch_build())))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == {"version": "2.5.1+cu124", "cuda": "12.4", "hip": None}


def test_torch_build_matches_what_the_installed_torch_reports() -> None:
    import torch

    assert torch_build() == TorchBuild(
        version=torch.__version__, cuda=torch.version.cuda, hip=torch.version.hip
    )


def device(
    kind: str, index: int = 0, free: int | None = 8 * GIB, usable: bool = True, **fields: Any
) -> Device:
    values: dict[str, Any] = {
        "kind": kind,
        "index": index,
        "name": {"cpu": "AMD Ryzen 7 5800X", "mps": "Apple M2"}.get(kind, f"GPU {index}"),
        "total_memory": 16 * GIB,
        "free_memory": free,
        "driver": None,
        "compute_capability": None,
        "usable": usable,
        "reason": None if usable else "this torch build (2.5.1+cpu) is CPU-only; install the CUDA build",
    }
    return Device(**{**values, **fields})


def test_auto_chooses_the_usable_gpu_with_the_most_free_memory() -> None:
    small, large, broken, cpu = (
        device("cuda", 0, free=4 * GIB),
        device("cuda", 1, free=12 * GIB),
        device("cuda", 2, free=15 * GIB, usable=False),
        device("cpu"),
    )
    assert choose_device([small, large, broken, cpu]) is large
    assert choose_device([small, device("cuda", 1, free=4 * GIB), cpu], "auto").index == 0  # ties: first
    assert choose_device([broken, cpu]) is cpu
    assert choose_device([device("mps"), cpu], "gpu").kind == "mps"
    assert choose_device([small, large, cpu], " CUDA:0 ") is small
    assert choose_device([small, large, cpu], "cpu") is cpu
    assert choose_device([device("rocm", 0), cpu], "cuda").kind == "rocm"


def test_a_preference_that_cannot_be_met_says_why_and_what_is_available() -> None:
    broken, cpu = device("cuda", 0, usable=False), device("cpu")
    with pytest.raises(DeviceError) as unusable:
        choose_device([broken, cpu], "cuda:0")
    assert str(unusable.value) == (
        "device cuda:0 (GPU 0 (16.0 GiB)) cannot be used: this torch build (2.5.1+cpu) is CPU-only; "
        "install the CUDA build; or choose one of: auto, cpu"
    )
    with pytest.raises(DeviceError) as missing:
        choose_device([broken, cpu], "cuda:3")
    assert str(missing.value) == "device 'cuda:3' does not exist here; choose one of: auto, cpu"
    with pytest.raises(DeviceError) as no_gpu:
        choose_device([cpu], "gpu")
    assert str(no_gpu.value) == "no GPU was found on this computer; choose one of: auto, cpu"
    with pytest.raises(DeviceError) as no_usable_gpu:
        choose_device([broken, cpu], "cuda")
    assert str(no_usable_gpu.value) == (
        "no GPU here can be used: cuda:0: this torch build (2.5.1+cpu) is CPU-only; install the CUDA build; "
        "choose one of: auto, cpu"
    )


NEEDS = Needs(parameters=10**8, base_bytes=GIB, bytes_per_sample=100 * MIB, default_batch_size=32)


def test_fit_batch_size_takes_the_largest_power_of_two_in_80_percent_of_free_memory() -> None:
    # 80% of 10 GiB = 8 GiB: 1 GiB + 64 * 100 MiB fits, 128 does not (and 4 * 32 = 128 is the ceiling).
    assert fit_batch_size(NEEDS, device("cuda", free=10 * GIB)) == 64
    assert fit_batch_size(NEEDS, device("cuda", free=100 * GIB)) == 128
    assert fit_batch_size(NEEDS, device("cuda", free=10 * GIB), memory_cap=5 * GIB) == 16  # 4 GiB: 30 fit
    assert fit_batch_size(NEEDS, device("cpu", free=None, total_memory=3 * GIB)) == 8  # 2.4 GiB: 14 fit
    assert fit_batch_size(NEEDS, device("cuda", free=None, total_memory=None)) == 32  # unknown: default
    odd_minimum = Needs(
        parameters=1, base_bytes=0, bytes_per_sample=GIB, default_batch_size=8, min_batch_size=3
    )
    assert fit_batch_size(odd_minimum, device("cuda", free=5 * GIB)) == 4
    assert fit_batch_size(odd_minimum, device("cuda", free=4 * GIB)) == 3  # 3.2 GiB: 4 does not fit, 3 does


def test_fit_batch_size_says_how_much_is_needed_when_nothing_fits() -> None:
    with pytest.raises(DeviceError) as free:
        fit_batch_size(NEEDS, device("cuda", free=GIB))
    assert str(free.value) == (
        "this recipe needs 1.1 GiB even at batch size 1, but cuda:0 (GPU 0 (16.0 GiB)) has 0.8 GiB to spare "
        "(80% of 1.0 GiB free); close programs that use its memory or choose another device"
    )
    with pytest.raises(DeviceError) as capped:
        fit_batch_size(NEEDS, device("cpu"), memory_cap=GIB)
    assert str(capped.value) == (
        "this recipe needs 1.1 GiB even at batch size 1, but cpu (AMD Ryzen 7 5800X (16.0 GiB RAM)) has "
        "0.8 GiB to spare (80% of the 1.0 GiB memory cap); raise the memory cap or choose another device"
    )


def test_reduce_after_oom_halves_down_to_the_minimum() -> None:
    needs = Needs(parameters=1, base_bytes=0, bytes_per_sample=1, default_batch_size=64, min_batch_size=3)
    assert reduce_after_oom(64, needs) == 32
    assert reduce_after_oom(5, needs) == 3
    assert reduce_after_oom(3, needs) is None
    assert reduce_after_oom(2, NEEDS) == 1
    assert reduce_after_oom(1, NEEDS) is None


def test_is_out_of_memory_recognizes_every_backends_allocation_failure() -> None:
    import torch

    with pytest.raises(RuntimeError) as real_cpu_failure:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(real_cpu_failure.value)
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    for message in (
        "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total capacity)",
        "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
        "HIP out of memory. Tried to allocate 1.00 GiB",
        "MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 MB)",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    ):
        assert is_out_of_memory(RuntimeError(message)), message
    assert is_out_of_memory(MemoryError())
    wrapped = ValueError("training step failed")
    wrapped.__cause__ = torch.cuda.OutOfMemoryError("CUDA out of memory")
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"))
    assert not is_out_of_memory(ValueError("memory cap must be positive"))


def test_mps_rules_from_the_chip_and_the_build() -> None:
    from hiveling.core.machine.devices import _mps_problem

    chip = AppleChip(name="Apple M2", memory=16 * GIB, macos=(14, 2), translated=False)
    build = TorchBuild(version="2.5.1", cuda=None, hip=None)
    assert _mps_problem(build, chip) is None
    assert _mps_problem(build, AppleChip("Apple M1", 8 * GIB, (12, 1), False)) == (
        "the Apple GPU needs macOS 12.3 or newer; update macOS"
    )
    assert "Rosetta" in str(_mps_problem(build, AppleChip("Apple M1", 8 * GIB, (14, 0), True)))
    assert device("mps").label == "Apple M2 GPU (16.0 GiB shared)"


@pytest.mark.parametrize(
    ("build", "driver_cuda", "capability", "reason"),
    [
        (("2.5.1+cu124", "12.4"), "12.0", "8.6", None),  # minor version compatibility
        (
            ("2.9.0+cu130", "13.0"),
            "13.0",
            "7.0",
            "below the 7.5 this torch build (2.9.0+cu130) supports; install the CUDA 12.6",
        ),
        (("2.5.1+cu124", "12.4"), "12.8", "12.0", f"install it: {INSTALL}cu128"),
        (("2.9.0+cu130", "13.0"), "12.9", "8.6", f"torch build for CUDA 12: {INSTALL}cu126"),
        (("2.5.1+cu124", "12.4"), "10.2", "7.5", "needs CUDA 12.4; update the NVIDIA driver"),
        (("1.13.1+cu117", "11.7"), "12.2", "3.5", "too old for current torch builds; train on the CPU"),
    ],
)
def test_cuda_usability_rules(
    build: tuple[str, str], driver_cuda: str, capability: str, reason: str | None
) -> None:
    from hiveling.core.machine.devices import _cuda_problem
    from hiveling.core.machine.hardware import Gpu

    gpu = Gpu("nvidia", 0, "GPU", None, GIB, GIB, "999.1", driver_cuda, capability)
    problem = _cuda_problem(TorchBuild(version=build[0], cuda=build[1], hip=None), gpu)
    if reason is None:
        assert problem is None
    else:
        assert reason in str(problem)


def test_describe_and_to_json() -> None:
    devices = [
        device("cuda", 0, driver="550.54.14", driver_cuda="12.4", compute_capability="8.6", usable=False),
        device("cpu", free=None),
    ]
    assert describe(devices) == "\n".join(
        [
            "DEVICE  NAME               MEMORY FREE/TOTAL  DRIVER                 CAPABILITY  USABLE",
            "cuda:0  GPU 0              8.0 / 16.0 GiB     550.54.14 (CUDA 12.4)  8.6         "
            "no: this torch build (2.5.1+cpu) is CPU-only; install the CUDA build",
            "cpu     AMD Ryzen 7 5800X  ? / 16.0 GiB       -                      -           yes",
        ]
    )
    assert to_json(devices)[1] == {
        "kind": "cpu",
        "index": 0,
        "name": "AMD Ryzen 7 5800X",
        "total_memory": 16 * GIB,
        "free_memory": None,
        "driver": None,
        "compute_capability": None,
        "usable": True,
        "reason": None,
        "driver_cuda": None,
        "torch_device": "cpu",
        "label": "AMD Ryzen 7 5800X (16.0 GiB RAM)",
    }
    json.dumps(to_json(devices))
