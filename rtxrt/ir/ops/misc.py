"""Long-tail operators: sampling (GridSample, AffineGrid, RoiAlign), NonMaxSuppression,
TfIdfVectorizer and SwiGLU."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import TensorType
from .onnx_fallback import onnx_inference
from .facts import OPAQUE, PLAIN, WIDE
from .registry import InferenceContext, register


def _infer_swiglu(ctx: InferenceContext) -> list[TensorType | None]:
    a, b = ctx.type(0), ctx.type(1)
    if a.dtype != b.dtype:
        raise ctx.fail(f"A and B must have the same element type, got {a} and {b}")
    if a.shape is not None and b.shape is not None:
        if len(a.shape) != len(b.shape) or any(
            isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a.shape, b.shape)
        ):
            raise ctx.fail(f"A and B must have the same shape (no broadcasting), got {a} and {b}")
    return [TensorType(a.dtype, a.shape if a.shape is not None else b.shape)]


def _infer_grid_sample(ctx: InferenceContext) -> list[TensorType | None]:
    """Y is [N, C, *grid spatial dims]."""
    x, grid = ctx.type(0), ctx.type(1)
    if x.shape is None or grid.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 3 or len(grid.shape) != len(x.shape) or grid.shape[-1] not in (len(x.shape) - 2, None):
        raise ctx.fail(f"grid {grid} does not fit input {x}: expected [N, *spatial, {len(x.shape) - 2}]")
    return [TensorType(x.dtype, (x.shape[0], x.shape[1], *grid.shape[1:-1]))]


def _infer_roi_align(ctx: InferenceContext) -> list[TensorType | None]:
    """Y is [num_rois, C, output_height, output_width]."""
    x, rois = ctx.type(0), ctx.type(1)
    if x.rank not in (None, 4):
        raise ctx.fail(f"X must have rank 4, got {x}")
    rois_count = None if rois.shape is None else rois.shape[0]
    channels = None if x.shape is None else x.shape[1]
    size = (ctx.attr("output_height", 1), ctx.attr("output_width", 1))
    return [TensorType(x.dtype, (rois_count, channels, *size))]


def _infer_nms(ctx: InferenceContext) -> list[TensorType | None]:
    """[selected, 3] rows of (batch, class, box); how many are selected is known at run time."""
    return [TensorType(DType.INT64, (None, 3))]


def _infer_tfidf(ctx: InferenceContext) -> list[TensorType | None]:
    """float32 [max(ngram_indexes) + 1] per input row."""
    x = ctx.type(0)
    if ctx.attr("pool_strings") is not None or x.dtype == DType.STRING:
        raise ctx.fail("string n-gram pools are not supported; only integer input is")
    indexes = ctx.attr("ngram_indexes") or []
    width = max(indexes) + 1 if indexes else 0
    if x.shape is None:
        return [TensorType(DType.FLOAT32, None)]
    if len(x.shape) not in (1, 2):
        raise ctx.fail(f"input must be [C] or [N, C], got {x}")
    return [TensorType(DType.FLOAT32, (width,) if len(x.shape) == 1 else (x.shape[0], width))]


register("SwiGLU", _infer_swiglu, inputs=2, facts=PLAIN)
register("GridSample", _infer_grid_sample, inputs=2, facts=PLAIN.but(exact_inputs=(1,)))
register("AffineGrid", onnx_inference, inputs=2, facts=PLAIN.but(exact_inputs=(0,)))
register("RoiAlign", _infer_roi_align, inputs=3, facts=PLAIN.but(exact_inputs=(1,)))
register("NonMaxSuppression", _infer_nms, inputs=(2, 5), facts=OPAQUE)
register("TfIdfVectorizer", _infer_tfidf, facts=WIDE)
