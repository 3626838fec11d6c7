"""Activation functions: Relu, LeakyRelu, PRelu, Sigmoid, HardSigmoid, HardSwish, Tanh,
Softplus, Softsign, Elu, Selu, Celu, ThresholdedRelu, Shrink, Mish, Gelu, Swish, and Clip."""
from __future__ import annotations

import math

import numpy as np

from ..kernel import OpRun
from .reduce import widened
from .unary import _Unary, erf


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))  # exp overflowing to inf gives the right limit, 0


def hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(alpha * x + beta, 0.0, 1.0)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)  # log(1 + exp(x)) without overflow


class Relu(_Unary):
    @staticmethod
    def compute(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)


class LeakyRelu(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        return np.where(x < 0, x * self.attr("alpha", 0.01), x)


class Sigmoid(_Unary):
    compute = staticmethod(sigmoid)


class HardSigmoid(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        return hard_sigmoid(x, self.attr("alpha", 0.2), self.attr("beta", 0.5))


class HardSwish(_Unary):
    @staticmethod
    def compute(x: np.ndarray) -> np.ndarray:
        return x * hard_sigmoid(x, 1 / 6, 0.5)


class Tanh(_Unary):
    compute = staticmethod(np.tanh)


class Softplus(_Unary):
    compute = staticmethod(softplus)


class Softsign(_Unary):
    @staticmethod
    def compute(x: np.ndarray) -> np.ndarray:
        return x / (1 + np.abs(x))


class Elu(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, self.attr("alpha", 1.0) * np.expm1(x))


class Selu(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        alpha = self.attr("alpha", 1.67326319217681884765625)
        gamma = self.attr("gamma", 1.05070102214813232421875)
        return gamma * np.where(x > 0, x, alpha * np.expm1(x))


class Celu(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        alpha = self.attr("alpha", 1.0)
        return np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))


class ThresholdedRelu(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > self.attr("alpha", 1.0), x, 0)


class Shrink(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        lambd, bias = self.attr("lambd", 0.5), self.attr("bias", 0.0)
        return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))


class Mish(_Unary):
    @staticmethod
    def compute(x: np.ndarray) -> np.ndarray:
        return x * np.tanh(softplus(x))


class Gelu(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        if self.attr("approximate", "none") == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))


class Swish(_Unary):
    def compute(self, x: np.ndarray) -> np.ndarray:
        return x * sigmoid(self.attr("alpha", 1.0) * x)


class PRelu(OpRun):
    """x where x >= 0, else slope * x; the slope broadcasts to x's shape."""

    def run(self, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
        if np.broadcast_shapes(x.shape, slope.shape) != x.shape:
            raise ValueError(f"slope of shape {slope.shape} does not broadcast to x of shape {x.shape}")
        wide = widened(x)
        return np.where(wide < 0, wide * widened(slope), wide).astype(x.dtype, copy=False)


class Clip(OpRun):
    """Bounds are attributes before opset 11 and optional scalar inputs since; a bound left
    out does not clip. When min > max every value becomes max."""

    def run(self, x: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
        if self.opset < 11:
            low, high = self.attr("min"), self.attr("max")
        y = widened(x)
        if low is not None:
            y = np.maximum(y, _scalar(low))
        if high is not None:
            y = np.minimum(y, _scalar(high))
        return np.asarray(y).astype(x.dtype, copy=False)


def _scalar(bound: np.ndarray | float) -> np.ndarray:
    """A bound as a 0-d array, so that a shape [1] bound cannot change the output's rank."""
    return widened(np.asarray(bound)).reshape(())
