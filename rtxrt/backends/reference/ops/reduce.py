"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax, ArgMin."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ....ir.dtypes import DType
from ....ir.ops.reduce import axes_input_since
from ..kernel import OpRun


def widened(x: np.ndarray) -> np.ndarray:
    """``x`` in the type to accumulate in: float32 for the narrow floats (float16, bfloat16)."""
    narrow = x.dtype.itemsize < 4 and DType.from_numpy(x.dtype).is_float
    return x.astype(np.float32) if narrow else x


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def lowest(dtype: np.dtype) -> float | int | bool:
    """The identity of max: what a max over no values gives."""
    if dtype == np.bool_:
        return False
    return np.iinfo(dtype).min if np.issubdtype(dtype, np.integer) else -np.inf


def highest(dtype: np.dtype) -> float | int | bool:
    """The identity of min."""
    if dtype == np.bool_:
        return True
    return np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else np.inf


class _Reduce(OpRun):
    """Resolves axes (attribute or input, by opset), keepdims and noop_with_empty_axes;
    subclasses compute on the widened input and the result is cast back."""

    def run(self, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        if self.opset < axes_input_since(self.op_type):
            axes = self.attr("axes")
        listed = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        if not listed and not self.attr("noop_with_empty_axes", 0):
            listed = list(range(x.ndim))
        # reducing over no axes still applies the per-element part (square, abs, log, ...)
        resolved = tuple(sorted(normalize_axis(a, x.ndim) for a in listed)) if x.ndim else ()
        keepdims = bool(self.attr("keepdims", 1))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            result = self.reduce(widened(x), resolved, keepdims)
        return np.asarray(result).astype(x.dtype, copy=False)

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        raise NotImplementedError


class ReduceSum(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.sum(x, axis=axes, keepdims=keepdims)


class ReduceMean(_Reduce):
    def reduce(self, x, axes, keepdims):
        count = int(np.prod([x.shape[a] for a in axes]))  # 0 for an empty set: the mean is nan
        return np.sum(x, axis=axes, keepdims=keepdims) / count


class ReduceMax(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.max(x, axis=axes, keepdims=keepdims, initial=lowest(x.dtype))


class ReduceMin(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.min(x, axis=axes, keepdims=keepdims, initial=highest(x.dtype))


class ReduceProd(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.prod(x, axis=axes, keepdims=keepdims)


class ReduceL1(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.sum(np.abs(x), axis=axes, keepdims=keepdims)


class ReduceL2(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.sqrt(np.sum(np.square(x), axis=axes, keepdims=keepdims))


class ReduceSumSquare(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.sum(np.square(x), axis=axes, keepdims=keepdims)


class ReduceLogSum(_Reduce):
    def reduce(self, x, axes, keepdims):
        return np.log(np.sum(x, axis=axes, keepdims=keepdims))


class ReduceLogSumExp(_Reduce):
    def reduce(self, x, axes, keepdims):
        # subtract the max for stability, unless it is infinite (inf - inf would be nan)
        top = np.max(x, axis=axes, keepdims=True, initial=lowest(x.dtype))
        top = np.where(np.isfinite(top), top, 0)
        result = np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top
        return result if keepdims else np.squeeze(result, axis=axes)


class _Arg(OpRun):
    """Index of the first (or, with select_last_index, the last) extreme along ``axis``."""

    pick: Callable[..., np.ndarray]

    def run(self, x: np.ndarray) -> np.ndarray:
        axis = normalize_axis(self.attr("axis", 0), x.ndim)
        if self.attr("select_last_index", 0):
            index = x.shape[axis] - 1 - self.pick(np.flip(x, axis), axis=axis)
        else:
            index = self.pick(x, axis=axis)
        index = np.asarray(index, dtype=np.int64)
        return np.expand_dims(index, axis) if self.attr("keepdims", 1) else index


class ArgMax(_Arg):
    pick = staticmethod(np.argmax)


class ArgMin(_Arg):
    pick = staticmethod(np.argmin)
