"""Elementwise operators: unary math and activations, binary arithmetic, logic and
comparisons (numpy-style broadcasting), the variadic Min/Max/Sum/Mean, Clip and Where."""
from __future__ import annotations

import math
from typing import Callable

from ..dtypes import DType
from ..graph import Shape, TensorType
from .infer_helpers import broadcast_shapes
from .facts import POINTWISE, Precision
from .registry import VARIADIC, InferFn, InferenceContext, register

# Element types an operator accepts where that is narrower than "any".
_KINDS: dict[str, Callable[[DType], bool]] = {
    "float": lambda d: d.is_float,
    "bool": lambda d: d == DType.BOOL,
    "integer": lambda d: d.is_integer,
    "numeric": lambda d: d not in (DType.BOOL, DType.STRING),
}


def _check_kind(ctx: InferenceContext, t: TensorType, kind: str | None) -> None:
    if kind is not None and not _KINDS[kind](t.dtype):
        raise ctx.fail(f"accepts only {kind} tensors, got {t.dtype.short}")


def _broadcast(ctx: InferenceContext, types: list[TensorType]) -> Shape | None:
    try:
        return broadcast_shapes([t.shape for t in types])
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None


def _unary(kind: str | None = None, result: DType | None = None) -> InferFn:
    def infer(ctx: InferenceContext) -> list[TensorType | None]:
        t = ctx.type(0)
        _check_kind(ctx, t, kind)
        return [TensorType(result or t.dtype, t.shape)]

    return infer


def _same_type(ctx: InferenceContext, types: list[TensorType]) -> None:
    if len({t.dtype for t in types}) > 1:
        raise ctx.fail(f"inputs must share one element type, got {', '.join(t.dtype.short for t in types)}")


def _nary(kind: str | None = None, result: DType | None = None, same_type: bool = True) -> InferFn:
    """Inputs broadcast together; the output has the first input's dtype unless ``result``."""

    def infer(ctx: InferenceContext) -> list[TensorType | None]:
        types = [ctx.type(i) for i in range(len(ctx.node.inputs))]
        _check_kind(ctx, types[0], kind)
        if same_type:
            _same_type(ctx, types)
        return [TensorType(result or types[0].dtype, _broadcast(ctx, types))]

    return infer


def _choice(infer: InferFn, attr: str, choices: tuple[str, ...], default: str | None = None) -> InferFn:
    """``infer`` after checking that string attribute ``attr`` is one of ``choices``."""

    def checked(ctx: InferenceContext) -> list[TensorType | None]:
        value = ctx.attr(attr, default)
        if value not in choices:
            raise ctx.fail(f"{attr} must be one of {', '.join(choices)}, got {value!r}")
        return infer(ctx)

    return checked


def _infer_prelu(ctx: InferenceContext) -> list[TensorType | None]:
    """The slope broadcasts to X (unidirectionally): the output is X's type."""
    x, slope = ctx.type(0), ctx.type(1)
    _same_type(ctx, [x, slope])
    if x.shape is not None and slope.shape is not None:
        rank = len(slope.shape)
        fits = rank <= len(x.shape) and all(
            not (isinstance(s, int) and isinstance(d, int) and s not in (1, d))
            for s, d in zip(slope.shape, x.shape[len(x.shape) - rank:])
        )
        if not fits:
            raise ctx.fail(f"slope of shape {tuple(slope.shape)} does not broadcast to X of shape {tuple(x.shape)}")
    return [x]


def _infer_clip(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    for i in (1, 2):
        if ctx.has_input(i):
            bound = ctx.type(i)
            if bound.dtype != x.dtype:
                raise ctx.fail(f"bound {i} must be {x.dtype.short}, got {bound.dtype.short}")
            if bound.is_static and math.prod(bound.shape) != 1:
                raise ctx.fail(f"bound {i} must be a scalar, got shape {tuple(bound.shape)}")
    return [x]


def _infer_where(ctx: InferenceContext) -> list[TensorType | None]:
    cond, x, y = ctx.type(0), ctx.type(1), ctx.type(2)
    if cond.dtype != DType.BOOL:
        raise ctx.fail(f"condition must be bool, got {cond.dtype.short}")
    _same_type(ctx, [x, y])
    return [TensorType(x.dtype, _broadcast(ctx, [cond, x, y]))]


def _pointwise(op_type: str, infer: InferFn, precision: Precision = Precision.PLAIN, **arity) -> None:
    """Register an elementwise operator: any layout, and a body op of rtxrt::Elementwise."""
    register(op_type, infer, facts=POINTWISE.but(precision=precision), **arity)


for _op in ("Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
            "Asinh", "Acosh", "Atanh", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softsign",
            "Elu", "Selu", "Celu", "ThresholdedRelu", "Mish", "Swish"):
    _pointwise(_op, _unary("float"))
# exp and the hyperbolic functions leave the fp16 range easily; logs lose accuracy in it
for _op in ("Exp", "Sinh", "Cosh"):
    _pointwise(_op, _unary("float"), Precision.WIDE)
for _op in ("Log", "Softplus"):
    _pointwise(_op, _unary("float"), Precision.STATS)
for _op in ("Abs", "Neg", "Sign", "Relu", "Shrink"):
    _pointwise(_op, _unary("numeric"))
_pointwise("Erf", _unary())
_pointwise("Gelu", _choice(_unary("float"), "approximate", ("none", "tanh"), "none"))
_pointwise("Not", _unary("bool"))
_pointwise("BitwiseNot", _unary("integer"))
_pointwise("IsNaN", _unary("float", DType.BOOL))
_pointwise("IsInf", _unary("float", DType.BOOL))
_pointwise("PRelu", _infer_prelu, inputs=2)
_pointwise("Clip", _infer_clip, inputs=(1, 3))

for _op in ("Add", "Sub", "Mul", "Div", "Mod"):
    _pointwise(_op, _nary("numeric"), inputs=2)
_pointwise("Pow", _nary(same_type=False), Precision.WIDE, inputs=2)
_pointwise("BitShift", _choice(_nary("integer"), "direction", ("LEFT", "RIGHT")), inputs=2)
for _op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
    _pointwise(_op, _nary("integer"), inputs=2)
for _op in ("And", "Or", "Xor"):
    _pointwise(_op, _nary("bool"), inputs=2)
for _op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
    _pointwise(_op, _nary(result=DType.BOOL), inputs=2)
for _op in ("Min", "Max", "Sum", "Mean"):
    _pointwise(_op, _nary("numeric"), inputs=(1, VARIADIC))
_pointwise("Where", _infer_where, inputs=3)
