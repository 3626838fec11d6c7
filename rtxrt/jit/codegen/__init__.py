"""CUDA C++ generation for IR nodes: each module turns one node kind, with its concrete
shapes and dtypes, into a ``KernelSource`` that ``rtxrt.jit.nvrtc`` compiles.

A node the generators cannot handle raises ``CodegenError``; the runtime then runs that
node with the reference backend instead.
"""
from __future__ import annotations

from ...errors import RtxrtError


class CodegenError(RtxrtError):
    """No kernel can be generated for this node (an op, attribute or dtype the generator
    does not cover); the message names it."""


from .elementwise import elementwise_kernel
from .kernel_source import KernelArg, KernelSource, LaunchPolicy

__all__ = ["CodegenError", "KernelArg", "KernelSource", "LaunchPolicy", "elementwise_kernel"]
