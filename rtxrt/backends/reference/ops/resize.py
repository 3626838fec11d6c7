"""Resampling kernels: Resize, Upsample and Col2Im.

Resize is separable: it resamples one axis at a time. Nearest mode gathers (exact for every
dtype); linear and cubic modes multiply by a per-axis weight matrix (output positions × input
positions) built from the coordinate transform and the interpolation kernel, in float64.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ....ir.ops.resize import (
    UPSAMPLE_SCALES_INPUT_SINCE,
    fit_sizes,
    resize_input_positions,
    scaled_dim,
    source_coordinates,
)
from ..kernel import OpRun
from .tensor import ints

_ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


@dataclass(frozen=True)
class _Options:
    mode: str = "nearest"
    transform: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation: float = 0.0
    antialias: bool = False
    axes: tuple[int, ...] | None = None
    policy: str = "stretch"


def _linear(d: np.ndarray) -> np.ndarray:
    return np.maximum(1 - np.abs(d), 0)


def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def kernel(d: np.ndarray) -> np.ndarray:  # Keys' cubic convolution kernel
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))

    return kernel


def _weights(coords: np.ndarray, in_len: int, kernel: Callable, support: int, scale: float,
             o: _Options) -> np.ndarray:
    """Interpolation matrix (len(coords), in_len)."""
    # antialiasing stretches the filter by 1/scale when downsampling
    stretch = min(scale, 1.0) if o.antialias else 1.0
    first = math.floor(-support / stretch) + 1
    taps = np.arange(first, 2 - first)
    base = np.floor(coords)
    w = kernel((taps[None, :] - (coords - base)[:, None]) * stretch)
    if o.antialias:
        w = w / w.sum(axis=1, keepdims=True)
    positions = base.astype(np.int64)[:, None] + taps[None, :]
    if o.exclude_outside:
        w = np.where((positions < 0) | (positions >= in_len), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    matrix = np.zeros((len(coords), in_len))
    rows = np.broadcast_to(np.arange(len(coords))[:, None], positions.shape)
    np.add.at(matrix, (rows, np.clip(positions, 0, in_len - 1)), w)  # clamping = edge padding
    return matrix


def _resize_axis(y: np.ndarray, axis: int, out_len: int, scale: float, length: float,
                 box: tuple[float, float], o: _Options) -> np.ndarray:
    in_len = y.shape[axis]
    coords = source_coordinates(o.transform, out_len, in_len, scale, length, box)
    if o.mode == "nearest":
        index = np.clip(_ROUNDING[o.nearest_mode](coords), 0, in_len - 1).astype(np.intp)
        y = np.take(y, index, axis=axis)
    elif o.mode in ("linear", "cubic"):
        kernel, support = (_linear, 1) if o.mode == "linear" else (_cubic(o.cubic_a), 2)
        matrix = _weights(coords, in_len, kernel, support, scale, o)
        y = np.moveaxis(np.tensordot(matrix, y.astype(np.float64, copy=False), axes=([1], [axis])), 0, axis)
    else:
        raise ValueError(f"unknown mode {o.mode!r}")
    if o.transform == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > in_len - 1)
        if outside.any():
            shape = [1] * y.ndim
            shape[axis] = out_len
            y = np.where(outside.reshape(shape), o.extrapolation, y)
    return y


def _saturate(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return y.astype(dtype)


def _resize(op: OpRun, x: np.ndarray, scales: np.ndarray | None, sizes: np.ndarray | None,
            roi: np.ndarray | None, o: _Options) -> np.ndarray:
    axes = [a % x.ndim for a in (o.axes if o.axes is not None else range(x.ndim))]
    in_dims = [x.shape[a] for a in axes]
    if sizes is not None:
        out_dims, shared = fit_sizes(in_dims, ints(sizes), o.policy)
        if shared is None:
            axis_scales = [s / d if d else 1.0 for s, d in zip(out_dims, in_dims)]
            lengths = [float(s) for s in out_dims]
        else:
            axis_scales = [shared] * len(axes)
            lengths = [shared * d for d in in_dims]
    else:
        axis_scales = [float(s) for s in np.asarray(scales).reshape(-1)]
        out_dims = [scaled_dim(d, s) for d, s in zip(in_dims, axis_scales)]
        lengths = [s * d for s, d in zip(axis_scales, in_dims)]
    if len(axis_scales) != len(axes):
        raise ValueError(f"scales or sizes must have one entry per resized axis {axes}")
    resized = dict(zip(axes, out_dims))
    op.check_size([resized.get(a, d) for a, d in enumerate(x.shape)], np.float64)  # scales and sizes may be anything
    boxes = [(0.0, 1.0)] * len(axes)
    if o.transform == "tf_crop_and_resize":
        if roi is None or roi.size == 0:
            raise ValueError("coordinate_transformation_mode tf_crop_and_resize needs roi")
        r = np.asarray(roi, np.float64).reshape(-1)
        half = len(r) // 2
        picks = range(len(axes)) if half == len(axes) else axes  # roi per listed axis or per axis
        boxes = [(r[i], r[half + i]) for i in picks]
    y = x
    for axis, out_len, scale, length, box in zip(axes, out_dims, axis_scales, lengths, boxes):
        if scale == 1 and out_len == y.shape[axis] and o.transform != "tf_crop_and_resize":
            continue
        y = _resize_axis(y, axis, out_len, scale, length, box, o)
    return y if y.dtype == x.dtype else _saturate(y, x.dtype)


def _present(array: np.ndarray | None) -> np.ndarray | None:
    """Scales or sizes given as an empty tensor count as omitted."""
    return None if array is None or array.size == 0 else array


class Resize(OpRun):
    def run(self, x: np.ndarray, *rest: np.ndarray | None) -> np.ndarray:
        inputs = (x, *rest) + (None,) * 3
        scales_at, sizes_at = resize_input_positions(self.opset)
        scales, sizes = _present(inputs[scales_at]), _present(inputs[sizes_at] if sizes_at else None)
        if (scales is None) == (sizes is None):
            raise ValueError("exactly one of scales and sizes must be given")
        since_11 = sizes_at is not None  # Resize-10 samples asymmetrically, rounding down
        options = _Options(
            mode=self.attr("mode", "nearest"),
            transform=self.attr("coordinate_transformation_mode", "half_pixel") if since_11 else "asymmetric",
            nearest_mode=self.attr("nearest_mode", "round_prefer_floor") if since_11 else "floor",
            cubic_a=self.attr("cubic_coeff_a", -0.75),
            exclude_outside=bool(self.attr("exclude_outside", 0)),
            extrapolation=self.attr("extrapolation_value", 0.0),
            antialias=bool(self.attr("antialias", 0)),
            axes=self.attr("axes"),
            policy=self.attr("keep_aspect_ratio_policy", "stretch"),
        )
        return _resize(self, x, scales, sizes, inputs[1] if since_11 else None, options)


class Upsample(OpRun):
    """Deprecated since opset 10: Resize with asymmetric coordinates and nearest rounding down."""

    def run(self, x: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        if self.opset < UPSAMPLE_SCALES_INPUT_SINCE:
            scales = np.array(self.attr("scales"), np.float32)
        options = _Options(mode=self.attr("mode", "nearest"), transform="asymmetric", nearest_mode="floor")
        return _resize(self, x, scales, None, None, options)


class Col2Im(OpRun):
    """Sums column blocks (N, C * prod(block), L) back into images (N, C, *image_shape),
    one strided slice per block offset."""

    def run(self, x: np.ndarray, image_shape: np.ndarray, block_shape: np.ndarray) -> np.ndarray:
        image, block = ints(image_shape), ints(block_shape)
        rank = len(image)
        strides = self.attr("strides", [1] * rank)
        dilations = self.attr("dilations", [1] * rank)
        pads = self.attr("pads", [0] * 2 * rank)
        padded = [size + pads[i] + pads[i + rank] for i, size in enumerate(image)]
        self.check_size(padded, x.dtype, "padded image")
        counts = [(p - d * (b - 1) - 1) // s + 1 for p, d, b, s in zip(padded, dilations, block, strides)]
        n, columns, length = x.shape
        if columns % math.prod(block) or length != math.prod(counts):
            raise ValueError(f"input {x.shape} does not hold blocks {block} of image {image} ({counts} positions)")
        channels = columns // math.prod(block)
        blocks = x.reshape(n, channels, *block, *counts)
        out = np.zeros((n, channels, *padded), dtype=x.dtype)
        for offset in np.ndindex(*block):
            window = tuple(
                slice(k * d, k * d + (c - 1) * s + 1, s) for k, d, c, s in zip(offset, dilations, counts, strides)
            )
            out[(..., *window)] += blocks[(slice(None), slice(None), *offset)]
        return out[(..., *(slice(p, p + size) for p, size in zip(pads, image)))]
