"""Pooling: MaxPool, AveragePool, LpPool, GlobalMaxPool, GlobalAveragePool, GlobalLpPool,
MaxUnpool, written once for any number of spatial axes; and MaxRoiPool.

A pool visits the kernel taps in a short Python loop; each tap is one strided slice of the
padded input covering every window at once, so the work per tap is a single vectorized op.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from ....ir.ops.conv import Window, sliding_window
from ....ir.ops.pool import unpooled_sizes
from ....errors import ExecutionError
from ..kernel import OpRun
from .conv import pad_for_windows, padded_shape, strided
from .reduce import lowest, widened


class _Pool(OpRun):
    def window(self, x: np.ndarray) -> Window:
        ceil_mode = bool(self.attr("ceil_mode", 0))
        window = sliding_window(self.node.attrs, x.shape[2:], self.attr("kernel_shape"), ceil_mode)
        self.check_size(padded_shape(x.shape, window), x.dtype, "padded input")  # pads and strides may be anything
        return window


def _taps(x: np.ndarray, window: Window, fill: float | int) -> Iterator[np.ndarray]:
    """For each kernel tap (row-major), the (N, C, *out) slice of the padded input that tap
    reads in every window."""
    padded = pad_for_windows(x, window, fill)
    for tap in np.ndindex(*window.kernel):
        starts = [t * d for t, d in zip(tap, window.dilations)]
        yield padded[(..., *[strided(b, o, s) for b, o, s in zip(starts, window.out, window.strides)])]


def _window_counts(window: Window, sizes: tuple[int, ...], include_pad: bool) -> np.ndarray:
    """How many taps of each window (*out) fall inside the input, or inside input plus the
    declared pads; the window is a product of axes, so is its count."""
    rank = len(sizes)
    counts = np.ones((), np.int64)
    for a, size in enumerate(sizes):
        low, high = (-window.pads[a], size + window.pads[rank + a]) if include_pad else (0, size)
        where = (np.arange(window.out[a]) * window.strides[a] - window.pads[a])[:, None]
        where = where + np.arange(window.kernel[a]) * window.dilations[a]
        axis_counts = ((where >= low) & (where < high)).sum(axis=1)
        counts = np.multiply.outer(counts, axis_counts)
    return counts


class MaxPool(_Pool):
    """The largest value of each window (padding never wins); Indices gives where it was, as a
    flat index into X, over the spatial axes in row-major or (storage_order=1) column-major
    order. The first of equal values wins."""

    def run(self, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        window = self.window(x)
        want_indices = len(self.node.outputs) > 1 and bool(self.node.outputs[1])
        taps = _taps(x, window, lowest(x.dtype))
        best = next(taps).copy()
        best_tap = np.zeros(best.shape, np.int64) if want_indices else None
        for tap, values in enumerate(taps, start=1):
            better = values > best  # a NaN neither replaces nor is replaced (as ONNX's reference)
            np.copyto(best, values, where=better)
            if best_tap is not None:
                best_tap[better] = tap
        if best_tap is None:
            return best
        return best, self._flat_indices(x.shape, window, best_tap)

    def _flat_indices(self, shape: tuple[int, ...], window: Window, best_tap: np.ndarray) -> np.ndarray:
        n, c, *sizes = shape
        rank = len(sizes)
        taps = np.unravel_index(best_tap, window.kernel)
        order = range(rank - 1, -1, -1) if self.attr("storage_order", 0) else range(rank)
        index = np.zeros(best_tap.shape, np.int64)
        for a in order:
            starts = (np.arange(window.out[a]) * window.strides[a] - window.pads[a]).reshape(-1, *[1] * (rank - 1 - a))
            index = index * sizes[a] + starts + taps[a] * window.dilations[a]
        channel = np.arange(n * c, dtype=np.int64).reshape(n, c, *[1] * rank)
        return index + channel * math.prod(sizes)


class AveragePool(_Pool):
    """The mean of each window; padding counts towards the divisor only with
    count_include_pad=1 (and never the extra padding ceil mode adds)."""

    def run(self, x: np.ndarray) -> np.ndarray:
        window = self.window(x)
        total = sum(_taps(widened(x), window, 0))
        counts = _window_counts(window, x.shape[2:], bool(self.attr("count_include_pad", 0)))
        return (total / counts).astype(x.dtype, copy=False)


class LpPool(_Pool):
    """The p-norm of each window."""

    def run(self, x: np.ndarray) -> np.ndarray:
        p = float(self.attr("p", 2))
        total = sum(np.abs(values) ** p for values in _taps(widened(x), self.window(x), 0))
        return (total ** (1 / p)).astype(x.dtype, copy=False)


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


class GlobalMaxPool(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return np.max(x, axis=_spatial_axes(x), keepdims=True)


class GlobalAveragePool(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        return np.mean(widened(x), axis=_spatial_axes(x), keepdims=True).astype(x.dtype, copy=False)


class GlobalLpPool(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        p = float(self.attr("p", 2))
        total = np.sum(np.abs(widened(x)) ** p, axis=_spatial_axes(x), keepdims=True)
        return (total ** (1 / p)).astype(x.dtype, copy=False)


class MaxUnpool(OpRun):
    """Scatters X to the flat positions in I of the tensor MaxPool's attributes restore
    ((in - 1) * stride - pads + kernel per axis); an output_shape input then pads (or crops)
    that tensor at the end, as ONNX's node tests expect."""

    def run(self, x: np.ndarray, indices: np.ndarray, output_shape: np.ndarray | None = None) -> np.ndarray:
        restored = (*x.shape[:2], *unpooled_sizes(self.node.attrs, x.shape[2:], self.attr("kernel_shape")))
        self.check_size(restored, x.dtype)
        flat = np.zeros(math.prod(restored), x.dtype)
        flat[indices.reshape(-1)] = x.reshape(-1)
        y = flat.reshape(restored)
        if output_shape is None:
            return y
        self.check_size(output_shape.reshape(-1), x.dtype)
        result = np.zeros([int(d) for d in output_shape], x.dtype)
        common = tuple(slice(0, min(a, b)) for a, b in zip(result.shape, y.shape))
        result[common] = y[common]
        return result


