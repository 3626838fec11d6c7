"""Device probe: what GPU the JIT specializes for, and which NVRTC arch it compiles to.

Everything goes through CuPy, imported here only, so that ``import rtxrt`` works without it.
A machine without CuPy, driver or device gets ``NoGpuError``; a GPU below compute capability
7.5 (Turing) gets ``UnsupportedGpuError``. Both say what to do about it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import RtxrtError

MIN_COMPUTE_CAPABILITY = (7, 5)
# The archs CI compiles every generated kernel for, and that ``--precompile`` offers.
SUPPORTED_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_120")
INSTALL_HINT = "pip install 'rtxrt[cuda12]'"


class NoGpuError(RtxrtError):
    """No usable NVIDIA GPU: CuPy is missing, no driver is loaded or no device is present."""


class UnsupportedGpuError(RtxrtError):
    """The GPU is older than rtxrt supports, or newer than this NVRTC can compile for."""


@dataclass(frozen=True)
class DeviceInfo:
    """One GPU as the JIT sees it. Versions are "major.minor" strings (the runtime cache keys
    on them); ``arch`` is the NVRTC target for this GPU (see ``target_arch``)."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    arch: str
    sm_count: int
    total_memory: int  # bytes
    driver_version: str  # the highest CUDA version the driver supports, e.g. "12.8"
    runtime_version: str  # the CUDA runtime CuPy was built against
    nvrtc_version: str

    def describe(self) -> str:
        """E.g. "NVIDIA H100 80GB HBM3 (sm_90)": the name and the compute capability."""
        major, minor = self.compute_capability
        return f"{self.name} (sm_{major}{minor})"


def probe(device: int = 0) -> DeviceInfo:
    """Describe GPU ``device`` for the JIT. NoGpuError without CuPy, driver or device,
    UnsupportedGpuError below CC 7.5, NvrtcNotFoundError without NVRTC."""
    runtime, props = _properties(device)
    name = _text(props["name"])
    cc = (int(props["major"]), int(props["minor"]))
    check_compute_capability(name, cc)
    from .compile.nvrtc import nvrtc_version, supported_archs

    return DeviceInfo(
        index=device,
        name=name,
        compute_capability=cc,
        arch=target_arch(cc, supported_archs(), name),
        sm_count=int(props["multiProcessorCount"]),
        total_memory=int(props["totalGlobalMem"]),
        driver_version=_cuda_version(runtime.driverGetVersion()),
        runtime_version=_cuda_version(runtime.runtimeGetVersion()),
        nvrtc_version="{}.{}".format(*nvrtc_version()),
    )


def describe_gpu(device: int = 0) -> str:
    """Name and compute capability of GPU ``device`` ("NVIDIA H100 (sm_90)"), whether or not
    rtxrt supports it and without NVRTC; NoGpuError when there is none."""
    _, props = _properties(device)
    return f"{_text(props['name'])} (sm_{int(props['major'])}{int(props['minor'])})"


def check_compute_capability(name: str, cc: tuple[int, int]) -> None:
    if tuple(cc) < MIN_COMPUTE_CAPABILITY:
        raise UnsupportedGpuError(
            f"{name} has compute capability {cc[0]}.{cc[1]}; "
            "rtxrt needs compute capability 7.5 (Turing) or newer"
        )


def target_arch(cc: tuple[int, int], nvrtc_archs: Sequence[int], name: str = "this GPU") -> str:
    """The arch NVRTC should compile for on a GPU of compute capability ``cc``.

    The GPU's own arch when NVRTC knows it (8.7 -> sm_87); otherwise the highest arch NVRTC
    knows of the same major version and no higher minor, because a cubin runs on GPUs of its
    major version with an equal or higher minor only (8.7 -> sm_86 where sm_87 is unknown;
    never sm_90 cubins on a 12.x GPU). ``nvrtc_archs`` are NVRTC's targets as integers (86).
    """
    check_compute_capability(name, cc)
    major, minor = cc
    own = major * 10 + minor
    if own in nvrtc_archs:
        return f"sm_{own}"
    lower = [a for a in nvrtc_archs if a // 10 == major and a % 10 <= minor]
    if lower:
        return f"sm_{max(lower)}"
    raise UnsupportedGpuError(
        f"{name} has compute capability {major}.{minor}, which this NVRTC cannot compile for "
        f"(it knows sm_{min(nvrtc_archs)} to sm_{max(nvrtc_archs)}); update it: "
        "pip install -U nvidia-cuda-nvrtc-cu12"
    )


def _properties(device: int) -> tuple[Any, dict[str, Any]]:
    """CuPy's runtime module and the properties of GPU ``device``."""
    runtime = _cuda_runtime()
    try:
        count = runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or one too old for CuPy's runtime
        raise NoGpuError(f"no usable NVIDIA driver ({exc}); install or update the NVIDIA driver") from exc
    if count < 1:
        raise NoGpuError("no NVIDIA GPU found (the driver reports 0 devices)")
    if not 0 <= device < count:
        raise NoGpuError(f"no GPU {device}: this machine has {count} (0 to {count - 1})")
    try:
        return runtime, runtime.getDeviceProperties(device)
    except Exception as exc:
        raise NoGpuError(f"GPU {device} does not answer ({exc})") from exc


def _cuda_runtime() -> Any:
    try:
        from cupy.cuda import runtime
    except ModuleNotFoundError as exc:
        raise NoGpuError(f"CuPy is not installed, so rtxrt cannot use a GPU: {INSTALL_HINT}") from exc
    except Exception as exc:  # installed but broken (a missing CUDA library, ...)
        raise NoGpuError(f"CuPy does not load ({exc}); reinstall it: {INSTALL_HINT}") from exc
    return runtime


def _cuda_version(version: int) -> str:
    """CUDA's integer versions (12080) as "12.8"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def find_gpu() -> str | None:
    """Name and compute capability of GPU 0 (e.g. "NVIDIA H100 (sm_90)"), or None when CuPy
    is missing, no driver is loaded or no device is present."""
    try:
        return describe_gpu(0)
    except NoGpuError:
        return None
