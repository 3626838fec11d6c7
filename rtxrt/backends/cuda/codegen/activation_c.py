"""The formulas of rtxrt.ir.activations as CUDA C expressions, for the fused epilogues (fp32)
and the elementwise kernels (the op's compute type: float for fp32 and narrower, double for
float64, whose literals and libm functions differ: ``0.5f`` and ``expf``, ``0.5`` and ``exp``).

Expressions carry their C precedence, so parentheses go only where C needs them, plus one
pair around the whole expression unless it is a name, a literal or a call. max / min are
``rtx_max`` / ``rtx_min`` of device_helpers.NAN_MAX_MIN, which every kernel using them
includes. Operations are printed in the formula's order: the compiler keeps it (no fast
math), so the device computes what the reference computes."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ....ir.activations import Activation
from ....ir.dtypes import DType
from . import CodegenError
from . import ctypes_map as C

# C precedence, highest first: primary (a name, a literal, a call), unary, multiplicative,
# additive, relational, conditional.
PRIMARY, UNARY, PRODUCT, SUM, RELATION, CONDITIONAL = 6, 5, 4, 3, 2, 1


@dataclass(frozen=True)
class CExpr:
    text: str
    precedence: int = PRIMARY


class CMaths:
    """rtxrt.ir.activations.Maths as C expressions computed in ``dtype`` (a register type:
    float for float32 and narrower floats, double for float64, or an integer type)."""

    def __init__(self, dtype: DType):
        self.dtype = dtype
        self._wide = dtype == DType.FLOAT64

    def lit(self, value: float) -> CExpr:
        if self.dtype.is_float:  # literals are parenthesized or calls already
            return CExpr(C.literal(value, DType.FLOAT64 if self._wide else DType.FLOAT32))
        if not float(value).is_integer():
            raise CodegenError(f"no {self.dtype.short} constant {value} in a formula")
        return CExpr(f"({C.register_type(self.dtype)}){int(value)}", UNARY)

    def add(self, a: CExpr, b: CExpr) -> CExpr:
        return _binary(a, "+", b, SUM)

    def mul(self, a: CExpr, b: CExpr) -> CExpr:
        return _binary(a, "*", b, PRODUCT)

    def div(self, a: CExpr, b: CExpr) -> CExpr:
        return _binary(a, "/", b, PRODUCT)

    def neg(self, a: CExpr) -> CExpr:
        return CExpr(f"-{_wrap(a, PRIMARY)}", UNARY)  # -(-x), never --x

    def cube(self, a: CExpr) -> CExpr:
        return self.mul(self.mul(a, a), a)

    def less(self, a: CExpr, b: CExpr) -> CExpr:
        return _binary(a, "<", b, RELATION)

    def where(self, cond: CExpr, a: CExpr, b: CExpr) -> CExpr:
        parts = (_wrap(e, CONDITIONAL + 1) for e in (cond, a, b))
        return CExpr("{} ? {} : {}".format(*parts), CONDITIONAL)

    def max(self, a: CExpr, b: CExpr | None) -> CExpr:
        return a if b is None else _call("rtx_max", a, b)

    def min(self, a: CExpr, b: CExpr | None) -> CExpr:
        return a if b is None else _call("rtx_min", a, b)

    def clip(self, a: CExpr, low: CExpr, high: CExpr) -> CExpr:
        return self.min(self.max(a, low), high)

    def exp(self, a: CExpr) -> CExpr:
        return _call(self._libm("exp"), a)

    def tanh(self, a: CExpr) -> CExpr:
        return _call(self._libm("tanh"), a)

    def erfc(self, a: CExpr) -> CExpr:
        return _call(self._libm("erfc"), a)

    def _libm(self, name: str) -> str:
        return name if self._wide else name + "f"


def activation_c(activation: Activation, x: str, dtype: DType, params: Mapping[str, float | str | None]) -> str:
    """``activation``'s formula at the C value ``x`` (a name), computed in ``dtype``, as one
    C expression. ``params`` by name: numbers (written as literals of the compute type), C
    names of values, or None for a Clip bound left out."""
    m = CMaths(dtype)
    values = {key: _param(m, v) for key, v in params.items()}
    result = activation.formula(m, CExpr(x), **values)
    return _wrap(result, PRIMARY)


def _param(m: CMaths, value: float | str | None) -> CExpr | None:
    if value is None:
        return None
    return CExpr(value) if isinstance(value, str) else m.lit(value)


def _wrap(e: CExpr, least: int) -> str:
    """``e``'s text, parenthesized where it binds more loosely than ``least``."""
    return e.text if e.precedence >= least else f"({e.text})"


def _binary(a: CExpr, op: str, b: CExpr, precedence: int) -> CExpr:
    # left-associative: a right operand of the same precedence keeps its parentheses
    return CExpr(f"{_wrap(a, precedence)} {op} {_wrap(b, precedence + 1)}", precedence)


def _call(function: str, *args: CExpr) -> CExpr:
    return CExpr(f"{function}({', '.join(a.text for a in args)})")
