"""What every CUDA kernel generator shares: C types and conversions (ctypes_map), the
kernel's source, arguments and launch (kernel_source), the fused epilogue (epilogue) and
inline PTX (ptx). The generators themselves sit beside their lowerings in
``rtxrt.backends.cuda.ops``.

A node the generators cannot handle raises ``CodegenError``; the runtime then runs that
node with the reference backend instead.
"""
from __future__ import annotations

from ....errors import RtxrtError


class CodegenError(RtxrtError):
    """No kernel can be generated for this node (an op, attribute or dtype the generator
    does not cover); the message names it."""
