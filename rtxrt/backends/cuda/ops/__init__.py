"""The GPU lowerings, one module per family of operators (each beside ``X_source.py``, the
generator of its kernels' CUDA source), registered in ``lowering.LOWERINGS``."""
from __future__ import annotations

from .context import LowerContext, Unsupported
from .lowering import find_lowering, lower

__all__ = ["LowerContext", "Unsupported", "find_lowering", "lower"]
