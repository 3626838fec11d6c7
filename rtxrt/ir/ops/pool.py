"""Pooling: MaxPool, AveragePool, LpPool, their Global forms, MaxUnpool, and MaxRoiPool (max
pooling over regions of interest, the Fast R-CNN detector head)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..dtypes import DType
from ..graph import Dim, TensorType
from .conv import sliding_window
from .infer_helpers import int_values
from .facts import Layout, PLAIN, STATS
from .registry import InferenceContext, register


def _infer_pool(ctx: InferenceContext) -> list[TensorType | None]:
    """Y (and MaxPool's int64 Indices) has one value per window position."""
    x = ctx.type(0)
    kernel = ctx.attr("kernel_shape")
    if not kernel:
        raise ctx.fail("kernel_shape is required")
    shape = None
    if x.shape is not None:
        if len(x.shape) != len(kernel) + 2:
            raise ctx.fail(f"a {len(kernel)}-D kernel does not fit X of shape {tuple(x.shape)}")
        try:
            window = sliding_window(ctx.node.attrs, x.shape[2:], kernel, bool(ctx.attr("ceil_mode", 0)))
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None
        shape = (*x.shape[:2], *window.out)
    return [TensorType(x.dtype, shape), TensorType(DType.INT64, shape)][: len(ctx.node.outputs)]


def _infer_global_pool(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.fail(f"X must be (N, C, ...), got shape {tuple(x.shape)}")
    shape = None if x.shape is None else (*x.shape[:2], *[1] * (len(x.shape) - 2))
    return [TensorType(x.dtype, shape)]


def _infer_max_unpool(ctx: InferenceContext) -> list[TensorType | None]:
    """The output_shape input when known; else each axis is (in - 1) * stride - pads + kernel."""
    x = ctx.type(0)
    if ctx.has_input(2):
        wanted = int_values(ctx, 2)
        if wanted is not None:
            return [TensorType(x.dtype, tuple(wanted))]
        return [TensorType(x.dtype, None if x.shape is None else (None,) * len(x.shape))]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    kernel = ctx.attr("kernel_shape")
    if not kernel or len(kernel) != len(x.shape) - 2:
        raise ctx.fail(f"kernel_shape {kernel} does not fit X of shape {tuple(x.shape)}")
    return [TensorType(x.dtype, (*x.shape[:2], *unpooled_sizes(ctx.node.attrs, x.shape[2:], kernel)))]


def _infer_max_roi_pool(ctx: InferenceContext) -> list[TensorType | None]:
    """Y is (num_rois, C, pooled_h, pooled_w); rois are (num_rois, 5) rows of
    [batch index, x1, y1, x2, y2] in X's float type."""
    x, rois = ctx.type(0), ctx.type(1)
    if not x.dtype.is_float or rois.dtype != x.dtype:
        raise ctx.fail(f"takes X and rois of one float type, got {x.dtype.short} and {rois.dtype.short}")
    pooled = ctx.attr("pooled_shape")
    if not isinstance(pooled, list) or len(pooled) != 2 or min(pooled) < 1:
        raise ctx.fail(f"pooled_shape must be two positive sizes, got {pooled}")
    if x.shape is not None and len(x.shape) != 4:
        raise ctx.fail(f"X must be (N, C, H, W), got shape {tuple(x.shape)}")
    if rois.shape is not None and (len(rois.shape) != 2 or rois.shape[1] not in (5, None)):
        raise ctx.fail(f"rois must be (num_rois, 5), got shape {tuple(rois.shape)}")
    channels = None if x.shape is None else x.shape[1]
    num_rois = None if rois.shape is None else rois.shape[0]
    return [TensorType(x.dtype, (num_rois, channels, *pooled))]


def unpooled_sizes(attrs: Mapping[str, Any], sizes: Sequence[Dim], kernel: Sequence[int]) -> tuple[Dim, ...]:
    """Spatial sizes a MaxUnpool restores when no output_shape is given."""
    rank = len(kernel)
    strides = attrs.get("strides") or [1] * rank
    pads = attrs.get("pads") or [0] * 2 * rank
    return tuple(
        (size - 1) * strides[i] - pads[i] - pads[rank + i] + kernel[i] if isinstance(size, int) else None
        for i, size in enumerate(sizes)
    )


register("MaxPool", _infer_pool, outputs=(1, 2), facts=PLAIN.but(layout=Layout.SPATIAL))
register("AveragePool", _infer_pool, facts=PLAIN.but(layout=Layout.SPATIAL))
register("LpPool", _infer_pool, facts=STATS.but(layout=Layout.SPATIAL))
register("GlobalMaxPool", _infer_global_pool, facts=STATS.but(layout=Layout.SPATIAL))
register("GlobalAveragePool", _infer_global_pool, facts=STATS.but(layout=Layout.SPATIAL))
register("GlobalLpPool", _infer_global_pool, facts=STATS.but(layout=Layout.SPATIAL))
register("MaxUnpool", _infer_max_unpool, inputs=(2, 3), facts=PLAIN)
register("MaxRoiPool", _infer_max_roi_pool, inputs=2, facts=PLAIN.but(exact_inputs=(1,)))
