"""Binary elementwise operators with numpy-style broadcasting (arithmetic, logic, bitwise,
comparisons), the variadic Min, Max, Sum and Mean, and Where."""
from __future__ import annotations

from functools import reduce

import numpy as np

from ..kernel import OpRun
from .reduce import widened


class _Binary(OpRun):
    """``compute(a, b)``. Narrow floats are computed in float32 and rounded once; the result
    has A's dtype unless ``result_dtype`` says otherwise."""

    result_dtype: np.dtype | None = None

    def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):  # inf, NaN and integer wrap-around are results here
            y = self.compute(widened(a), widened(b))
        return np.asarray(y).astype(a.dtype if self.result_dtype is None else self.result_dtype, copy=False)


class _Compare(_Binary):
    result_dtype = np.dtype(np.bool_)


class Add(_Binary):
    compute = staticmethod(np.add)


class Sub(_Binary):
    compute = staticmethod(np.subtract)


class Mul(_Binary):
    compute = staticmethod(np.multiply)


class Div(_Binary):
    @staticmethod
    def compute(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.dtype.kind in "iu":  # integers truncate toward zero, as in C
            return (a - np.fmod(a, b)) // b
        return np.divide(a, b)


class Mod(_Binary):
    """fmod=1: the remainder has the dividend's sign (C fmod); fmod=0: the divisor's (Python)."""

    def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.fmod(a, b) if self.attr("fmod", 0) else np.mod(a, b)


class Pow(_Binary):
    """The result has the base's dtype, whatever the exponent's."""

    @staticmethod
    def compute(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and np.any(b < 0):
            return np.power(a.astype(np.float64), b)  # numpy refuses these; C's pow then truncates
        return np.power(a, b)


class BitShift(_Binary):
    """Shifts of a negative amount or of the bit width or more leave only the sign fill:
    -1 for a right shift of a negative value, 0 otherwise."""

    def compute(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        bits = x.dtype.itemsize * 8
        valid = (y >= 0) & (y < bits)
        y = np.where(valid, y, 0).astype(x.dtype)
        if self.attr("direction") == "LEFT":
            return np.where(valid, np.left_shift(x, y), 0)
        fill = np.right_shift(x, bits - 1) if x.dtype.kind == "i" else 0
        return np.where(valid, np.right_shift(x, y), fill)


class BitwiseAnd(_Binary):
    compute = staticmethod(np.bitwise_and)


class BitwiseOr(_Binary):
    compute = staticmethod(np.bitwise_or)


class BitwiseXor(_Binary):
    compute = staticmethod(np.bitwise_xor)


class And(_Binary):
    compute = staticmethod(np.logical_and)


class Or(_Binary):
    compute = staticmethod(np.logical_or)


class Xor(_Binary):
    compute = staticmethod(np.logical_xor)


class Equal(_Compare):
    compute = staticmethod(np.equal)


class Less(_Compare):
    compute = staticmethod(np.less)


class Greater(_Compare):
    compute = staticmethod(np.greater)


class LessOrEqual(_Compare):
    compute = staticmethod(np.less_equal)


class GreaterOrEqual(_Compare):
    compute = staticmethod(np.greater_equal)


class _Variadic(OpRun):
    """``compute`` over all inputs broadcast together, in the first input's dtype."""

    @staticmethod
    def compute(xs: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def run(self, *xs: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            y = self.compute([widened(x) for x in xs])
        return np.asarray(y).astype(xs[0].dtype, copy=False)


class Max(_Variadic):
    @staticmethod
    def compute(xs: list[np.ndarray]) -> np.ndarray:
        return reduce(np.maximum, xs)


class Min(_Variadic):
    @staticmethod
    def compute(xs: list[np.ndarray]) -> np.ndarray:
        return reduce(np.minimum, xs)


class Sum(_Variadic):
    @staticmethod
    def compute(xs: list[np.ndarray]) -> np.ndarray:
        return reduce(np.add, xs)


class Mean(_Variadic):
    @staticmethod
    def compute(xs: list[np.ndarray]) -> np.ndarray:
        return reduce(np.add, xs) / len(xs)


class Where(OpRun):
    def run(self, condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(condition, x, y).astype(x.dtype, copy=False)
