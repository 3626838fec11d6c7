"""rtxrt::FusedConv and rtxrt::FusedMatMul: a Conv or a matrix product, then the epilogue
(bias, activation, residual) of rtxrt.ir.ops.fused. The epilogue runs in the accumulation type
(float32 for narrow floats) and the result is rounded once."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ....ir.activations import activation_params
from ..kernel import OpRun
from .activations import hard_sigmoid, sigmoid
from .conv import Conv
from .reduce import widened
from .unary import erf

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)

# rtxrt.ir.activations.ACTIVATIONS by name; parameters come as keywords.
_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "none": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x, alpha: np.where(x < 0, x * alpha, x),
    "clip": lambda x, **bounds: np.minimum(np.maximum(x, bounds["min"]), bounds["max"]),
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "hard_sigmoid": hard_sigmoid,
    "hard_swish": lambda x: x * hard_sigmoid(x, 1 / 6, 0.5),
    "silu": lambda x: x * sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
}


def epilogue(kernel: OpRun, acc: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """The node's activation applied to ``acc`` (bias already added), with the residual ``z``
    added before or after it as the node's ``residual`` attribute says."""
    name = kernel.attr("activation", "none")
    params = activation_params(name, kernel.attr("activation_params", []))
    residual = kernel.attr("residual", "none")
    y = widened(acc)
    if residual == "before_activation":
        y = y + widened(z)
    with np.errstate(all="ignore"):  # overflow to inf is a result here, as in the ONNX ops
        y = _FUNCTIONS[name](y, **params)
    if residual == "after_activation":
        y = y + widened(z)
    return np.asarray(y)


class FusedConv(Conv):
    domain = "rtxrt"

    def run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, z: np.ndarray | None = None) -> np.ndarray:
        return epilogue(self, super().run(x, w, b), z).astype(x.dtype, copy=False)


class FusedMatMul(OpRun):
    domain = "rtxrt"

    def run(
        self, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, z: np.ndarray | None = None
    ) -> np.ndarray:
        wb = widened(b)
        if self.attr("trans_b", 0):
            wb = wb.swapaxes(-1, -2)
        acc = np.matmul(widened(a), wb)
        alpha = self.attr("alpha", 1.0)
        if alpha != 1:
            acc = alpha * acc
        if bias is not None:
            acc = acc + widened(bias)
        return epilogue(self, acc, z).astype(a.dtype, copy=False)
