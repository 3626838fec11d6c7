"""Activation functions: Relu, LeakyRelu, PRelu, Sigmoid, HardSigmoid, HardSwish, Tanh,
Softplus, Softsign, Elu, Selu, Celu, ThresholdedRelu, Shrink, Mish, Gelu, Swish, and Clip.
Those that are a formula of rtxrt.ir.activations (parameters and their defaults included)
evaluate it, as the fused epilogue does."""
from __future__ import annotations

import numpy as np

from ....ir.activations import ACTIVATIONS, onnx_activation
from ..activation_numpy import evaluate
from ..kernel import OpRun
from .reduce import widened
from .unary import _Unary


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)  # log(1 + exp(x)) without overflow


class _Activation(_Unary):
    """An op that is one of rtxrt.ir.activations' formulas, its attributes the parameters."""

    def compute(self, x: np.ndarray) -> np.ndarray:
        activation, params = onnx_activation(self.op_type, self.node.attrs)
        return evaluate(activation, x, params)


class Relu(_Activation):
    pass


class LeakyRelu(_Activation):
    pass


class Sigmoid(_Activation):
    pass


class HardSigmoid(_Activation):
    pass


class HardSwish(_Activation):
    pass


class Tanh(_Activation):
    pass


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


class Gelu(_Activation):
    pass


class Swish(_Activation):
    pass


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
        bounds = {"min": low, "max": high}
        bounds = {key: None if b is None else _scalar(b) for key, b in bounds.items()}
        return evaluate(ACTIVATIONS["clip"], widened(x), bounds).astype(x.dtype, copy=False)


def _scalar(bound: np.ndarray | float) -> np.ndarray:
    """A bound as a 0-d array, so that a shape [1] bound cannot change the output's rank."""
    return widened(np.asarray(bound)).reshape(())
