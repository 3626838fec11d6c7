"""The activation functions a fused node (rtxrt::FusedConv, rtxrt::FusedMatMul) may apply to
its result, how a residual input joins it, and the ONNX ops that are one of them.

One table, read by the op schemas (validation), the reference kernels and the CUDA code
generator: an activation's name maps to its parameters, in the order the node's
``activation_params`` attribute lists them, with the value each takes when left out, and to
its formula. A formula is written once, over a small maths interface (``Maths``), and each
backend interprets it: the reference backend with numpy
(rtxrt/backends/reference/activation_numpy.py), the CUDA generator as C expressions
(rtxrt/backends/cuda/codegen/activation_c.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Maths(Protocol[T]):
    """What a formula is written in; ``T`` is an interpreter's value (an array, a C expression).
    Binary operations keep their operands' order: each interpreter evaluates them as written."""

    def lit(self, value: float) -> T: ...
    def add(self, a: T, b: T) -> T: ...
    def mul(self, a: T, b: T) -> T: ...
    def div(self, a: T, b: T) -> T: ...
    def neg(self, a: T) -> T: ...
    def cube(self, a: T) -> T: ...  # a**3 (numpy's power; the CUDA code multiplies)
    def less(self, a: T, b: T) -> T: ...
    def where(self, cond: T, a: T, b: T) -> T: ...
    # NaN-propagating, as numpy's maximum / minimum; a bound of None is no bound (Clip's).
    def max(self, a: T, b: T | None) -> T: ...
    def min(self, a: T, b: T | None) -> T: ...
    def clip(self, a: T, low: T, high: T) -> T: ...  # numpy's clip (which keeps -0.0)
    def exp(self, a: T) -> T: ...
    def tanh(self, a: T) -> T: ...
    def erfc(self, a: T) -> T: ...


# formula(m, x, **params): x and the parameters are values of m.
Formula = Callable[..., Any]


@dataclass(frozen=True)
class Activation:
    """An activation: its parameters and its formula, ``formula(m, x, **params)``."""

    params: tuple[tuple[str, float], ...]  # (name, default), in activation_params order
    formula: Formula


def _sigmoid(m: Maths, x: T) -> T:
    one = m.lit(1.0)
    return m.div(one, m.add(one, m.exp(m.neg(x))))  # exp overflowing to inf gives the limit, 0


def _hard_sigmoid(m: Maths, x: T, alpha: T, beta: T) -> T:
    return m.clip(m.add(m.mul(alpha, x), beta), m.lit(0.0), m.lit(1.0))


def _gelu(m: Maths, x: T) -> T:
    # x * Phi(x) with 1 + erf(t) as erfc(-t): accurate where erf(t) nears -1
    return m.mul(m.mul(m.lit(0.5), x), m.erfc(m.neg(m.div(x, m.lit(math.sqrt(2))))))


def _gelu_tanh(m: Maths, x: T) -> T:
    inner = m.mul(m.lit(math.sqrt(2 / math.pi)), m.add(x, m.mul(m.lit(0.044715), m.cube(x))))
    return m.mul(m.mul(m.lit(0.5), x), m.add(m.lit(1.0), m.tanh(inner)))


def _clip(m: Maths, x: T, **bounds: T) -> T:
    return m.min(m.max(x, bounds["min"]), bounds["max"])  # min > max gives max everywhere, as Clip


ACTIVATIONS: dict[str, Activation] = {
    "none": Activation((), lambda m, x: x),
    "relu": Activation((), lambda m, x: m.max(x, m.lit(0.0))),
    "leaky_relu": Activation((("alpha", 0.01),), lambda m, x, alpha: m.where(m.less(x, m.lit(0.0)), m.mul(x, alpha), x)),
    "clip": Activation((("min", -math.inf), ("max", math.inf)), _clip),
    "sigmoid": Activation((), _sigmoid),
    "tanh": Activation((), lambda m, x: m.tanh(x)),
    "hard_sigmoid": Activation((("alpha", 0.2), ("beta", 0.5)), _hard_sigmoid),
    "hard_swish": Activation((), lambda m, x: m.mul(x, _hard_sigmoid(m, x, m.lit(1 / 6), m.lit(0.5)))),
    "silu": Activation((), lambda m, x: m.mul(x, _sigmoid(m, x))),
    "gelu": Activation((), _gelu),
    "gelu_tanh": Activation((), _gelu_tanh),
}

