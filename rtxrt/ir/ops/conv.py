"""Convolutions (Conv, ConvTranspose, DeformConv) and the sliding-window geometry they share
with the pooling operators: how many windows fit along each spatial axis and how much padding
they see. The reference kernels use the same functions, so inferred and computed shapes agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..graph import Dim, TensorType
from .facts import GEMM, Layout
from .registry import InferenceContext, register

SAME = ("SAME_UPPER", "SAME_LOWER")


@dataclass(frozen=True)
class Window:
    """A window sliding over the spatial axes of an (N, C, *spatial) tensor. ``pads`` lists
    the begins then the ends; it is None while an input size is unknown."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...] | None
    out: tuple[Dim, ...]

    @property
    def extents(self) -> tuple[int, ...]:
        """How many input positions one window spans along each axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def _spatial_attr(attrs: Mapping[str, Any], name: str, rank: int, default: int) -> tuple[int, ...]:
    values = tuple(int(v) for v in attrs.get(name) or (default,) * rank)
    if len(values) != rank:
        raise ValueError(f"{name} has {len(values)} values for {rank} spatial axes")
    if min(values, default=1) < 1:
        raise ValueError(f"{name} must be positive, got {list(values)}")
    return values


def _explicit_pads(attrs: Mapping[str, Any], rank: int) -> tuple[int, ...]:
    pads = tuple(int(v) for v in attrs.get("pads") or (0,) * 2 * rank)
    if len(pads) != 2 * rank:
        raise ValueError(f"pads has {len(pads)} values for {rank} spatial axes (needs {2 * rank})")
    if min(pads, default=0) < 0:
        raise ValueError(f"pads must not be negative, got {list(pads)}")
    return pads


def _auto_pad(attrs: Mapping[str, Any]) -> str:
    auto_pad = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad not in ("NOTSET", "VALID", *SAME):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    return auto_pad


def _split(total: int, auto_pad: str) -> tuple[int, int]:
    """Begin and end padding; SAME_UPPER puts the odd one at the end, the others at the begin."""
    small = total // 2
    return (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)


def _window_count(span: int, stride: int, ceil_mode: bool) -> int:
    """Windows that fit a padded input ``span`` positions longer than one window. Rounds
    towards zero like ONNX's shape inference and ONNX Runtime, so a window slightly larger
    than the input still gives one (partial) window."""
    if ceil_mode:
        steps = -(-span // stride)
    else:  # rounds towards zero (in integer arithmetic: a shape-generic plan's dims stay expressions)
        steps = span // stride if span >= 0 else -(-span // stride)
    return max(0, steps + 1)


def _axis_window(
    size: Dim, stride: int, extent: int, begin: int, end: int, auto_pad: str, ceil_mode: bool
) -> tuple[Dim, int | None, int | None]:
    """Window count, begin and end padding along one axis (None where the size is unknown)."""
    if auto_pad in SAME:
        if not isinstance(size, int):  # ceil(size / stride) windows; the padding is unknown
            return (size if stride == 1 else None), None, None
        count = -(-size // stride)
        # a stride longer than the window would need negative padding: none, as TensorFlow
        begin, end = _split(max(0, (count - 1) * stride + extent - size), auto_pad)
        return count, begin, end
    if not isinstance(size, int):
        return (size if stride == 1 and begin + end == extent - 1 else None), begin, end
    count = _window_count(size + begin + end - extent, stride, ceil_mode)
    if ceil_mode and count and (count - 1) * stride >= size + begin:
        count -= 1  # the last window must start inside the input or its begin padding
    return count, begin, end


def sliding_window(
    attrs: Mapping[str, Any], sizes: Sequence[Dim], kernel: Sequence[int], ceil_mode: bool = False
) -> Window:
    """The window of a Conv or pooling node (attributes strides, dilations, pads, auto_pad)
    over spatial input ``sizes``. Raises ValueError for inconsistent attributes."""
    rank = len(sizes)
    kernel = tuple(int(k) for k in kernel)
    if len(kernel) != rank:
        raise ValueError(f"kernel has {len(kernel)} axes, the input {rank} spatial axes")
    strides = _spatial_attr(attrs, "strides", rank, 1)
    dilations = _spatial_attr(attrs, "dilations", rank, 1)
    auto_pad = _auto_pad(attrs)
    explicit = _explicit_pads(attrs, rank) if auto_pad == "NOTSET" else (0,) * 2 * rank
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    axes = [
        _axis_window(size, strides[a], extents[a], explicit[a], explicit[rank + a], auto_pad, ceil_mode)
        for a, size in enumerate(sizes)
    ]
    out, begins, ends = zip(*axes) if axes else ((), (), ())
    pads = None if None in begins else (*begins, *ends)
    return Window(kernel, strides, dilations, pads, tuple(out))


def _axis_transposed(
    size: Dim, stride: int, extent: int, extra: int, begin: int, end: int, wanted: int | None, auto_pad: str
) -> tuple[Dim, int | None, int | None]:
    """Output size and how much of the full result it leaves out at each end, along one axis."""
    if not isinstance(size, int):
        known = wanted is None and auto_pad not in SAME
        return wanted, (begin if known else None), (end if known else None)
    full = stride * (size - 1) + extra + extent
    if wanted is None and auto_pad in SAME:
        wanted = min(full, size * stride)  # size * stride, unless the full result is shorter
    if wanted is not None:
        begin = _split(max(0, full - wanted), auto_pad)[0]
        end = full - wanted - begin
    return full - begin - end, begin, end


def transposed_window(attrs: Mapping[str, Any], sizes: Sequence[Dim], kernel: Sequence[int]) -> Window:
    """The window of a ConvTranspose over input ``sizes``. Its ``pads`` say how much of the
    full result, ``strides * (size - 1) + output_padding + extent`` long, the output leaves out
    at each end; a negative end pad appends zeros. An output_shape attribute wins over pads,
    and auto_pad=SAME never makes the output longer than the full result (as ONNX Runtime)."""
    rank = len(sizes)
    kernel = tuple(int(k) for k in kernel)
    strides = _spatial_attr(attrs, "strides", rank, 1)
    dilations = _spatial_attr(attrs, "dilations", rank, 1)
    extra = tuple(int(v) for v in attrs.get("output_padding") or (0,) * rank)
    if len(extra) != rank:
        raise ValueError(f"output_padding has {len(extra)} values for {rank} spatial axes")
    auto_pad = _auto_pad(attrs)
    pads = _explicit_pads(attrs, rank) if auto_pad == "NOTSET" else (0,) * 2 * rank
    wanted: list[int | None] = [int(v) for v in attrs.get("output_shape") or ()]
    if len(wanted) == rank + 2:  # some exporters include N and C
        wanted = wanted[2:]
    if wanted and len(wanted) != rank:
        raise ValueError(f"output_shape has {len(wanted)} values for {rank} spatial axes")
    axes = [
        _axis_transposed(
            size, strides[a], (kernel[a] - 1) * dilations[a] + 1, extra[a], pads[a], pads[rank + a],
            wanted[a] if wanted else None, auto_pad,
        )
        for a, size in enumerate(sizes)
    ]
    out, begins, ends = zip(*axes) if axes else ((), (), ())
    return Window(kernel, strides, dilations, None if None in begins else (*begins, *ends), tuple(out))


def _kernel_shape(ctx: InferenceContext, weights: TensorType, rank: int) -> tuple[int, ...] | None:
    kernel = ctx.attr("kernel_shape")
    if kernel:
        return tuple(kernel)
    spatial = weights.shape[2:] if weights.shape is not None and len(weights.shape) == rank + 2 else ()
    return tuple(spatial) if spatial and all(isinstance(d, int) for d in spatial) else None  # type: ignore[arg-type]


def _conv_operands(ctx: InferenceContext) -> tuple[TensorType, TensorType, int] | None:
    """X and W types and the group count after checking that they fit; None if X's rank is
    unknown."""
    x, w = ctx.type(0), ctx.type(1)
    if w.dtype != x.dtype:
        raise ctx.fail(f"X is {x.dtype.short} but W is {w.dtype.short}")
    if x.shape is None:
        return None
    if len(x.shape) < 3:
        raise ctx.fail(f"X must be (N, C, D1, ...), got shape {tuple(x.shape)}")
    if w.shape is not None and len(w.shape) != len(x.shape):
        raise ctx.fail(f"W of rank {len(w.shape)} does not fit X of rank {len(x.shape)}")
    group = int(ctx.attr("group", 1))
    if group < 1:
        raise ctx.fail(f"group must be positive, got {group}")
    return x, w, group


def _infer_conv(ctx: InferenceContext) -> list[TensorType | None]:
    operands = _conv_operands(ctx)
    if operands is None:
        return [TensorType(ctx.type(0).dtype, None)]
    x, w, group = operands
    rank = len(x.shape) - 2
    if w.shape is not None and isinstance(x.shape[1], int) and isinstance(w.shape[1], int):
        if x.shape[1] != w.shape[1] * group:
            raise ctx.fail(f"X has {x.shape[1]} channels but W expects {w.shape[1]} x group {group}")
    channels = w.shape[0] if w.shape is not None else None
    kernel = _kernel_shape(ctx, w, rank)
    if kernel is None:
        return [TensorType(x.dtype, (x.shape[0], channels, *[None] * rank))]
    try:
        window = sliding_window(ctx.node.attrs, x.shape[2:], kernel)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    return [TensorType(x.dtype, (x.shape[0], channels, *window.out))]


def _infer_conv_transpose(ctx: InferenceContext) -> list[TensorType | None]:
    operands = _conv_operands(ctx)
    if operands is None:
        return [TensorType(ctx.type(0).dtype, None)]
    x, w, group = operands
    rank = len(x.shape) - 2
    if w.shape is not None and isinstance(x.shape[1], int) and isinstance(w.shape[0], int) and x.shape[1] != w.shape[0]:
        raise ctx.fail(f"X has {x.shape[1]} channels but W has {w.shape[0]}")
    channels = w.shape[1] * group if w.shape is not None and isinstance(w.shape[1], int) else None
    kernel = _kernel_shape(ctx, w, rank)
    if kernel is None:
        return [TensorType(x.dtype, (x.shape[0], channels, *[None] * rank))]
    try:
        window = transposed_window(ctx.node.attrs, x.shape[2:], kernel)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    return [TensorType(x.dtype, (x.shape[0], channels, *window.out))]


def _infer_deform_conv(ctx: InferenceContext) -> list[TensorType | None]:
    """The output has W's channel count and the offsets' spatial size."""
    operands = _conv_operands(ctx)
    if operands is None:
        return [TensorType(ctx.type(0).dtype, None)]
    x, w, _ = operands
    offset = ctx.type(2)
    channels = w.shape[0] if w.shape is not None else None
    if offset.shape is None:
        return [TensorType(x.dtype, (x.shape[0], channels, *[None] * (len(x.shape) - 2)))]
    if len(offset.shape) != len(x.shape):
        raise ctx.fail(f"offset of rank {len(offset.shape)} does not fit X of rank {len(x.shape)}")
    return [TensorType(x.dtype, (x.shape[0], channels, *offset.shape[2:]))]


register("Conv", _infer_conv, inputs=(2, 3), facts=GEMM.but(layout=Layout.ANCHOR))
register("ConvTranspose", _infer_conv_transpose, inputs=(2, 3), facts=GEMM.but(layout=Layout.ANCHOR, tensor_core=False))
register("DeformConv", _infer_deform_conv, inputs=(3, 5), facts=GEMM.but(tensor_core=False))
