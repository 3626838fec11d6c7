"""The epilogue of a Conv or a matrix product, and the rewrite to one fused rtxrt node
(FusedConv, FusedMatMul), shared by fuse_conv and fuse_gemm.

The epilogue is what follows the producer and can join it: an Add of a constant bias along
the channel axis, then an activation and a residual Add (another tensor of the result's full
shape) in either order. Nothing joins across a value that is read elsewhere (another consumer
or a graph output).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...ir.activations import fused_activation
from ...ir.graph import Graph, Model, Node, Shape, TensorType
from ...ir.rewrite import GraphIndex, NameGenerator, Replacements, value_type
from ..pass_result import PassResult
from .patterns import is_op, other_input

HARD_SIGMOID_OF_HARD_SWISH = (1 / 6, 0.5)
# ONNX activations that map one to one, and their names in rtxrt.ir.activations.
@dataclass
class Epilogue:
    """What follows a Conv or matrix product and folds into it."""

    output: str  # the value the fused node defines
    nodes: list[Node] = field(default_factory=list)  # the nodes it replaces, in graph order
    bias: tuple[str, np.ndarray] | None = None  # constant taken from an Add (see bias_input)
    activation: str = "none"
    params: list[float] = field(default_factory=list)
    residual: str = "none"
    z: str = ""
    parts: list[str] = field(default_factory=list)  # what joined, for the change kind: Add, Relu...

    def attrs(self) -> dict:
        return {"activation": self.activation, "activation_params": self.params, "residual": self.residual}


def match_epilogue(graph: Graph, index: GraphIndex, value: str, axis: int, opset: int, take_bias: bool) -> Epilogue:
    """The longest epilogue after ``value``: [bias Add] [residual Add] [activation]
    [residual Add], with at most one residual. The bias is constant and varies along
    ``axis`` only; it is taken only when ``take_bias``."""
    ep = Epilogue(value)
    if take_bias and (found := _bias_add(graph, index, value, axis)):
        ep.nodes.append(found[0])
        ep.bias, ep.output = found[1], found[0].outputs[0]
    if residual := _residual_add(graph, index, ep.output):
        ep.nodes.append(residual[0])
        ep.residual, ep.z, ep.output = "before_activation", residual[1], residual[0].outputs[0]
        ep.parts.append("Add")
    if activation := _activation(index, ep.output, opset):
        nodes, ep.activation, ep.params, label = activation
        ep.nodes.extend(nodes)
        ep.output = nodes[-1].outputs[0]
        ep.parts.append(label)
        if ep.residual == "none" and (residual := _residual_add(graph, index, ep.output)):
            ep.nodes.append(residual[0])
            ep.residual, ep.z, ep.output = "after_activation", residual[1], residual[0].outputs[0]
            ep.parts.append("Add")
    return ep


def _bias_add(graph: Graph, index: GraphIndex, value: str, axis: int) -> tuple[Node, tuple[str, np.ndarray]] | None:
    """The Add reading only ``value`` and a constant that varies along ``axis`` alone (so the
    sum keeps ``value``'s shape), and that constant as a bias part (see bias_input)."""
    node = index.only_consumer(value)
    if not is_op(node, "Add"):
        return None
    out = value_type(graph, value)
    name = other_input(node, value)
    constant = index.constant(name)
    if constant is None or out is None or out.shape is None or constant.dtype != out.dtype.numpy:
        return None
    rank = len(out.shape)
    axis %= rank
    if constant.ndim > rank:
        return None
    shape = (1,) * (rank - constant.ndim) + constant.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    channels = out.shape[axis]
    if not isinstance(channels, int) or shape[axis] not in (1, channels):
        return None
    vector = np.broadcast_to(constant.reshape(-1), (channels,))
    return node, (name if constant.shape == (channels,) else "", vector)


def _full_shape(shape: Shape | None) -> bool:
    return shape is not None and None not in shape


def _residual_add(graph: Graph, index: GraphIndex, value: str) -> tuple[Node, str] | None:
    """The Add reading only ``value`` and another tensor Z of exactly ``value``'s type."""
    node = index.only_consumer(value)
    if not is_op(node, "Add"):
        return None
    z = other_input(node, value)
    tv, tz = value_type(graph, value), value_type(graph, z)
    if tv is None or tz is None or tv.dtype != tz.dtype or not _full_shape(tv.shape) or tv.shape != tz.shape:
        return None
    return node, z


Activation = tuple[list[Node], str, list[float], str]  # nodes, name, params, change label


def _activation(index: GraphIndex, value: str, opset: int) -> Activation | None:
    node = index.only_consumer(value)
    if node is None:
        return _gated(index, value)
    if node.domain != "":
        return None
    op = node.op_type
    fused = fused_activation(op, node.attrs)
    if fused is not None:
        name, params = fused
        return [node], name, params, "SiLU" if op == "Swish" else op
    if op == "Clip" and (bounds := _clip_bounds(index, node, opset)) is not None:
        return [node], "clip", bounds, op
    return None


def _clip_bounds(index: GraphIndex, node: Node, opset: int) -> list[float] | None:
    """[min, max] of a Clip whose bounds are known (±inf where left out), else None."""
    if opset < 11:
        return [float(node.attr("min", -np.inf)), float(node.attr("max", np.inf))]
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        name = node.inputs[i] if i < len(node.inputs) else ""
        value = index.constant(name) if name else np.asarray(default)
        if value is None or value.size != 1:
            return None
        bounds.append(float(value.reshape(())))
    return bounds


def _gated(index: GraphIndex, value: str) -> Activation | None:
    """x * Sigmoid(x) (SiLU) or x * HardSigmoid(x) (HardSwish): ``value`` read by exactly the
    gate and the Mul, and the gate's output by the Mul alone."""
    users = index.consumers.get(value, [])
    if len(users) != 2 or value in index.outputs:
        return None
    gate = next((u for u in users if is_op(u, "Sigmoid", "HardSigmoid")), None)
    mul = users[1] if gate is users[0] else users[0]
    if gate is None or not is_op(mul, "Mul") or index.only_consumer(gate.outputs[0]) is not mul:
        return None
    if sorted(mul.inputs) != sorted([value, gate.outputs[0]]):
        return None
    if gate.op_type == "Sigmoid":
        return [gate, mul], "silu", [], "SiLU"
    coefficients = (float(gate.attr("alpha", 0.2)), float(gate.attr("beta", 0.5)))
    if not np.allclose(coefficients, HARD_SIGMOID_OF_HARD_SWISH, rtol=1e-6, atol=0):
        return None
    return [gate, mul], "hard_swish", [], "HardSwish"


def bias_input(
    graph: Graph, fresh: NameGenerator, parts: list[tuple[str, np.ndarray]], out: TensorType, base: str
) -> str:
    """The fused node's bias input: the sum of the 1-D constant ``parts`` (value name, or ""
    where the vector is not a value of the graph as it is). A single part already of the
    right type is read as it is, keeping its name; otherwise a new initializer holds it."""
    if not parts:
        return ""
    if len(parts) == 1 and parts[0][0] and parts[0][1].dtype == out.dtype.numpy:
        return parts[0][0]
    total = sum(vector.astype(np.float64) for _, vector in parts)
    name = fresh(f"{base}_bias")
    graph.initializers[name] = np.require(total, out.dtype.numpy, "C")
    return name


def replace_with_fused(graph: Graph, producer: Node, op_type: str, attrs: dict, bias: str, ep: Epilogue) -> str:
    """Replace ``producer`` (reading x and the weight) and its epilogue by one rtxrt::``op_type``
    node reading (x, weight, bias, Z), where the last replaced node was (every input it reads is
    defined before that). Returns the change kind: "Conv+bias+Relu", say."""
    inputs = [producer.inputs[0], producer.inputs[1], bias, ep.z]
    while inputs and not inputs[-1]:
        inputs.pop()
    fused = Node(op_type, inputs, [ep.output], {**attrs, **ep.attrs()}, name=producer.name, domain="rtxrt")
    todo = Replacements()
    todo.add([producer, *ep.nodes], fused)
    todo.apply(graph)
    return "+".join([producer.op_type, *(["bias"] if bias else []), *ep.parts])


def fuse_producers(model: Model, op_types: tuple[str, ...], fuse: Callable[..., "str | None"]) -> PassResult:
    """Fuse every node of ``op_types`` with its epilogue: ``fuse(graph, index, fresh, node,
    opset)`` rewrites one and returns the change kind, or None. Latest first: of two producers
    meeting in a residual Add, the one computed last (a ResNet block's main branch) takes it
    and reads the other's result (the shortcut) as Z."""
    result = PassResult()
    graph = model.graph
    fresh = NameGenerator(graph)
    for node in reversed([n for n in graph.nodes if n.op_type in op_types and n.domain == ""]):
        kind = fuse(graph, GraphIndex(graph), fresh, node, model.opset)
        if kind:
            result.add(kind)
    if result.changed:
        model.opsets.setdefault("rtxrt", 1)
    return result
