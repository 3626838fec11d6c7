"""Shape and data-movement operators: Constant, ConstantOfShape, Identity, Dropout, Shape, Size,
Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad,
CenterCropPad, Range, Trilu, EyeLike, DepthToSpace, SpaceToDepth.

Later passes plan memory and fuse from these rules, so they keep every dim they can: symbolic
dims pass through unchanged wherever the operator leaves them alone, and constant shape-like
inputs (Reshape's target, Slice's bounds, Pad's pads, ...) are read with ``ctx.constant``.
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Sequence

import numpy as np

from ..dtypes import DType
from ..graph import Dim, Shape, TensorType
from .infer_helpers import broadcast_shapes, int_values, normalize_axis, same_as_input
from .facts import PLAIN, SHAPE_ONLY, VIEW, WIDE, Layout
from .registry import VARIADIC, InferenceContext, register

# Slice bounds at or past these mean "to the end"; models use INT32 or INT64 extremes.
_TO_END = 2**31 - 1

# Opset from which an attribute became an input.
AXES_INPUT_SINCE = 13  # Squeeze, Unsqueeze
SPLIT_INPUT_SINCE = 13
SLICE_INPUTS_SINCE = 10
PADS_INPUT_SINCE = 11
DROPOUT_RATIO_INPUT_SINCE = 12


# -- arithmetic on dims that may be symbols (str) or unknown (None) ------------------------


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1 or b == 0:
        return b
    if b == 1 or a == 0:
        return a
    return None


def dim_add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    return None


def dims_product(dims: Sequence[Dim]) -> Dim:
    return functools.reduce(dim_mul, dims, 1)


def dim_div(a: Dim, b: int) -> Dim:
    """``a / b`` when it divides exactly; None when unknown or a symbol."""
    if b == 1:
        return a
    return a // b if isinstance(a, int) and b and a % b == 0 else None


def merge_equal_dims(dims: Sequence[Dim]) -> Dim:
    """The one value of dims that must be equal at run time: an int if any is known."""
    ints = {d for d in dims if isinstance(d, int)}
    if len(ints) > 1:
        raise ValueError(f"dims {sorted(ints)} must be equal")
    if ints:
        return ints.pop()
    symbols = {d for d in dims if isinstance(d, str)}
    return symbols.pop() if len(symbols) == 1 else None


def _factor(dims: Sequence[Dim]) -> tuple[int, Counter] | None:
    number, symbols = 1, Counter()
    for d in dims:
        if d is None:
            return None
        if isinstance(d, int):
            number *= d
        else:
            symbols[d] += 1
    return number, symbols


def dims_quotient(total: Sequence[Dim], part: Sequence[Dim]) -> Dim:
    """prod(total) / prod(part) with symbols cancelled: (n, 4) / (n, 2) = 2, (b, s, 8) / (8,)
    is unknown (None) since b*s is no single dim."""
    num, den = _factor(total), _factor(part)
    if num is None or den is None or den[0] == 0 or num[0] % den[0] or den[1] - num[1]:
        return None
    number, left = num[0] // den[0], num[1] - den[1]
    if not left:
        return number
    if number == 1 and sum(left.values()) == 1:
        return next(iter(left))
    return None


def _with_dim(shape: Shape, axis: int, dim: Dim) -> Shape:
    return shape[:axis] + (dim,) + shape[axis + 1:]


def _unknown_dims(count: int | None) -> Shape | None:
    return None if count is None else (None,) * count


def _length_of_1d(ctx: InferenceContext, i: int) -> int | None:
    """Static length of 1-D input ``i`` (a shape or axes list), if known."""
    t = ctx.type(i)
    return t.shape[0] if t.shape is not None and len(t.shape) == 1 and isinstance(t.shape[0], int) else None


# -- constants and pass-through --------------------------------------------------------------


def _infer_constant(ctx: InferenceContext) -> list[TensorType | None]:
    value = ctx.attr("value")
    if not isinstance(value, np.ndarray):
        raise ctx.fail("Constant needs a tensor 'value' attribute")
    return [TensorType.of(value)]


def _infer_constant_of_shape(ctx: InferenceContext) -> list[TensorType | None]:
    value = ctx.attr("value")
    dtype = DType.FLOAT32 if value is None else DType.from_numpy(value.dtype)
    if value is not None and value.size != 1:
        raise ctx.fail(f"'value' must hold one element, has {value.size}")
    shape = int_values(ctx, 0)
    if shape is not None and any(d < 0 for d in shape):
        raise ctx.fail(f"negative dim in shape {shape}")
    return [TensorType(dtype, tuple(shape) if shape is not None else _unknown_dims(_length_of_1d(ctx, 0)))]


def _infer_dropout(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    return [t, TensorType(DType.BOOL, t.shape)][: len(ctx.node.outputs)]


def _infer_shape(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(DType.INT64, (None,))]
    kept = range(len(t.shape))[ctx.attr("start", 0): ctx.attr("end", len(t.shape))]
    return [TensorType(DType.INT64, (len(kept),))]


def _infer_size(ctx: InferenceContext) -> list[TensorType | None]:
    ctx.type(0)
    return [TensorType(DType.INT64, ())]


# -- reshaping ---------------------------------------------------------------------------------


def _infer_reshape(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    target = int_values(ctx, 1)
    if target is None:
        return [TensorType(t.dtype, _unknown_dims(_length_of_1d(ctx, 1)))]
    allowzero = bool(ctx.attr("allowzero", 0))
    if target.count(-1) > 1 or any(v < -1 for v in target):
        raise ctx.fail(f"invalid target shape {target}: at most one -1 and no other negative dims")
    if allowzero and -1 in target and 0 in target:
        raise ctx.fail(f"target shape {target} has both -1 and 0 with allowzero=1")
    out: list[Dim] = []
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            if t.shape is not None and i >= len(t.shape):
                raise ctx.fail(f"target shape {target} copies dim {i} of a rank-{len(t.shape)} input")
            out.append(None if t.shape is None else t.shape[i])
        else:
            out.append(v)
    missing = target.index(-1) if -1 in target else None
    if missing is not None and t.shape is not None:
        out[missing] = dims_quotient(t.shape, out[:missing] + out[missing + 1:])
    if t.is_static and all(isinstance(d, int) or i == missing for i, d in enumerate(out)):
        if not all(isinstance(d, int) for d in out) or math.prod(out) != math.prod(t.shape):
            raise ctx.fail(f"cannot reshape {t} to {target}")
    return [TensorType(t.dtype, tuple(out))]


def _infer_flatten(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, (None, None))]
    rank, axis = len(t.shape), ctx.attr("axis", 1)
    if not -rank <= axis <= rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    axis += rank if axis < 0 else 0
    return [TensorType(t.dtype, (dims_product(t.shape[:axis]), dims_product(t.shape[axis:])))]


def _axes_of(ctx: InferenceContext) -> tuple[list[int] | None, bool]:
    """(axes, given) of Squeeze/Unsqueeze: an attribute before opset 13, an input since."""
    if ctx.opset < AXES_INPUT_SINCE:
        axes = ctx.attr("axes")
        return (None if axes is None else list(axes)), axes is not None
    if not ctx.has_input(1):
        return None, False
    return int_values(ctx, 1), True


def _infer_squeeze(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    axes, given = _axes_of(ctx)
    given = given and axes != []  # empty axes squeeze every 1, like omitted ones
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    rank = len(t.shape)
    if given and axes is None:  # computed at run time
        count = _length_of_1d(ctx, 1)
        return [TensorType(t.dtype, None if count is None else _unknown_dims(rank - count))]
    if not given:
        if any(not isinstance(d, int) for d in t.shape):
            return [TensorType(t.dtype, None)]  # which dims are 1 is known at run time only
        return [TensorType(t.dtype, tuple(d for d in t.shape if d != 1))]
    squeezed = {normalize_axis(ctx, a, rank) for a in axes}
    for a in squeezed:
        if isinstance(t.shape[a], int) and t.shape[a] != 1:
            raise ctx.fail(f"cannot squeeze axis {a} of size {t.shape[a]}")
    return [TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i not in squeezed))]


def _infer_unsqueeze(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    axes, given = _axes_of(ctx)
    if not given:
        raise ctx.fail("Unsqueeze needs axes")
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if axes is None:
        count = _length_of_1d(ctx, 1)
        return [TensorType(t.dtype, None if count is None else _unknown_dims(len(t.shape) + count))]
    rank = len(t.shape) + len(axes)
    inserted = {normalize_axis(ctx, a, rank) for a in axes}
    if len(inserted) != len(axes):
        raise ctx.fail(f"axes {axes} repeat an axis")
    dims = iter(t.shape)
    return [TensorType(t.dtype, tuple(1 if i in inserted else next(dims) for i in range(rank)))]


def _infer_transpose(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    perm = ctx.attr("perm")
    if t.shape is None:
        return [TensorType(t.dtype, _unknown_dims(None if perm is None else len(perm)))]
    rank = len(t.shape)
    perm = list(range(rank))[::-1] if perm is None else list(perm)
    if sorted(a + rank if a < 0 else a for a in perm) != list(range(rank)):  # a % rank would let 2**62 in
        raise ctx.fail(f"perm {perm} is not a permutation of the {rank} axes")
    return [TensorType(t.dtype, tuple(t.shape[a] for a in perm))]


def _blocked_input(ctx: InferenceContext) -> tuple[TensorType, int]:
    """Input type and blocksize of DepthToSpace/SpaceToDepth, checked."""
    t, b = ctx.type(0), ctx.attr("blocksize")
    if not isinstance(b, int) or b <= 0:
        raise ctx.fail("blocksize must be a positive int")
    if t.shape is not None and len(t.shape) != 4:
        raise ctx.fail(f"input must be 4-D (N, C, H, W), got {t}")
    return t, b


def _infer_depth_to_space(ctx: InferenceContext) -> list[TensorType | None]:
    t, b = _blocked_input(ctx)
    if t.shape is None:
        return [TensorType(t.dtype, _unknown_dims(4))]
    n, c, h, w = t.shape
    if isinstance(c, int) and c % (b * b):
        raise ctx.fail(f"channels {c} are not divisible by blocksize² = {b * b}")
    return [TensorType(t.dtype, (n, dim_div(c, b * b), dim_mul(h, b), dim_mul(w, b)))]


def _infer_space_to_depth(ctx: InferenceContext) -> list[TensorType | None]:
    t, b = _blocked_input(ctx)
    if t.shape is None:
        return [TensorType(t.dtype, _unknown_dims(4))]
    n, c, h, w = t.shape
    if any(isinstance(d, int) and d % b for d in (h, w)):
        raise ctx.fail(f"spatial dims {h}x{w} are not divisible by blocksize {b}")
    return [TensorType(t.dtype, (n, dim_mul(c, b * b), dim_div(h, b), dim_div(w, b)))]


# -- joining and splitting ------------------------------------------------------------------


def _infer_concat(ctx: InferenceContext) -> list[TensorType | None]:
    types = [ctx.type(i) for i in range(len(ctx.node.inputs)) if ctx.has_input(i)]
    if len({t.dtype for t in types}) > 1:
        raise ctx.fail(f"inputs have different dtypes: {[str(t) for t in types]}")
    shapes = [t.shape for t in types if t.shape is not None]
    if not shapes:
        return [TensorType(types[0].dtype, None)]
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ctx.fail(f"inputs have different ranks: {[str(t) for t in types]}")
    if "axis" not in ctx.node.attrs:
        raise ctx.fail("Concat needs an axis")
    axis = normalize_axis(ctx, ctx.attr("axis"), rank)
    out = []
    for i in range(rank):
        dims = [s[i] for s in shapes]
        if i == axis:
            out.append(functools.reduce(dim_add, dims) if len(shapes) == len(types) else None)
            continue
        try:
            out.append(merge_equal_dims(dims))
        except ValueError as exc:
            raise ctx.fail(f"axis {i}: {exc}") from None
    return [TensorType(types[0].dtype, tuple(out))]


def split_sizes(total: int, parts: int) -> list[int]:
    """Sizes of Split into ``parts`` pieces without explicit sizes: equal, or (opset 18) equal
    but for a smaller last piece."""
    chunk = -(-total // parts)
    sizes = [chunk] * (parts - 1) + [total - chunk * (parts - 1)]
    if sizes[-1] < 0:
        raise ValueError(f"cannot split {total} into {parts} parts")
    return sizes


def _infer_split(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    count = len(ctx.node.outputs)
    if ctx.opset < SPLIT_INPUT_SINCE:
        split, given = ctx.attr("split"), "split" in ctx.node.attrs
    else:
        split, given = int_values(ctx, 1) if ctx.has_input(1) else None, ctx.has_input(1)
    if t.shape is None:
        return [TensorType(t.dtype, None)] * count
    if not t.shape:
        raise ctx.fail(f"cannot split a scalar ({t})")
    axis = normalize_axis(ctx, ctx.attr("axis", 0), len(t.shape))
    dim = t.shape[axis]
    if given and split is not None:
        if len(split) != count or any(s < 0 for s in split):
            raise ctx.fail(f"split {split} does not give {count} non-negative sizes")
        if isinstance(dim, int) and sum(split) != dim:
            raise ctx.fail(f"split {split} does not add up to dim {dim} of axis {axis}")
        sizes: list[Dim] = list(split)
    elif not given and isinstance(dim, int):
        parts = ctx.attr("num_outputs", count)
        if parts != count or (ctx.opset < 18 and dim % count):
            raise ctx.fail(f"cannot split dim {dim} into {count} equal parts")
        try:
            sizes = split_sizes(dim, count)
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None
    else:
        sizes = [dim if count == 1 else None] * count
    return [TensorType(t.dtype, _with_dim(t.shape, axis, s)) for s in sizes]


# -- slicing and padding --------------------------------------------------------------------


def _slice_dim(dim: Dim, start: int, end: int, step: int) -> Dim:
    if isinstance(dim, int):
        return len(range(*slice(start, end, step).indices(dim)))
    forward_whole = step == 1 and (start == 0 or start <= -_TO_END) and end >= _TO_END
    backward_whole = step == -1 and (start == -1 or start >= _TO_END) and end <= -_TO_END
    return dim if forward_whole or backward_whole else None


def _slice_args(ctx: InferenceContext) -> tuple[list[int] | None, ...]:
    """(starts, ends, axes, steps) when known before run time; axes/steps None = default."""
    if ctx.opset < SLICE_INPUTS_SINCE:
        return ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    values = [int_values(ctx, i) if ctx.has_input(i) else None for i in range(1, 5)]
    return tuple(values)


def _infer_slice(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    rank = len(t.shape)
    starts, ends, axes, steps = _slice_args(ctx)
    runtime_axes = ctx.opset >= SLICE_INPUTS_SINCE and ctx.has_input(3) and axes is None
    runtime_steps = ctx.opset >= SLICE_INPUTS_SINCE and ctx.has_input(4) and steps is None
    if starts is None or ends is None or runtime_axes or runtime_steps:
        # bounds known at run time only: the sliced axes (all, if unknown) lose their size
        sliced = range(rank) if axes is None else {normalize_axis(ctx, a, rank) for a in axes}
        return [TensorType(t.dtype, tuple(None if i in sliced else d for i, d in enumerate(t.shape)))]
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.fail("starts, ends, axes and steps must have the same length")
    if 0 in steps:
        raise ctx.fail("steps must not be 0")
    out = list(t.shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        a = normalize_axis(ctx, axis, rank)
        out[a] = _slice_dim(t.shape[a], start, end, step)
    return [TensorType(t.dtype, tuple(out))]


def _infer_pad(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    rank = len(t.shape)
    if ctx.opset < PADS_INPUT_SINCE:
        pads, axes = ctx.attr("pads"), list(range(rank))
    else:
        pads = int_values(ctx, 1)
        axes = int_values(ctx, 3) if ctx.has_input(3) else list(range(rank))
    if pads is None or axes is None:
        return [TensorType(t.dtype, _unknown_dims(rank))]
    if len(pads) != 2 * len(axes):
        raise ctx.fail(f"pads {pads} must hold a begin and an end for each of {len(axes)} axes")
    out = list(t.shape)
    for i, axis in enumerate(axes):
        a = normalize_axis(ctx, axis, rank)
        out[a] = dim_add(dim_add(out[a], pads[i]), pads[i + len(axes)])
        if isinstance(out[a], int) and out[a] < 0:
            raise ctx.fail(f"pads {pads} crop axis {a} below size 0")
    return [TensorType(t.dtype, tuple(out))]


def _infer_center_crop_pad(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    rank = len(t.shape)
    axes = [normalize_axis(ctx, a, rank) for a in ctx.attr("axes", range(rank))]
    sizes = int_values(ctx, 1)
    if sizes is not None and len(sizes) != len(axes):
        raise ctx.fail(f"shape {sizes} must give one size per axis {axes}")
    out = list(t.shape)
    for i, a in enumerate(axes):
        out[a] = None if sizes is None else sizes[i]
    return [TensorType(t.dtype, tuple(out))]


# -- broadcasting and generating ------------------------------------------------------------


def _infer_expand(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    target = int_values(ctx, 1)
    if target is not None:
        try:
            return [TensorType(t.dtype, broadcast_shapes([t.shape, tuple(target)]))]
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None
    count = _length_of_1d(ctx, 1)
    if t.shape is None or count is None:
        return [TensorType(t.dtype, None)]
    rank = max(count, len(t.shape))
    # a known dim other than 1 survives any target; everything else depends on the values
    dims = (None,) * (rank - len(t.shape)) + tuple(d if isinstance(d, int) and d != 1 else None for d in t.shape)
    return [TensorType(t.dtype, dims)]


def _infer_tile(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    repeats = int_values(ctx, 1)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if repeats is None:
        return [TensorType(t.dtype, _unknown_dims(len(t.shape)))]
    if len(repeats) != len(t.shape) or any(r < 0 for r in repeats):
        raise ctx.fail(f"repeats {repeats} must give a non-negative count for each of {len(t.shape)} axes")
    return [TensorType(t.dtype, tuple(dim_mul(d, r) for d, r in zip(t.shape, repeats)))]


def range_length(start: float, limit: float, delta: float) -> int:
    if delta == 0:
        raise ValueError("delta must not be 0")
    return max(math.ceil((limit - start) / delta), 0)


def _infer_range(ctx: InferenceContext) -> list[TensorType | None]:
    types = [ctx.type(i) for i in range(3)]
    if len({t.dtype for t in types}) > 1:
        raise ctx.fail(f"start, limit and delta have different dtypes: {[str(t) for t in types]}")
    values = [ctx.constant(i) for i in range(3)]
    if any(v is None for v in values):
        return [TensorType(types[0].dtype, (None,))]
    try:
        length = range_length(*(v.reshape(-1)[0].item() for v in values))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    return [TensorType(types[0].dtype, (length,))]


def _infer_eye_like(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is not None and len(t.shape) != 2:
        raise ctx.fail(f"input must be 2-D, got {t}")
    dtype = ctx.attr("dtype")
    return [TensorType(t.dtype if dtype is None else DType(dtype), t.shape or (None, None))]


register("Constant", _infer_constant, inputs=0, facts=SHAPE_ONLY)
register("ConstantOfShape", _infer_constant_of_shape, facts=PLAIN)
register("Identity", same_as_input(0), facts=VIEW.but(layout=Layout.ANY))
register("Dropout", _infer_dropout, inputs=(1, 3), outputs=(1, 2), facts=PLAIN.but(layout=Layout.ANY, exact_inputs=(1,)))
register("Shape", _infer_shape, facts=SHAPE_ONLY)
register("Size", _infer_size, facts=SHAPE_ONLY)
register("Reshape", _infer_reshape, inputs=2, facts=VIEW)
register("Flatten", _infer_flatten, facts=VIEW)
register("Squeeze", _infer_squeeze, inputs=(1, 2), facts=VIEW)
register("Unsqueeze", _infer_unsqueeze, inputs=(1, 2), facts=VIEW)
register("Transpose", _infer_transpose, facts=PLAIN)
register("DepthToSpace", _infer_depth_to_space, facts=PLAIN)
register("SpaceToDepth", _infer_space_to_depth, facts=PLAIN)
register("Concat", _infer_concat, inputs=(1, VARIADIC), facts=PLAIN.but(layout=Layout.CHANNEL_AXIS))
register("Split", _infer_split, inputs=(1, 2), outputs=(1, VARIADIC), facts=PLAIN.but(layout=Layout.CHANNEL_AXIS))
register("Slice", _infer_slice, inputs=(1, 5), facts=PLAIN)
register("Pad", _infer_pad, inputs=(1, 4), facts=PLAIN)
register("CenterCropPad", _infer_center_crop_pad, inputs=2, facts=PLAIN)
register("Expand", _infer_expand, inputs=2, facts=PLAIN)
register("Tile", _infer_tile, inputs=2, facts=PLAIN)
register("Range", _infer_range, inputs=3, facts=WIDE.but(exact_inputs=(0, 1, 2)))
register("Trilu", same_as_input(0), inputs=(1, 2), facts=PLAIN)
register("EyeLike", _infer_eye_like, facts=PLAIN)
