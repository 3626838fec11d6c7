"""Convolutions: Conv, ConvTranspose and DeformConv, each written once for any number of
spatial axes.

Conv is im2col plus one matmul: a strided view of the padded input holds every window without
copying (``sliding_window_view``), one reshape lays the windows out as a
(group, C/group * kernel, N * positions) matrix and a batched matmul applies every group's
filters at once. Narrow floats are computed in float32 and cast back.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ....ir.ops.conv import Window, sliding_window, transposed_window
from ..kernel import OpRun


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays; every other type is computed in float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _pad_widths(shape: Sequence[int], window: Window) -> list[tuple[int, int]]:
    """The begin pads, and at the end as far as the last window reaches (past the end pads in
    ceil mode, short of them when unused), of an (N, C, *spatial) ``shape``."""
    rank = len(shape) - 2
    begins = window.pads[:rank]
    ends = [
        max(0, max(o - 1, 0) * s + e - size - b)
        for o, s, e, size, b in zip(window.out, window.strides, window.extents, shape[2:], begins)
    ]
    return list(zip(begins, ends))


def padded_shape(shape: Sequence[int], window: Window) -> tuple[int, ...]:
    return (*shape[:2], *(size + b + e for size, (b, e) in zip(shape[2:], _pad_widths(shape, window))))


def pad_for_windows(x: np.ndarray, window: Window, value: float | int = 0) -> np.ndarray:
    """``x`` (N, C, *spatial) padded with ``value`` as far as the windows reach."""
    widths = _pad_widths(x.shape, window)
    if not any(b or e for b, e in widths):
        return x
    return np.pad(x, [(0, 0), (0, 0), *widths], mode="constant", constant_values=value)


def strided(start: int, count: int, step: int) -> slice:
    """``count`` positions from ``start``, ``step`` apart."""
    return slice(start, start + (count - 1) * step + 1 if count else start, step)


def windows(x: np.ndarray, window: Window) -> np.ndarray:
    """A (N, C, *out, *kernel) view of the zero-padded ``x``: every window, none copied."""
    view = sliding_window_view(pad_for_windows(x, window), window.extents, axis=tuple(range(2, x.ndim)))
    starts = tuple(strided(0, o, s) for o, s in zip(window.out, window.strides))
    taps = tuple(slice(None, None, d) for d in window.dilations)
    return view[(slice(None), slice(None), *starts, *taps)]


def grouped_matmul(cols: np.ndarray, w: np.ndarray, group: int) -> np.ndarray:
    """Applies filters ``w`` (M, C/group, *kernel) to windows ``cols`` (N, C, *out, *kernel):
    the (N, M, *out) result of a grouped convolution."""
    n, c = cols.shape[:2]
    rank = w.ndim - 2
    out = cols.shape[2 : 2 + rank]
    grouped = cols.reshape(n, group, c // group, *cols.shape[2:])
    # (group, C/group, *kernel, N, *out): the reshape below is the one im2col copy
    order = (1, 2, *range(3 + rank, 3 + 2 * rank), 0, *range(3, 3 + rank))
    matrix = grouped.transpose(order).reshape(group, c // group * math.prod(w.shape[2:]), n * math.prod(out))
    y = np.matmul(w.reshape(group, w.shape[0] // group, -1), matrix)
    return y.reshape(w.shape[0], n, *out).swapaxes(0, 1)


def _add_bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if b is not None:
        y += b.reshape(-1, *[1] * (y.ndim - 2)).astype(y.dtype, copy=False)
    return y


class Conv(OpRun):
    def run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        group = int(self.attr("group", 1))
        if x.shape[1] != w.shape[1] * group or w.shape[0] % group:
            raise ValueError(f"X of shape {x.shape} does not fit W of shape {w.shape} with group {group}")
        window = sliding_window(self.node.attrs, x.shape[2:], w.shape[2:])
        dtype = compute_dtype(x.dtype)
        self.check_size(padded_shape(x.shape, window), dtype, "padded input")  # pads and strides may be anything
        positions, taps = x.shape[0] * math.prod(window.out), x.shape[1] * math.prod(w.shape[2:])
        self.check_size((positions, taps), dtype, "im2col matrix")
        y = grouped_matmul(windows(x.astype(dtype, copy=False), window), w.astype(dtype, copy=False), group)
        return _add_bias(y, b).astype(x.dtype, copy=False)


class ConvTranspose(OpRun):
    """Each input pixel adds W times its value to a window of the output: one matmul gives
    every pixel's contribution per kernel tap, and one strided add per tap places them all."""

    def run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        group = int(self.attr("group", 1))
        n, c, *sizes = x.shape
        if c != w.shape[0] or c % group:
            raise ValueError(f"X of shape {x.shape} does not fit W of shape {w.shape} with group {group}")
        window = transposed_window(self.node.attrs, sizes, w.shape[2:])
        rank, m = len(sizes), w.shape[1] * group
        dtype = compute_dtype(x.dtype)
        pixels = x.astype(dtype, copy=False).reshape(n, group, c // group, -1).transpose(1, 2, 0, 3)
        filters = w.astype(dtype, copy=False).reshape(group, c // group, -1).transpose(0, 2, 1)
        contributions = np.matmul(filters, pixels.reshape(group, c // group, -1))
        contributions = contributions.reshape(m, *window.kernel, n, *sizes)
        begins = window.pads[:rank]
        canvas_sizes = [b + o + max(0, e) for b, o, e in zip(begins, window.out, window.pads[rank:])]
        self.check_size((m, n, *canvas_sizes), dtype)
        canvas = np.zeros((m, n, *canvas_sizes), dtype)
        for tap in np.ndindex(*window.kernel):
            region = [strided(t * d, i, s) for t, d, s, i in zip(tap, window.dilations, window.strides, sizes)]
            canvas[(slice(None), slice(None), *region)] += contributions[(slice(None), *tap)]
        y = canvas[(slice(None), slice(None), *[slice(b, b + o) for b, o in zip(begins, window.out)])]
        return _add_bias(np.ascontiguousarray(y.swapaxes(0, 1)), b).astype(x.dtype, copy=False)


class DeformConv(OpRun):
    """A convolution whose taps sample the input at learned fractional offsets (multilinear
    interpolation, zero outside the input), each tap optionally scaled by a mask."""

    def run(
        self,
        x: np.ndarray,
        w: np.ndarray,
        offset: np.ndarray,
        b: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        group, offset_group = int(self.attr("group", 1)), int(self.attr("offset_group", 1))
        n, c, *sizes = x.shape
        kernel, rank = w.shape[2:], len(sizes)
        taps, positions = math.prod(kernel), math.prod(offset.shape[2:])
        if c != w.shape[1] * group or c % offset_group or offset.shape[1] != offset_group * taps * rank:
            raise ValueError(f"X {x.shape}, W {w.shape} and offset {offset.shape} do not fit")
        window = sliding_window(self.node.attrs, sizes, kernel)
        if tuple(window.out) != offset.shape[2:]:
            raise ValueError(f"offset spatial shape {offset.shape[2:]} differs from the output's {window.out}")
        dtype = compute_dtype(x.dtype)
        # where each tap of each window samples, per axis: (N, offset_group, taps, positions)
        shifts = offset.astype(dtype, copy=False).reshape(n, offset_group, taps, rank, positions)
        grid = np.indices((*kernel, *window.out)).reshape(2 * rank, taps, positions)
        coords = [
            (grid[rank + a] * window.strides[a] - window.pads[a] + grid[a] * window.dilations[a]) + shifts[:, :, :, a]
            for a in range(rank)
        ]
        flat = x.astype(dtype, copy=False).reshape(n, offset_group, c // offset_group, -1)
        samples = _interpolate(flat, sizes, coords)
        if mask is not None:
            samples *= mask.astype(dtype, copy=False).reshape(n, offset_group, 1, taps, positions)
        cols = samples.reshape(n, c, *kernel, *window.out)
        cols = np.moveaxis(cols, tuple(range(2, 2 + rank)), tuple(range(2 + rank, 2 + 2 * rank)))
        y = grouped_matmul(cols, w.astype(dtype, copy=False), group)
        return _add_bias(np.ascontiguousarray(y), b).astype(x.dtype, copy=False)


def _interpolate(flat: np.ndarray, sizes: Sequence[int], coords: list[np.ndarray]) -> np.ndarray:
    """Samples ``flat`` (N, G, C, prod(sizes)) at fractional ``coords`` (one (N, G, *where)
    array per axis) by multilinear interpolation; corners outside the input count as zero.
    Returns (N, G, C, *where)."""
    lows = [np.floor(p) for p in coords]
    where = coords[0].shape
    result = np.zeros((*flat.shape[:3], *where[2:]), flat.dtype)
    for corner in itertools.product((0, 1), repeat=len(sizes)):
        index = np.zeros(where, np.int64)
        weight = np.ones(where, flat.dtype)
        for size, low, p, bit in zip(sizes, lows, coords, corner):
            at = low.astype(np.int64) + bit
            weight *= (p - low) if bit else (1 - (p - low))
            weight *= (at >= 0) & (at < size)
            index = index * size + np.clip(at, 0, size - 1)
        picked = np.take_along_axis(flat, index.reshape(*where[:2], 1, -1), axis=3)
        result += (picked * weight.reshape(*where[:2], 1, -1)).reshape(result.shape)
    return result
