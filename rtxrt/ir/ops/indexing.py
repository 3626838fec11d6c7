"""Indexing operators: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND,
TensorScatter, OneHot, NonZero, Compress, Unique, ReverseSequence."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import TensorType
from .infer_helpers import int_values, normalize_axis, same_as_input
from .facts import OPAQUE, PLAIN
from .registry import InferenceContext, register
from .tensor import dims_product, merge_equal_dims


def _indices(ctx: InferenceContext, i: int) -> TensorType:
    t = ctx.type(i)
    if not t.dtype.is_integer:
        raise ctx.fail(f"indices must be an integer tensor, got {t}")
    return t


def _infer_gather(ctx: InferenceContext) -> list[TensorType | None]:
    data, indices = ctx.type(0), _indices(ctx, 1)
    if data.shape is None or indices.shape is None:
        return [TensorType(data.dtype, None)]
    axis = normalize_axis(ctx, ctx.attr("axis", 0), len(data.shape))
    return [TensorType(data.dtype, data.shape[:axis] + indices.shape + data.shape[axis + 1:])]


def _infer_gather_elements(ctx: InferenceContext) -> list[TensorType | None]:
    data, indices = ctx.type(0), _indices(ctx, 1)
    if data.shape is not None and indices.shape is not None:
        if len(data.shape) != len(indices.shape):
            raise ctx.fail(f"data {data} and indices {indices} must have the same rank")
        normalize_axis(ctx, ctx.attr("axis", 0), len(data.shape))
    return [TensorType(data.dtype, indices.shape)]


def _infer_gather_nd(ctx: InferenceContext) -> list[TensorType | None]:
    data, indices = ctx.type(0), _indices(ctx, 1)
    batch = ctx.attr("batch_dims", 0)
    if data.shape is None or indices.shape is None:
        return [TensorType(data.dtype, None)]
    if not indices.shape:
        raise ctx.fail("indices must have rank >= 1")
    depth = indices.shape[-1]
    if not isinstance(depth, int):
        return [TensorType(data.dtype, None)]
    if batch >= min(len(data.shape), len(indices.shape)) or batch + depth > len(data.shape):
        raise ctx.fail(f"indices {indices} with batch_dims={batch} do not fit data {data}")
    try:
        batch_dims = tuple(merge_equal_dims(pair) for pair in zip(data.shape[:batch], indices.shape[:batch]))
    except ValueError as exc:
        raise ctx.fail(f"batch dims differ: {exc}") from None
    return [TensorType(data.dtype, batch_dims + indices.shape[batch:-1] + data.shape[batch + depth:])]


def _infer_one_hot(ctx: InferenceContext) -> list[TensorType | None]:
    indices, values = ctx.type(0), ctx.type(2)
    shape = values.shape
    if not (shape is None or shape == (2,) or len(shape) == 1 and not isinstance(shape[0], int)):
        raise ctx.fail(f"values must hold [off_value, on_value], got {values}")
    if indices.shape is None:
        return [TensorType(values.dtype, None)]
    rank = len(indices.shape) + 1
    axis = normalize_axis(ctx, ctx.attr("axis", -1), rank)
    depth = ctx.constant(1)
    dim = None if depth is None else int(depth.reshape(-1)[0])
    return [TensorType(values.dtype, indices.shape[:axis] + (dim,) + indices.shape[axis:])]


def _infer_non_zero(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    return [TensorType(DType.INT64, (t.rank, None))]


def _infer_compress(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    axis = ctx.attr("axis")
    condition = ctx.constant(1)
    kept = None if condition is None else int(condition.astype(bool).sum())
    if axis is None:
        return [TensorType(t.dtype, (kept,))]
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    axis = normalize_axis(ctx, axis, len(t.shape))
    return [TensorType(t.dtype, t.shape[:axis] + (kept,) + t.shape[axis + 1:])]


def _infer_unique(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    axis = ctx.attr("axis")
    if axis is None:
        y, seen = TensorType(t.dtype, (None,)), None if t.shape is None else dims_product(t.shape)
    elif t.shape is None:
        y, seen = TensorType(t.dtype, None), None
    else:
        axis = normalize_axis(ctx, axis, len(t.shape))
        y, seen = TensorType(t.dtype, t.shape[:axis] + (None,) + t.shape[axis + 1:]), t.shape[axis]
    per_unique = TensorType(DType.INT64, (None,))
    return [y, per_unique, TensorType(DType.INT64, (seen,)), per_unique][: len(ctx.node.outputs)]


def _infer_reverse_sequence(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is not None and len(t.shape) < 2:
        raise ctx.fail(f"input must have rank >= 2, got {t}")
    lengths = int_values(ctx, 1)
    if t.shape is not None and lengths is not None:
        batch = t.shape[normalize_axis(ctx, ctx.attr("batch_axis", 1), len(t.shape))]
        if isinstance(batch, int) and len(lengths) != batch:
            raise ctx.fail(f"sequence_lens has {len(lengths)} entries for a batch of {batch}")
    return [t]


register("Gather", _infer_gather, inputs=2, facts=PLAIN)
register("GatherElements", _infer_gather_elements, inputs=2, facts=PLAIN)
register("GatherND", _infer_gather_nd, inputs=2, facts=PLAIN)
register("Scatter", same_as_input(0), inputs=3, facts=PLAIN)
register("ScatterElements", same_as_input(0), inputs=3, facts=PLAIN)
register("ScatterND", same_as_input(0), inputs=3, facts=PLAIN)
register("TensorScatter", same_as_input(0), inputs=(2, 3), facts=PLAIN)
register("OneHot", _infer_one_hot, inputs=3, facts=PLAIN.but(exact_inputs=(1,)))
register("NonZero", _infer_non_zero, facts=OPAQUE)
register("Compress", _infer_compress, inputs=2, facts=PLAIN)
register("Unique", _infer_unique, outputs=(1, 4), facts=OPAQUE)
register("ReverseSequence", _infer_reverse_sequence, inputs=2, facts=PLAIN)
