"""Linear algebra: MatMul, Gemm, Einsum, Det. Narrow floats accumulate in float32."""
from __future__ import annotations

import numpy as np

from ..kernel import OpRun
from .reduce import widened


class MatMul(OpRun):
    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(np.matmul(widened(a), widened(b))).astype(a.dtype, copy=False)


class Gemm(OpRun):
    """Y = alpha * A' @ B' + beta * C, with A' and B' optionally transposed and C broadcast."""

    def run(self, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        wa, wb = widened(a), widened(b)
        if self.attr("transA", 0):
            wa = wa.T
        if self.attr("transB", 0):
            wb = wb.T
        alpha, beta = self.attr("alpha", 1.0), self.attr("beta", 1.0)
        y = wa @ wb
        if alpha != 1:  # skipping the factor 1 keeps integer products exact
            y = alpha * y
        if c is not None and beta != 0:
            y = y + (widened(c) if beta == 1 else beta * widened(c))
        return y.astype(a.dtype, copy=False)


class Einsum(OpRun):
    def run(self, *operands: np.ndarray) -> np.ndarray:
        equation = self.attr("equation").replace(" ", "")
        result = np.einsum(equation, *[widened(x) for x in operands], optimize=len(operands) > 2)
        return np.asarray(result).astype(operands[0].dtype, copy=False)


class Det(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(np.linalg.det(widened(x))).astype(x.dtype, copy=False)
