"""Finding an NVIDIA GPU, without requiring CuPy to be installed (see rtxrt.jit.device)."""
from __future__ import annotations

from ..jit.device import NoGpuError, describe_gpu


def find_gpu() -> str | None:
    """Name and compute capability of GPU 0 (e.g. "NVIDIA H100 (sm_90)"), or None when CuPy
    is missing, no driver is loaded or no device is present."""
    try:
        return describe_gpu(0)
    except NoGpuError:
        return None