class MaxRoiPool(OpRun):
    """Caffe's ROIPooling, as ONNX Runtime computes it: each roi's corners are scaled and
    rounded half away from zero, the roi (at least 1x1) is cut into pooled_h x pooled_w bins
    of floor/ceil bounds clipped to the image, and each bin gives its maximum (0 if empty)."""

    def run(self, x: np.ndarray, rois: np.ndarray) -> np.ndarray:
        pooled_h, pooled_w = self.attr("pooled_shape")
        scale = float(self.attr("spatial_scale"))
        _, channels, height, width = x.shape
        y = np.zeros((len(rois), channels, pooled_h, pooled_w), x.dtype)
        for n, roi in enumerate(rois.astype(np.float32)):
            batch = int(roi[0])
            if not 0 <= batch < x.shape[0]:
                raise ExecutionError(f"{self.node.label}: roi {n} names batch {batch}, X has {x.shape[0]}")
            x1, y1, x2, y2 = (int(round_half_away(v * np.float32(scale))) for v in roi[1:])
            rows = _roi_bins(y1, max(y2 - y1 + 1, 1), pooled_h, height)
            cols = _roi_bins(x1, max(x2 - x1 + 1, 1), pooled_w, width)
            for ph, (top, bottom) in enumerate(rows):
                for pw, (left, right) in enumerate(cols):
                    if bottom > top and right > left:
                        y[n, :, ph, pw] = x[batch, :, top:bottom, left:right].max(axis=(1, 2))
        return y


def round_half_away(v: float) -> float:
    """C's round(): halves away from zero (numpy rounds them to even)."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


def _roi_bins(start: int, extent: int, bins: int, size: int) -> list[tuple[int, int]]:
    """[begin, end) of each of ``bins`` bins of an roi axis starting at ``start``, ``extent``
    pixels long, clipped to [0, size]."""
    step = np.float32(extent) / np.float32(bins)
    return [(min(max(int(math.floor(np.float32(b) * step)) + start, 0), size),
             min(max(int(math.ceil(np.float32(b + 1) * step)) + start, 0), size)) for b in range(bins)]
