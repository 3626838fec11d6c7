"""The activation functions a fused node (rtxrt::FusedConv, rtxrt::FusedMatMul) may apply to
its result, and how a residual input joins it.

One table, read by the op schemas (validation), the reference kernels and the CUDA code
generator: an activation's name maps to its parameters, in the order the node's
``activation_params`` attribute lists them, with the value each takes when left out.
"""
from __future__ import annotations

import math
from typing import Sequence

# name -> ((parameter, default), ...)
ACTIVATIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "none": (),
    "relu": (),
    "leaky_relu": (("alpha", 0.01),),
    "clip": (("min", -math.inf), ("max", math.inf)),  # min > max gives max everywhere, as Clip
    "sigmoid": (),
    "tanh": (),
    "hard_sigmoid": (("alpha", 0.2), ("beta", 0.5)),  # clip(alpha * x + beta, 0, 1)
    "hard_swish": (),  # x * hard_sigmoid(x, 1/6, 1/2)
    "silu": (),  # x * sigmoid(x)
    "gelu": (),  # x * Phi(x), the erf form
    "gelu_tanh": (),  # the tanh approximation
}

# Where the residual input Z is added: none, y = act(acc + z), or y = act(acc) + z.
RESIDUALS = ("none", "before_activation", "after_activation")


def activation_params(name: str, params: Sequence[float] = ()) -> dict[str, float]:
    """The parameters of activation ``name`` by name, defaults filled in for those left out.
    Raises ValueError for an unknown activation or too many parameters."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[name]
    if len(params) > len(spec):
        raise ValueError(f"activation {name!r} takes {len(spec)} parameter(s), got {len(params)}")
    values = [float(p) for p in params] + [default for _, default in spec[len(params):]]
    return {key: value for (key, _), value in zip(spec, values)}
