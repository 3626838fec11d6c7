"""rtxrt: an open two-stage (AOT + JIT) inference runtime for NVIDIA RTX GPUs."""
from __future__ import annotations

from .errors import (
    ExecutionError, FormatError, GraphError, InputError, ModelError, RtxrtError, UnsupportedOpError,
)
from .runtime import IOInfo, Session, is_cached
from .version import __version__

__all__ = [
    "__version__", "Session", "IOInfo", "is_cached", "RtxrtError", "ModelError", "UnsupportedOpError",
    "GraphError", "FormatError", "InputError", "ExecutionError", "refit",
]


def __getattr__(name: str):  # rtxrt.refit imports the AOT stage (and onnx) only when used
    if name == "refit":
        from .aot.refit import refit

        return refit
    raise AttributeError(f"module 'rtxrt' has no attribute {name!r}")
