"""Finding an NVIDIA GPU, without requiring CuPy to be installed."""
from __future__ import annotations


def find_gpu() -> str | None:
    """Name and compute capability of GPU 0 (e.g. "NVIDIA H100 (sm_90)"), or None when CuPy
    is missing, no driver is loaded or no device is present."""
    try:
        import cupy
        from cupy.cuda import runtime

        if runtime.getDeviceCount() < 1:
            return None
        props = runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"{name} (sm_{props['major']}{props['minor']})"
    except Exception:  # ImportError, CUDARuntimeError (no driver), ...
        return None
