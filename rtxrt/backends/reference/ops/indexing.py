"""Indexing kernels: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND,
TensorScatter, OneHot, NonZero, Compress, Unique, ReverseSequence.

Negative indices count from the end, as numpy's fancy indexing already does."""
from __future__ import annotations

import math

import numpy as np

from ..kernel import OpRun
from .tensor import scalar

_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(data: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    """A copy of ``data`` with ``updates`` written (or combined by ``reduction``) at ``index``."""
    out = data.copy()
    if reduction == "none":
        out[index] = updates
    elif reduction in _REDUCTIONS:
        _REDUCTIONS[reduction].at(out, index, updates)  # .at: repeated indices all count
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return out


def _along_axis(indices: np.ndarray, axis: int, shape: tuple[int, ...]) -> tuple:
    """Index tuple over a ``shape`` block: position ``indices`` (broadcast to it) along
    ``axis`` and each element's own position along the other axes."""
    index = list(np.indices(shape, sparse=True))
    index[axis] = indices
    return tuple(index)


class Gather(OpRun):
    def run(self, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return np.asarray(np.take(data, indices, axis=self.attr("axis", 0)))


class GatherElements(OpRun):
    def run(self, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return np.take_along_axis(data, indices, axis=self.attr("axis", 0))


class GatherND(OpRun):
    def run(self, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        batch_dims = self.attr("batch_dims", 0)
        depth = indices.shape[-1]
        batches = math.prod(data.shape[:batch_dims])
        rows = data.reshape(batches, *data.shape[batch_dims:])
        where = indices.reshape(batches, math.prod(indices.shape[batch_dims:-1]), depth)
        picked = rows[(np.arange(batches)[:, None], *np.moveaxis(where, -1, 0))]
        return picked.reshape(indices.shape[:-1] + data.shape[batch_dims + depth:])


class ScatterElements(OpRun):
    def run(self, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
        index = _along_axis(indices, self.attr("axis", 0) % data.ndim, indices.shape)
        return _scatter(data, index, updates, self.attr("reduction", "none"))


class Scatter(ScatterElements):
    """Deprecated (opset 9-10) name of ScatterElements without reductions."""


class ScatterND(OpRun):
    def run(self, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
        return _scatter(data, tuple(np.moveaxis(indices, -1, 0)), updates, self.attr("reduction", "none"))


class TensorScatter(OpRun):
    """Writes ``update`` into a copy of the cache along ``axis`` from each batch item's write
    index (0 when omitted); "circular" mode wraps around the cache length."""

    def run(self, past: np.ndarray, update: np.ndarray, write_indices: np.ndarray | None = None) -> np.ndarray:
        axis = self.attr("axis", -2) % past.ndim
        if axis == 0:
            raise ValueError("axis must not be the batch axis 0")
        batch, length, capacity = past.shape[0], update.shape[axis], past.shape[axis]
        start = np.zeros(batch, np.int64) if write_indices is None else write_indices.astype(np.int64)
        positions = start[:, None] + np.arange(length)
        if self.attr("mode", "linear") == "circular":
            positions %= capacity
        elif positions.size and positions.max() >= capacity:
            raise ValueError(f"writing {length} entries from {start.tolist()} overflows a cache of {capacity}")
        shape = [1] * past.ndim
        shape[0], shape[axis] = batch, length
        return _scatter(past, _along_axis(positions.reshape(shape), axis, update.shape), update, "none")


class OneHot(OpRun):
    def run(self, indices: np.ndarray, depth: np.ndarray, values: np.ndarray) -> np.ndarray:
        depth = int(scalar(depth))
        self.check_size([*indices.shape, depth], values.dtype)
        axis = self.attr("axis", -1) % (indices.ndim + 1)
        where = indices.astype(np.int64)
        where = np.expand_dims(np.where(where < 0, where + depth, where), axis)
        classes = np.arange(depth).reshape([-1 if i == axis else 1 for i in range(indices.ndim + 1)])
        return np.where(where == classes, values[1], values[0]).astype(values.dtype)


class NonZero(OpRun):
    def run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:  # no coordinates to list; one column when the scalar is non-zero
            return np.zeros((0, int(x.astype(bool))), np.int64)
        return np.array(np.nonzero(x.astype(bool)), dtype=np.int64)


class Compress(OpRun):
    def run(self, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
        return np.compress(condition.astype(bool).reshape(-1), x, axis=self.attr("axis"))


class Unique(OpRun):
    """Unique values (or slices along ``axis``) with their first indices, the inverse map and
    counts; sorted=0 lists them in order of first occurrence."""

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        axis = self.attr("axis")
        y, first, inverse, counts = np.unique(
            x, return_index=True, return_inverse=True, return_counts=True, axis=axis
        )
        inverse = inverse.reshape(-1)
        if not self.attr("sorted", 1):
            order = np.argsort(first, kind="stable")
            y = np.take(y, order, axis=0 if axis is None else axis)
            first, counts, inverse = first[order], counts[order], np.argsort(order)[inverse]
        return y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


class ReverseSequence(OpRun):
    def run(self, x: np.ndarray, sequence_lens: np.ndarray) -> np.ndarray:
        time_axis, batch_axis = self.attr("time_axis", 0), self.attr("batch_axis", 1)
        lengths = sequence_lens.astype(np.int64)[:, None]
        time = np.arange(x.shape[time_axis])[None, :]
        source = np.where(time < lengths, lengths - 1 - time, time)  # (batch, time)
        if time_axis < batch_axis:
            source = source.T
        shape = [1] * x.ndim
        shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
        return np.take_along_axis(x, source.reshape(shape), axis=time_axis)
