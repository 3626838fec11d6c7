"""The formulas of rtxrt.ir.activations evaluated with numpy, for the reference kernels (the
ONNX activation ops and the fused epilogue). Values are computed in the array's own type (the
callers widen narrow floats first): constants are Python floats, which take the array's type,
or scalars of the array's integer type (Relu on integers stays integer)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...ir.activations import Activation
from .ops.unary import erf

Value = np.ndarray | float


class NumpyMaths:
    """rtxrt.ir.activations.Maths over numpy arrays of ``dtype``."""

    def __init__(self, dtype: np.dtype):
        self._integer = np.dtype(dtype).type if np.issubdtype(dtype, np.integer) else None

    def lit(self, value: float) -> Value:
        return self._integer(value) if self._integer else value

    def add(self, a: Value, b: Value) -> Value:
        return a + b

    def mul(self, a: Value, b: Value) -> Value:
        return a * b

    def div(self, a: Value, b: Value) -> Value:
        return a / b

    def neg(self, a: Value) -> Value:
        return -a

    def cube(self, a: Value) -> Value:
        return a**3

    def less(self, a: Value, b: Value) -> Value:
        return a < b

    def where(self, cond: Value, a: Value, b: Value) -> Value:
        return np.where(cond, a, b)

    def max(self, a: Value, b: Value | None) -> Value:
        return a if b is None else np.maximum(a, b)

    def min(self, a: Value, b: Value | None) -> Value:
        return a if b is None else np.minimum(a, b)

    def clip(self, a: Value, low: Value, high: Value) -> Value:
        return np.clip(a, low, high)

    def exp(self, a: Value) -> Value:
        return np.exp(a)

    def tanh(self, a: Value) -> Value:
        return np.tanh(a)

    def erfc(self, a: Value) -> Value:
        # 1 + erf(-a) in float64, exact enough where the formulas use it (gelu's 1 + erf(t)
        # as erfc(-t)), and there the very sum the reference always computed, NaN signs too
        return 1.0 + erf(-a)


def evaluate(activation: Activation, x: np.ndarray, params: Mapping[str, float | np.ndarray | None]) -> np.ndarray:
    """``activation``'s formula at ``x`` with ``params`` by name (numbers, arrays that broadcast
    to ``x``, or None for a Clip bound left out). Overflow to inf and NaN are results here,
    not errors, as in the ONNX ops."""
    m = NumpyMaths(x.dtype)
    values = {key: m.lit(v) if isinstance(v, (int, float)) else v for key, v in params.items()}
    with np.errstate(all="ignore"):
        return np.asarray(activation.formula(m, x, **values))
