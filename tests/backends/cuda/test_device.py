"""The device probe without a GPU: clear errors for no CuPy, no driver, no device and GPUs
below compute capability 7.5, the arch NVRTC targets for each compute capability, and
find_gpu's contract. CuPy's runtime is replaced by a fake, so this runs anywhere."""
from __future__ import annotations

import sys

import pytest

from rtxrt.errors import RtxrtError
from rtxrt.backends.cuda import device as device_module
from rtxrt.backends.cuda.device import (
    SUPPORTED_ARCHS,
    DeviceInfo,
    NoGpuError,
    UnsupportedGpuError,
    probe,
    target_arch,
)
from rtxrt.backends.cuda.device import find_gpu


class FakeRuntime:
    """The part of cupy.cuda.runtime the probe uses."""

    def __init__(self, devices=(), count_error: Exception | None = None):
        self.devices, self.count_error = list(devices), count_error

    def getDeviceCount(self) -> int:
        if self.count_error is not None:
            raise self.count_error
        return len(self.devices)

    def getDeviceProperties(self, index: int) -> dict:
        return self.devices[index]

    def driverGetVersion(self) -> int:
        return 12080

    def runtimeGetVersion(self) -> int:
        return 12090


def gpu(name: str, major: int, minor: int) -> dict:
    return {"name": name.encode(), "major": major, "minor": minor, "multiProcessorCount": 46,
            "totalGlobalMem": 8 * 2**30}


@pytest.fixture
def fake(monkeypatch):
    def install(runtime: FakeRuntime) -> None:
        monkeypatch.setattr(device_module, "_cuda_runtime", lambda: runtime)
    return install


def test_without_cupy_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setitem(sys.modules, "cupy.cuda", None)
    with pytest.raises(NoGpuError, match=r"CuPy is not installed.*pip install 'rtxrt\[cuda12\]'"):
        probe()
    assert find_gpu() is None


def test_without_a_driver_the_error_says_so(fake):
    fake(FakeRuntime(count_error=RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")))
    with pytest.raises(NoGpuError, match="no usable NVIDIA driver.*InsufficientDriver"):
        probe()
    assert find_gpu() is None


def test_without_a_device_the_error_says_so(fake):
    fake(FakeRuntime([]))
    with pytest.raises(NoGpuError, match="no NVIDIA GPU found"):
        probe()
    assert find_gpu() is None


def test_a_missing_device_index_names_the_ones_present(fake):
    fake(FakeRuntime([gpu("NVIDIA GeForce RTX 3070", 8, 6)]))
    with pytest.raises(NoGpuError, match="no GPU 1: this machine has 1"):
        probe(1)


@pytest.mark.parametrize("name, major, minor", [
    ("Tesla V100-SXM2-16GB", 7, 0), ("NVIDIA Jetson AGX Xavier", 7, 2), ("GeForce GTX 1080", 6, 1),
])
def test_gpus_before_turing_are_refused_by_name_and_compute_capability(fake, name, major, minor):
    fake(FakeRuntime([gpu(name, major, minor)]))
    with pytest.raises(UnsupportedGpuError) as info:
        probe()
    message = str(info.value)
    assert name in message and f"{major}.{minor}" in message
    assert "rtxrt needs compute capability 7.5 (Turing) or newer" in message
    assert isinstance(info.value, RtxrtError)
    assert find_gpu() == f"{name} (sm_{major}{minor})"  # found, though unsupported


def test_a_supported_gpu_is_described_fully(fake):
    fake(FakeRuntime([gpu("NVIDIA GeForce RTX 4090", 8, 9)]))
    info = probe()
    assert isinstance(info, DeviceInfo)
    assert (info.name, info.compute_capability, info.arch) == ("NVIDIA GeForce RTX 4090", (8, 9), "sm_89")
    assert (info.sm_count, info.total_memory) == (46, 8 * 2**30)
    assert (info.driver_version, info.runtime_version) == ("12.8", "12.9")
    major, minor = info.nvrtc_version.split(".")
    assert int(major) >= 12 and minor.isdigit()
    assert info.describe() == "NVIDIA GeForce RTX 4090 (sm_89)" == find_gpu()


NVRTC_12_9 = (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121)
NVRTC_12_0 = (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90)


@pytest.mark.parametrize("cc, archs, want", [
    ((7, 5), NVRTC_12_9, "sm_75"),    # Turing
    ((8, 0), NVRTC_12_9, "sm_80"),    # A100
    ((8, 6), NVRTC_12_9, "sm_86"),    # RTX 30
    ((8, 7), NVRTC_12_9, "sm_87"),    # Orin: its own arch where NVRTC knows it
    ((8, 7), (75, 80, 86, 89), "sm_86"),  # else the nearest lower one of its major version
    ((8, 9), NVRTC_12_9, "sm_89"),    # RTX 40
    ((9, 0), NVRTC_12_9, "sm_90"),    # H100, H200
    ((12, 0), NVRTC_12_9, "sm_120"),  # RTX 50
    ((12, 1), NVRTC_12_9, "sm_121"),
    ((12, 1), (90, 100, 120), "sm_120"),
    ((10, 3), (90, 100, 120), "sm_100"),
])
def test_target_arch_table(cc, archs, want):
    assert target_arch(cc, archs) == want


def test_a_gpu_newer_than_nvrtc_knows_asks_for_a_newer_nvrtc():
    # a 12.0 cubin cannot come from sm_90: cubins only run within their major version
    with pytest.raises(UnsupportedGpuError, match=r"12\.0.*cannot compile for.*nvidia-cuda-nvrtc"):
        target_arch((12, 0), NVRTC_12_0, "NVIDIA GeForce RTX 5090")


def test_target_arch_refuses_old_gpus_too():
    with pytest.raises(UnsupportedGpuError, match="7.5"):
        target_arch((7, 0), NVRTC_12_9)


def test_every_supported_arch_is_its_own_target():
    for arch in SUPPORTED_ARCHS:
        number = int(arch[3:])
        assert target_arch((number // 10, number % 10), NVRTC_12_9) == arch
