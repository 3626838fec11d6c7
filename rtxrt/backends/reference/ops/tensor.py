"""Shape and data-movement kernels: Constant, ConstantOfShape, Identity, Dropout, Shape, Size,
Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad,
CenterCropPad, Range, Trilu, EyeLike, DepthToSpace, SpaceToDepth."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ....ir.dtypes import DType
from ....ir.ops.tensor import (
    AXES_INPUT_SINCE, DROPOUT_RATIO_INPUT_SINCE, PADS_INPUT_SINCE, SLICE_INPUTS_SINCE, SPLIT_INPUT_SINCE,
    range_length, split_sizes,
)
from ..kernel import OpRun


def ints(array: np.ndarray | Sequence[int]) -> list[int]:
    """A shape-like input (any int or float array) as a list of Python ints."""
    return [int(v) for v in np.asarray(array).reshape(-1)]


def scalar(array: np.ndarray) -> int | float | bool:
    """The one value of a scalar input (0-d or a 1-element tensor)."""
    return np.asarray(array).reshape(-1)[0].item()


def pad(x: np.ndarray, widths: Sequence[tuple[int, int]], mode: str = "constant", value=0) -> np.ndarray:
    """Pad each axis by (begin, end); negative widths crop that side first."""
    crop = tuple(slice(max(-b, 0), size - max(-e, 0)) for size, (b, e) in zip(x.shape, widths))
    x = x[crop]
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    if not any(b or e for b, e in grow):
        return x
    if mode == "constant":
        return np.pad(x, grow, mode="constant", constant_values=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise ValueError(f"unknown pad mode {mode!r}")
    if any(size == 0 and (b or e) for size, (b, e) in zip(x.shape, grow)):
        raise ValueError(f"cannot pad an empty axis in {mode} mode")
    return np.pad(x, grow, mode=mode)


def padded_shape(shape: Sequence[int], widths: Sequence[tuple[int, int]]) -> list[int]:
    return [size + b + e for size, (b, e) in zip(shape, widths)]


class Constant(OpRun):
    def run(self) -> np.ndarray:
        return self.attr("value")


class ConstantOfShape(OpRun):
    def run(self, shape: np.ndarray) -> np.ndarray:
        value = self.attr("value")
        value = np.zeros(1, np.float32) if value is None else value
        self.check_size(ints(shape), value.dtype)
        return np.full(ints(shape), value.reshape(-1)[0], dtype=value.dtype)


class Identity(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return x


class Dropout(OpRun):
    """Inference semantics: the output is the input and the mask is all True. Training mode
    with a non-zero ratio draws random masks, which an inference runtime does not do."""

    def run(self, x, ratio=None, training_mode=None) -> tuple[np.ndarray, np.ndarray]:
        if self.opset < DROPOUT_RATIO_INPUT_SINCE:
            ratio, training = self.attr("ratio", 0.5), False
        else:
            ratio = 0.5 if ratio is None else float(scalar(ratio))
            training = training_mode is not None and bool(scalar(training_mode))
        if training and ratio > 0:
            raise NotImplementedError("Dropout with training_mode=True and ratio > 0 is not supported")
        return x, np.ones(x.shape, dtype=np.bool_)


class Shape(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return np.array(x.shape[self.attr("start", 0): self.attr("end")], dtype=np.int64)


class Size(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return np.array(x.size, dtype=np.int64)


class Reshape(OpRun):
    def run(self, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        target = ints(shape)
        if not self.attr("allowzero", 0):  # 0 copies the input's dim
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(target)


class Flatten(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        axis = self.attr("axis", 1)
        if not -x.ndim <= axis <= x.ndim:
            raise ValueError(f"axis {axis} is out of range for rank {x.ndim}")
        axis += x.ndim if axis < 0 else 0
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


class _AxesOp(OpRun):
    def axes(self, axes: np.ndarray | None) -> list[int] | None:
        if self.opset < AXES_INPUT_SINCE:
            return self.attr("axes")
        return None if axes is None else ints(axes)


class Squeeze(_AxesOp):
    def run(self, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        axes = self.axes(axes)
        return np.squeeze(x, axis=tuple(axes) if axes else None)


class Unsqueeze(_AxesOp):
    def run(self, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        return np.expand_dims(x, tuple(self.axes(axes)))


class Transpose(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return np.transpose(x, self.attr("perm"))


class DepthToSpace(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        b = self.attr("blocksize")
        n, c, h, w = x.shape
        if self.attr("mode", "DCR") == "DCR":
            blocks = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            blocks = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return blocks.reshape(n, c // (b * b), h * b, w * b)


class SpaceToDepth(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        b = self.attr("blocksize")
        n, c, h, w = x.shape
        blocks = x.reshape(n, c, h // b, b, w // b, b)
        order = (0, 3, 5, 1, 2, 4) if self.attr("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
        return blocks.transpose(order).reshape(n, c * b * b, h // b, w // b)


class Concat(OpRun):
    def run(self, *inputs: np.ndarray | None) -> np.ndarray:
        return np.concatenate([x for x in inputs if x is not None], axis=self.attr("axis"))


class Split(OpRun):
    def run(self, x: np.ndarray, split: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        axis = self.attr("axis", 0)
        if self.opset < SPLIT_INPUT_SINCE:
            split = self.attr("split")
        sizes = ints(split) if split is not None else []
        if not sizes:
            sizes = split_sizes(x.shape[axis], self.attr("num_outputs", len(self.node.outputs)))
        if sum(sizes) != x.shape[axis] or min(sizes) < 0:
            raise ValueError(f"split {sizes} does not divide dim {x.shape[axis]} of axis {axis}")
        return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


class Slice(OpRun):
    def run(self, x, starts=None, ends=None, axes=None, steps=None) -> np.ndarray:
        if self.opset < SLICE_INPUTS_SINCE:
            starts, ends, axes = self.attr("starts"), self.attr("ends"), self.attr("axes")
        starts, ends = ints(starts), ints(ends)
        axes = range(len(starts)) if axes is None else ints(axes)
        steps = [1] * len(starts) if steps is None else ints(steps)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise ValueError(f"starts {starts}, ends {ends}, axes {list(axes)} and steps {steps} differ in length")
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step == 0:
                raise ValueError("slice step must not be 0")
            index[axis] = slice(start, end, step)  # Python's clamping is exactly ONNX's
        return x[tuple(index)]


class Expand(OpRun):
    def run(self, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        shape = np.broadcast_shapes(x.shape, tuple(ints(shape)))
        self.check_size(shape, x.dtype)
        return np.broadcast_to(x, shape).copy()


class Tile(OpRun):
    def run(self, x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
        repeats = ints(repeats)
        if len(repeats) != x.ndim:
            raise ValueError(f"repeats {repeats} must have one entry per axis of rank {x.ndim}")
        self.check_size([d * r for d, r in zip(x.shape, repeats)], x.dtype)
        return np.tile(x, repeats)


class Pad(OpRun):
    def run(self, x, pads=None, constant_value=None, axes=None) -> np.ndarray:
        if self.opset < PADS_INPUT_SINCE:
            pads, value = self.attr("pads"), self.attr("value", 0.0)
        else:
            value = 0 if constant_value is None or constant_value.size == 0 else constant_value.reshape(-1)[0]
        pads = ints(pads)
        axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in ints(axes)]
        if len(pads) != 2 * len(axes):
            raise ValueError(f"pads {pads} must hold a begin and an end for each of the axes {axes}")
        widths = [(0, 0)] * x.ndim
        for i, axis in enumerate(axes):
            widths[axis] = (pads[i], pads[i + len(axes)])
        self.check_size(padded_shape(x.shape, widths), x.dtype)
        return pad(x, widths, self.attr("mode", "constant"), value)


class CenterCropPad(OpRun):
    def run(self, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        axes = [a % x.ndim for a in self.attr("axes", range(x.ndim))]
        widths = [(0, 0)] * x.ndim
        for axis, size in zip(axes, ints(shape), strict=True):
            grow = size - x.shape[axis]
            # the crop window starts rounded down; an odd extra pad pixel goes to the end
            begin = grow // 2 if grow >= 0 else -(-grow // 2)
            widths[axis] = (begin, grow - begin)
        self.check_size(padded_shape(x.shape, widths), x.dtype)
        return pad(x, widths)


class Range(OpRun):
    def run(self, start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
        dtype = start.dtype
        first, step = scalar(start), scalar(delta)
        count = range_length(first, scalar(limit), step)
        self.check_size([count], dtype)
        if not DType.from_numpy(dtype).is_float:
            return (first + np.arange(count, dtype=np.int64) * step).astype(dtype)
        # float16/bfloat16 accumulate in stash_type (float32 by default)
        compute = dtype
        if dtype.itemsize < 4:
            compute = np.dtype(np.float64 if self.attr("stash_type", 1) == DType.FLOAT64 else np.float32)
        return (compute.type(first) + np.arange(count, dtype=compute) * compute.type(step)).astype(dtype)


class Trilu(OpRun):
    def run(self, x: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
        diagonal = 0 if k is None else int(scalar(k))
        return np.triu(x, diagonal) if self.attr("upper", 1) else np.tril(x, diagonal)


class EyeLike(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        dtype = self.attr("dtype")
        dtype = x.dtype if dtype is None else DType(dtype).numpy
        return np.eye(x.shape[0], x.shape[1], self.attr("k", 0), dtype=dtype)
