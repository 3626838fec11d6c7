"""rtxrt: an open two-stage (AOT + JIT) inference runtime for NVIDIA RTX GPUs."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ExecutionError, FormatError, GraphError, InputError, ModelError, RtxrtError, UnsupportedOpError,
)
from .runtime import IOInfo, Session  # noqa: E402

__all__ = [
    "__version__", "Session", "IOInfo", "RtxrtError", "ModelError", "UnsupportedOpError",
    "GraphError", "FormatError", "InputError", "ExecutionError",
]
