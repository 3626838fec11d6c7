"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax, ArgMin."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import Dim, TensorType
from .infer_helpers import int_values, normalize_axis
from .facts import STATS, WIDE
from .registry import InferenceContext, register

# Opset from which ``axes`` is the optional second input instead of an attribute.
AXES_INPUT_SINCE = {"ReduceSum": 13}
# Sums and products may leave the fp16 range (WIDE); means, extrema and norms stay in it (STATS).
REDUCE_OPS = {
    "ReduceSum": WIDE, "ReduceMean": STATS, "ReduceMax": STATS, "ReduceMin": STATS, "ReduceProd": WIDE,
    "ReduceL1": WIDE, "ReduceL2": STATS, "ReduceLogSum": STATS, "ReduceLogSumExp": STATS, "ReduceSumSquare": WIDE,
}


def axes_input_since(op_type: str) -> int:
    return AXES_INPUT_SINCE.get(op_type, 18)


def _infer_reduce(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    keepdims = bool(ctx.attr("keepdims", 1))
    if ctx.opset >= axes_input_since(ctx.node.op_type):
        axes = int_values(ctx, 1) if ctx.has_input(1) else []
        if axes is None:  # computed at run time: only the rank may be known
            if t.shape is None or not keepdims:
                return [TensorType(t.dtype, None)]
            return [TensorType(t.dtype, tuple(1 if d == 1 else None for d in t.shape))]
    else:
        axes = list(ctx.attr("axes", []))
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return [TensorType(t.dtype, t.shape)]
        axes = list(range(len(t.shape)))
    reduced = {normalize_axis(ctx, a, len(t.shape)) for a in axes}
    if len(reduced) != len(axes):
        raise ctx.fail(f"axes {axes} repeat an axis")
    return [TensorType(t.dtype, _reduced_shape(t.shape, reduced, keepdims))]


def _reduced_shape(shape: tuple[Dim, ...], axes: set[int], keepdims: bool) -> tuple[Dim, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _infer_arg(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(DType.INT64, None)]
    if not t.shape:
        raise ctx.fail("input must have rank >= 1")
    axis = normalize_axis(ctx, ctx.attr("axis", 0), len(t.shape))
    if t.shape[axis] == 0:
        raise ctx.fail(f"cannot take {ctx.node.op_type} over axis {axis} of size 0")
    return [TensorType(DType.INT64, _reduced_shape(t.shape, {axis}, bool(ctx.attr("keepdims", 1))))]


for _op, _facts in REDUCE_OPS.items():
    register(_op, _infer_reduce, inputs=(1, 2), facts=_facts)
register("ArgMax", _infer_arg, facts=STATS)
register("ArgMin", _infer_arg, facts=STATS)
