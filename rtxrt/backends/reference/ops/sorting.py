"""Sorting and scans: TopK, CumSum, CumProd."""
from __future__ import annotations

import numpy as np

from ..kernel import OpRun
from .reduce import normalize_axis, widened


class TopK(OpRun):
    """The k largest (or smallest) values along ``axis``, sorted; ties keep the smaller index
    first. Always sorted: for sorted=0 any order is allowed."""

    def run(self, x: np.ndarray, k: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        count = int(self.attr("k") if self.opset < 10 else np.asarray(k).reshape(-1)[0])
        axis = normalize_axis(self.attr("axis", -1), x.ndim)
        size = x.shape[axis]
        if not 0 <= count <= size:
            raise ValueError(f"K={count} is outside [0, {size}] for axis {axis}")
        keys = widened(x)  # numpy sorts the narrow floats of ml_dtypes slowly or not at all
        if self.attr("largest", 1):
            # a stable ascending sort of the reversed axis, read backwards, is descending
            # with ties in ascending index order
            order = np.argsort(np.flip(keys, axis), axis=axis, kind="stable")
            order = size - 1 - np.flip(order, axis)
        else:
            order = np.argsort(keys, axis=axis, kind="stable")
        index = np.take(order, np.arange(count), axis=axis).astype(np.int64, copy=False)
        return np.take_along_axis(x, index, axis=axis), index


class _Scan(OpRun):
    """Inclusive scan with ``ufunc`` along the ``axis`` input; ``exclusive`` shifts it by one
    (starting from the identity), ``reverse`` runs it from the end."""

    ufunc: np.ufunc

    def run(self, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        axis = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)
        reverse = bool(self.attr("reverse", 0))
        moved = np.moveaxis(widened(x), axis, -1)
        if reverse:
            moved = moved[..., ::-1]
        acc = self.ufunc.accumulate(moved, axis=-1, dtype=moved.dtype)
        if self.attr("exclusive", 0) and acc.shape[-1]:
            start = np.full_like(acc[..., :1], self.ufunc.identity)
            acc = np.concatenate([start, acc[..., :-1]], axis=-1)
        if reverse:
            acc = acc[..., ::-1]
        return np.ascontiguousarray(np.moveaxis(acc, -1, axis)).astype(x.dtype, copy=False)


class CumSum(_Scan):
    ufunc = np.add


class CumProd(_Scan):
    ufunc = np.multiply
