"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization,
GroupNormalization, RMSNormalization, LpNormalization, MeanVarianceNormalization, LRN.

Statistics are computed in float32 for narrow floats (or in ``stash_type`` where the operator
has one); the normalized values are cast back to X's type before the scale and bias, as
ONNX's function definitions do.
"""
from __future__ import annotations

import numpy as np

from ....ir.dtypes import DType
from ..kernel import OpRun
from .reduce import widened


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """Channel parameters shaped to broadcast against an (N, C, *spatial) tensor."""
    return values.reshape(*values.shape, *[1] * (ndim - 1 - values.ndim))


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x - mean) / sqrt(var + epsilon) over ``axes``, with the mean and the inverse std."""
    mean = np.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    inv_std = 1 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + epsilon)
    return centered * inv_std, mean, inv_std


class BatchNormalization(OpRun):
    """Normalizes each channel with the given statistics; in training mode with those of the
    batch, also returning the updated running statistics (and, before opset 14, the batch's
    own mean and variance)."""

    def run(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        wide = widened(x)
        training = bool(self.attr("training_mode", 0)) if self.opset >= 14 else any(self.node.outputs[1:])
        if training:
            axes = (0, *range(2, x.ndim))
            used_mean, used_var = wide.mean(axis=axes), wide.var(axis=axes)
        else:
            used_mean, used_var = widened(mean), widened(var)
        factor = widened(scale) / np.sqrt(used_var + self.attr("epsilon", 1e-5))
        y = (wide - _per_channel(used_mean, x.ndim)) * _per_channel(factor, x.ndim)
        y = (y + _per_channel(widened(bias), x.ndim)).astype(x.dtype, copy=False)
        if not training:
            return y
        momentum = self.attr("momentum", 0.9)
        running = [(old * momentum + new * (1 - momentum)).astype(old.dtype)
                   for old, new in [(mean, used_mean), (var, used_var)]]
        batch = (used_mean.astype(mean.dtype), used_var.astype(var.dtype))
        return (y, *running, *batch)[: len(self.node.outputs)]


class InstanceNormalization(OpRun):
    def run(self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
        normalized, _, _ = _standardize(widened(x), tuple(range(2, x.ndim)), self.attr("epsilon", 1e-5))
        y = normalized * _per_channel(widened(scale), x.ndim) + _per_channel(widened(bias), x.ndim)
        return y.astype(x.dtype, copy=False)


class _StashedNorm(OpRun):
    """Normalizes over the axes from ``axis`` to the end, computing in ``stash_type``."""

    def prepare(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        axis = int(self.attr("axis", -1)) % x.ndim
        stash = DType(int(self.attr("stash_type", DType.FLOAT32))).numpy
        return x.astype(stash, copy=False), tuple(range(axis, x.ndim))


class LayerNormalization(_StashedNorm):
    def run(self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None):
        stashed, axes = self.prepare(x)
        normalized, mean, inv_std = _standardize(stashed, axes, self.attr("epsilon", 1e-5))
        y = normalized.astype(x.dtype) * scale
        if bias is not None:
            y = y + bias
        return (y.astype(x.dtype, copy=False), mean, inv_std)[: len(self.node.outputs)]


class RMSNormalization(_StashedNorm):
    def run(self, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        stashed, axes = self.prepare(x)
        rms = np.sqrt(np.mean(stashed * stashed, axis=axes, keepdims=True) + self.attr("epsilon", 1e-5))
        return ((stashed / rms).astype(x.dtype) * scale).astype(x.dtype, copy=False)


class GroupNormalization(OpRun):
    """Normalizes each group of channels. Scale and bias are per channel since opset 21 and
    were per group before."""

    def run(self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
        groups = int(self.attr("num_groups"))
        n, c = x.shape[:2]
        stash = DType(int(self.attr("stash_type", DType.FLOAT32))).numpy
        grouped = x.astype(stash, copy=False).reshape(n, groups, -1)
        normalized, _, _ = _standardize(grouped, (2,), self.attr("epsilon", 1e-5))
        normalized = normalized.reshape(x.shape).astype(x.dtype, copy=False)
        if self.opset < 21:
            scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
        y = normalized * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)
        return y.astype(x.dtype, copy=False)


class LpNormalization(OpRun):
    """x / ||x||_p along ``axis``; a zero norm gives zeros."""

    def run(self, x: np.ndarray) -> np.ndarray:
        p, axis = int(self.attr("p", 2)), int(self.attr("axis", -1))
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p}")
        wide = widened(x)
        norm = np.sum(np.abs(wide) ** p, axis=axis, keepdims=True) ** (1 / p)
        safe = np.where(norm == 0, 1, norm)
        return np.where(norm == 0, 0, wide / safe).astype(x.dtype, copy=False)


class MeanVarianceNormalization(OpRun):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over ``axes``, as ONNX's function body."""

    def run(self, x: np.ndarray) -> np.ndarray:
        axes = tuple(self.attr("axes", [0, 2, 3]))
        wide = widened(x)
        mean = np.mean(wide, axis=axes, keepdims=True)
        std = np.sqrt(np.mean(wide * wide, axis=axes, keepdims=True) - mean * mean)
        return ((wide - mean) / (std + 1e-9)).astype(x.dtype, copy=False)


class LRN(OpRun):
    """x / (bias + alpha / size * sum of squares over ``size`` neighbouring channels) ** beta;
    the neighbourhood reaches floor((size-1)/2) channels back and ceil((size-1)/2) ahead."""

    def run(self, x: np.ndarray) -> np.ndarray:
        size = int(self.attr("size"))
        alpha, beta, bias = self.attr("alpha", 1e-4), self.attr("beta", 0.75), self.attr("bias", 1.0)
        wide = widened(x)
        channels = x.shape[1]
        padded = np.pad(wide * wide, [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
        square_sum = sum(padded[:, i : i + channels] for i in range(size))
        return (wide / (bias + alpha / size * square_sum) ** beta).astype(x.dtype, copy=False)
