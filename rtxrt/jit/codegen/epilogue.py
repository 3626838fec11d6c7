"""Fused epilogue activations for generated kernels (GEMM, conv): the names and parameters of
rtxrt/ir/activations.py as fp32 CUDA expressions, matching the reference backend's epilogue."""
from __future__ import annotations

import math

from ...ir.dtypes import DType
from . import CodegenError
from . import ctypes_map as C

F32 = DType.FLOAT32

# Activations built on libm functions are called rather than inlined: inlined at each of the
# up to 256 outputs a thread writes, they would multiply the code (and NVRTC's time) by 3.
CALLED_ACTIVATIONS = frozenset({"sigmoid", "tanh", "silu", "gelu", "gelu_tanh"})


def activation_expr(name: str, q: dict) -> str:
    """The body of ``float rtx_act(float x)``: the activation in fp32, as the reference's
    epilogue computes it (NaN-propagating max/min as numpy's maximum/minimum)."""
    def lit(value: float) -> str:
        return C.literal(value, F32)

    one, zero, half = lit(1.0), lit(0.0), lit(0.5)

    def hard_sigmoid(alpha: float, beta: float) -> str:
        return f"rtx_min(rtx_max({lit(alpha)} * x + {lit(beta)}, {zero}), {one})"

    sigmoid = f"({one} / ({one} + expf(-x)))"
    if name == "none":
        return "x"
    if name == "relu":
        return f"rtx_max(x, {zero})"
    if name == "leaky_relu":
        return f"(x < {zero} ? x * {lit(q['alpha'])} : x)"
    if name == "clip":
        return f"rtx_min(rtx_max(x, {lit(q['min'])}), {lit(q['max'])})"
    if name == "sigmoid":
        return sigmoid
    if name == "tanh":
        return "tanhf(x)"
    if name == "hard_sigmoid":
        return hard_sigmoid(q["alpha"], q["beta"])
    if name == "hard_swish":
        return f"(x * {hard_sigmoid(1 / 6, 0.5)})"
    if name == "silu":
        return f"(x * {sigmoid})"
    if name == "gelu":  # 1 + erf(t) as erfc(-t): accurate where erf(t) nears -1
        return f"({half} * x * erfcf(-(x / {lit(math.sqrt(2))})))"
    if name == "gelu_tanh":
        inner = f"{lit(math.sqrt(2 / math.pi))} * (x + {lit(0.044715)} * (x * x * x))"
        return f"({half} * x * ({one} + tanhf({inner})))"
    raise CodegenError(f"no fused activation {name!r}")  # pragma: no cover
