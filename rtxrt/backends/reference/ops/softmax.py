"""Softmax, LogSoftmax, Hardmax."""
from __future__ import annotations

import numpy as np

from ..kernel import OpRun
from .reduce import normalize_axis, widened


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)  # exp never overflows
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    out = np.zeros_like(x)
    if x.size:
        np.put_along_axis(out, np.argmax(x, axis=axis, keepdims=True), 1, axis=axis)  # first max wins
    return out


class _AlongAxis(OpRun):
    """Applies ``compute`` along ``axis``. Before opset 13 the input was first coerced to 2-D,
    [prod(shape[:axis]), prod(shape[axis:])], and the function applied along its rows."""

    @staticmethod
    def compute(x: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> np.ndarray:
        wide = widened(x)
        if self.opset >= 13:
            y = self.compute(wide, self.attr("axis", -1))
        else:
            axis = normalize_axis(self.attr("axis", 1), x.ndim)
            rows = int(np.prod(x.shape[:axis]))
            y = self.compute(wide.reshape(rows, int(np.prod(x.shape[axis:]))), 1).reshape(x.shape)
        return y.astype(x.dtype, copy=False)


class Softmax(_AlongAxis):
    compute = staticmethod(softmax)


class LogSoftmax(_AlongAxis):
    compute = staticmethod(log_softmax)


class Hardmax(_AlongAxis):
    compute = staticmethod(hardmax)
