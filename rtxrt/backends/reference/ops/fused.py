"""rtxrt::FusedConv and rtxrt::FusedMatMul: a Conv or a matrix product, then the epilogue
(bias, activation, residual) of rtxrt.ir.ops.fused. The epilogue runs in the accumulation type
(float32 for narrow floats) and the result is rounded once."""
from __future__ import annotations

import numpy as np

from ....ir.activations import activation_params, get_activation
from ..activation_numpy import evaluate
from ..kernel import OpRun
from .conv import Conv
from .reduce import widened


def epilogue(kernel: OpRun, acc: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """The node's activation applied to ``acc`` (bias already added), with the residual ``z``
    added before or after it as the node's ``residual`` attribute says."""
    name = kernel.attr("activation", "none")
    params = activation_params(name, kernel.attr("activation_params", []))
    residual = kernel.attr("residual", "none")
    y = widened(acc)
    if residual == "before_activation":
        y = y + widened(z)
    y = evaluate(get_activation(name), y, params)
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