# Where the residual input Z is added: none, y = act(acc + z), or y = act(acc) + z.
RESIDUALS = ("none", "before_activation", "after_activation")

# ONNX Swish, x * sigmoid(alpha * x): no fused activation (silu is its alpha = 1, without the
# product), but its formula lives here with the others.
SWISH = Activation((("alpha", 1.0),), lambda m, x, alpha: m.mul(x, _sigmoid(m, m.mul(alpha, x))))

# ONNX ops (default domain) that compute one formula of this module; an attribute of the op is
# the parameter of the same name. Clip is not here: its bounds are inputs from opset 11 and a
# bound left out is none at all, so its kernels pass them to ACTIVATIONS["clip"] themselves.
ONNX_ACTIVATIONS: dict[str, Activation] = {
    "Relu": ACTIVATIONS["relu"],
    "LeakyRelu": ACTIVATIONS["leaky_relu"],
    "Sigmoid": ACTIVATIONS["sigmoid"],
    "Tanh": ACTIVATIONS["tanh"],
    "HardSigmoid": ACTIVATIONS["hard_sigmoid"],
    "HardSwish": ACTIVATIONS["hard_swish"],
    "Swish": SWISH,
}
_GELU = {"none": "gelu", "tanh": "gelu_tanh"}  # Gelu's approximate attribute -> activation


def activation_params(name: str, params: Sequence[float] = ()) -> dict[str, float]:
    """The parameters of activation ``name`` by name, defaults filled in for those left out.
    Raises ValueError for an unknown activation or too many parameters."""
    spec = get_activation(name).params
    if len(params) > len(spec):
        raise ValueError(f"activation {name!r} takes {len(spec)} parameter(s), got {len(params)}")
    values = [float(p) for p in params] + [default for _, default in spec[len(params):]]
    return {key: value for (key, _), value in zip(spec, values)}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; ValueError for an unknown one."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def onnx_activation(op_type: str, attrs: Mapping[str, Any]) -> tuple[Activation, dict[str, float]] | None:
    """The formula ONNX op ``op_type`` with these attributes computes, and its parameters
    (defaults filled in); None for an op that is none of them. ValueError for a Gelu whose
    ``approximate`` is neither "none" nor "tanh"."""
    if op_type == "Gelu":
        mode = attrs.get("approximate", "none")
        if mode not in _GELU:
            raise ValueError(f"Gelu with approximate={mode!r}")
        found = ACTIVATIONS[_GELU[mode]]
    elif op_type in ONNX_ACTIVATIONS:
        found = ONNX_ACTIVATIONS[op_type]
    else:
        return None
    return found, {key: float(attrs.get(key, default)) for key, default in found.params}


def fused_activation(op_type: str, attrs: Mapping[str, Any]) -> tuple[str, list[float]] | None:
    """The fused activation (its name and ``activation_params``) that ONNX op ``op_type`` with
    these attributes computes, for fusing it into a Conv or matrix product; None where it is
    none of them (Swish is one only with alpha = 1: silu)."""
    try:
        found = onnx_activation(op_type, attrs)
    except ValueError:
        return None
    if found is None:
        return None
    activation, params = found
    if activation is SWISH:
        return ("silu", []) if params["alpha"] == 1.0 else None
    name = next(name for name, known in ACTIVATIONS.items() if known is activation)
    return name, [params[key] for key, _ in activation.params]
