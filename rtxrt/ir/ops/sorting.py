"""Sorting and scans: TopK, CumSum, CumProd."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import TensorType
from .infer_helpers import int_values, normalize_axis
from .facts import STATS, WIDE
from .registry import InferenceContext, register


def _infer_topk(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if ctx.opset >= 10:  # k moved from an attribute to the second input
        if not ctx.has_input(1):
            raise ctx.fail("input K is required")
        ks = int_values(ctx, 1)
    else:
        ks = [ctx.attr("k")] if ctx.attr("k") is not None else None
    if ks is not None and (len(ks) != 1 or ks[0] < 0):
        raise ctx.fail(f"K must be one non-negative integer, got {ks}")
    if t.shape is None:
        return [TensorType(t.dtype, None), TensorType(DType.INT64, None)]
    axis = normalize_axis(ctx, ctx.attr("axis", -1), len(t.shape))
    k = None if ks is None else ks[0]
    if k is not None and isinstance(t.shape[axis], int) and k > t.shape[axis]:
        raise ctx.fail(f"K={k} exceeds the size {t.shape[axis]} of axis {axis}")
    shape = (*t.shape[:axis], k, *t.shape[axis + 1:])
    return [TensorType(t.dtype, shape), TensorType(DType.INT64, shape)]


def _infer_scan(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    axis = int_values(ctx, 1)
    if axis is not None:
        if len(axis) != 1:
            raise ctx.fail(f"axis must hold one value, got {axis}")
        if t.shape is not None:
            normalize_axis(ctx, axis[0], len(t.shape))
    return [t]


register("TopK", _infer_topk, inputs=(1, 2), outputs=2, facts=STATS)
register("CumSum", _infer_scan, inputs=2, facts=WIDE)
register("CumProd", _infer_scan, inputs=2, facts=WIDE)
