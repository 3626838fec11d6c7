"""Pooling: MaxPool, AveragePool, LpPool, their Global forms, and MaxUnpool."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..dtypes import DType
from ..graph import Dim, TensorType
from .conv import sliding_window
from .infer_helpers import int_values
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


def unpooled_sizes(attrs: Mapping[str, Any], sizes: Sequence[Dim], kernel: Sequence[int]) -> tuple[Dim, ...]:
    """Spatial sizes a MaxUnpool restores when no output_shape is given."""
    rank = len(kernel)
    strides = attrs.get("strides") or [1] * rank
    pads = attrs.get("pads") or [0] * 2 * rank
    return tuple(
        (size - 1) * strides[i] - pads[i] - pads[rank + i] + kernel[i] if isinstance(size, int) else None
        for i, size in enumerate(sizes)
    )


register("MaxPool", _infer_pool, outputs=(1, 2))
register("AveragePool", _infer_pool)
register("LpPool", _infer_pool)
register("GlobalMaxPool", _infer_global_pool)
register("GlobalAveragePool", _infer_global_pool)
register("GlobalLpPool", _infer_global_pool)
register("MaxUnpool", _infer_max_unpool, inputs=(2, 3))
