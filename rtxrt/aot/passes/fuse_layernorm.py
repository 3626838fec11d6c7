"""fuse_layernorm: the layer norm that exporters write out op by op (PyTorch below opset 17,
TensorFlow) → one LayerNormalization.

    mean = ReduceMean(x, axes)                  axes: trailing, keepdims
    d    = Sub(x, mean)
    var  = ReduceMean(Pow(d, 2) | Mul(d, d), axes)
    std  = Sqrt(Add(var, eps))                  eps: a scalar constant
    y    = Div(d, std) | Mul(d, Reciprocal(std))
    y    = Mul(y, gamma)   (optional)           gamma, beta: vary along the normalized axes only
    y    = Add(y, beta)    (optional)

Nothing fuses when a value inside the pattern (the mean, d, the variance...) is read
elsewhere. LayerNormalization keeps its statistics in float32 (float64 for float64 inputs),
so float16 models get slightly more accurate statistics than their decomposed form had.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Graph, Model, Node, TensorType
from ...ir.rewrite import GraphIndex, NameGenerator, is_private, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .patterns import (
    Match, consumers, fuse_matches, fused_name, is_op, other_input, rank, reduce_axes, scalar, sole_consumer,
)


@dataclass
class _LayerNorm:
    nodes: list[Node]
    x: str
    normalized: int  # how many trailing axes
    epsilon: float
    gamma: str
    beta: str
    output: str


def fuse_layernorm(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    names = NameGenerator(graph)

    def find(index: GraphIndex, node: Node) -> Match | None:
        match = _match(graph, index, node, model.opset) if is_op(node, "ReduceMean") else None
        if match is None:
            return None
        return match.nodes, lambda: _layer_norm_node(graph, names, match), "LayerNormalization"

    return fuse_matches(graph, find)


def _match(graph: Graph, index: GraphIndex, mean_node: Node, opset: int) -> _LayerNorm | None:
    x = mean_node.inputs[0]
    x_type = value_type(graph, x)
    if x_type is None or not x_type.dtype.is_float or x_type.shape is None:
        return None
    axes = _normalized(reduce_axes(index, mean_node, opset), len(x_type.shape))
    if axes is None or axes != list(range(len(x_type.shape) - len(axes), len(x_type.shape))):
        return None  # not a trailing set of axes
    mean = mean_node.outputs[0]
    for sub in consumers(index, mean, "Sub"):
        if sub.inputs == [x, mean]:
            match = _match_centered(graph, index, opset, mean_node, sub, axes)
            if match is not None:
                return match
    return None


def _match_centered(
    graph: Graph, index: GraphIndex, opset: int, mean_node: Node, sub: Node, axes: list[int]
) -> _LayerNorm | None:
    """The rest of the pattern from d = x - mean."""
    x, d = sub.inputs[0], sub.outputs[0]
    x_type = value_type(graph, x)
    squares = [n for n in consumers(index, d, "Pow", "Mul") if _squares(index, n, d)]
    if len(squares) != 1:
        return None
    var_node = sole_consumer(index, squares[0].outputs[0], "ReduceMean")
    if var_node is None or _normalized(reduce_axes(index, var_node, opset), len(x_type.shape)) != axes:
        return None
    add_eps = sole_consumer(index, var_node.outputs[0], "Add")
    eps_name = other_input(add_eps, var_node.outputs[0]) if add_eps else None
    eps = scalar(index, eps_name) if eps_name else None
    if eps is None:
        return None
    sqrt = sole_consumer(index, add_eps.outputs[0], "Sqrt")
    if sqrt is None:
        return None
    nodes = [mean_node, sub, squares[0], var_node, add_eps, sqrt]
    std = sqrt.outputs[0]
    divide = sole_consumer(index, std, "Div", "Reciprocal")
    if is_op(divide, "Div") and divide.inputs == [d, std]:
        nodes.append(divide)
    elif is_op(divide, "Reciprocal"):
        scale = sole_consumer(index, divide.outputs[0], "Mul")
        if scale is None or other_input(scale, divide.outputs[0]) != d:
            return None
        nodes += [divide, scale]
    else:
        return None
    y = nodes[-1].outputs[0]
    gamma = beta = ""
    for op_type in ("Mul", "Add"):  # the affine part, each step optional
        step = sole_consumer(index, y, op_type)
        param = other_input(step, y) if step else None
        if param and _is_affine_param(graph, index, param, nodes, x_type, len(axes)):
            nodes.append(step)
            y = step.outputs[0]
            gamma, beta = (param, beta) if op_type == "Mul" else (gamma, param)
    # a constant of higher rank (eps, the exponent) would have widened the result
    if rank(graph, y) != len(x_type.shape) or not is_private(index, nodes, [y]):
        return None
    return _LayerNorm(nodes, x, len(axes), eps, gamma, beta, y)


def _squares(index: GraphIndex, node: Node, d: str) -> bool:
    if node.op_type == "Mul":
        return node.inputs == [d, d]
    return node.inputs[0] == d and scalar(index, node.inputs[1]) == 2.0


def _normalized(axes: list[int] | None, rank_: int) -> list[int] | None:
    """Sorted non-negative axes; None when absent, out of range or repeated."""
    if not axes or any(not -rank_ <= a < rank_ for a in axes):
        return None
    result = sorted(a % rank_ for a in axes)
    return result if len(set(result)) == len(result) else None


def _is_affine_param(
    graph: Graph, index: GraphIndex, name: str, nodes: list[Node], x_type: TensorType, normalized: int
) -> bool:
    """A scale or bias defined outside the pattern, of x's element type, that varies along the
    ``normalized`` trailing axes of x only and never widens x."""
    if any(index.producer.get(name) is n for n in nodes):
        return False
    t = value_type(graph, name)
    if t is None or t.dtype != x_type.dtype or t.shape is None or len(t.shape) > normalized:
        return False
    trailing = x_type.shape[len(x_type.shape) - len(t.shape):]
    return all(p == 1 or (p is not None and p == d) for p, d in zip(t.shape, trailing))


def _layer_norm_node(graph: Graph, names: NameGenerator, match: _LayerNorm) -> Node:
    x_type = value_type(graph, match.x)
    gamma = match.gamma
    if not gamma:  # LayerNormalization needs a scale: ones over the normalized axes
        shape = tuple(d if isinstance(d, int) else 1 for d in x_type.shape[-match.normalized:])
        gamma = names(f"{match.x}_layernorm_scale")
        graph.initializers[gamma] = np.ones(shape, x_type.dtype.numpy)
        graph.types[gamma] = TensorType(x_type.dtype, shape)
    attrs: dict = {"axis": -match.normalized, "epsilon": match.epsilon}
    if x_type.dtype == DType.FLOAT64:  # the default stash type, float32, would lose precision
        attrs["stash_type"] = int(DType.FLOAT64)
    inputs = [match.x, gamma] + ([match.beta] if match.beta else [])
    name = fused_name(names, match.nodes, "LayerNormalization")
    return Node("LayerNormalization", inputs, [match.output], attrs, name=name)
