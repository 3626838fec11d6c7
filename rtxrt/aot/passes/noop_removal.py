"""No-op removal: nodes that hand their input on unchanged (Identity, inference Dropout, Cast to
the same type, Reshape to the same shape, ...) are bypassed, and pairs of layout ops that undo
each other (Transpose pairs, Squeeze/Unsqueeze pairs) cancel.

Shapes are compared through the inferred types: dims must be sizes or named symbols (a symbol
stands for one run-time value wherever it appears); an unknown dim never proves anything.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...ir.graph import Graph, Model, Node, TensorType
from ...ir.ops import view_ops
from ...ir.rewrite import GraphIndex, bypass, value_type
from ..options import AotOptions
from ..pass_result import PassResult

# Ops that only reinterpret the shape: the elements stay in the same (row-major) order.


def remove_noops(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    index = GraphIndex(graph)
    # In graph order, so that a node sees its producers already simplified (chains collapse
    # in one sweep); the index is rebuilt after every change.
    for node in list(graph.nodes):
        rule = _RULES.get(node.op_type) if node.domain == "" else None
        kind = rule(node, graph, index) if rule else None
        if kind:
            result.add(kind)
            index = GraphIndex(graph)
    return result


def _identity(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    return "removed Identity" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


def _dropout(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    training = node.inputs[2] if len(node.inputs) > 2 else ""
    if mask and index.uses(mask):
        return None
    if training and not _is_false(index.constant(training)):
        return None
    return "removed Dropout" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


def _cast(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    source, target = value_type(graph, node.inputs[0]), value_type(graph, node.outputs[0])
    if source is None or target is None or source.dtype != target.dtype:
        return None
    return f"removed {node.op_type} to the same type" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


def _same_shape_bypass(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    """Expand, Tile, Reshape...: a no-op when the output has the input's shape."""
    if not same_shape(value_type(graph, node.inputs[0]), value_type(graph, node.outputs[0])):
        return None
    return f"removed no-op {node.op_type}" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


def _shape_op(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    kind = _same_shape_bypass(node, graph, index)
    if kind:
        return kind
    producer = index.producer.get(node.inputs[0])
    if producer is None or producer.op_type not in view_ops() or producer.domain:
        return None
    origin = producer.inputs[0]
    # A chain of reshapes that ends where it started, e.g. Unsqueeze then Squeeze.
    if same_shape(value_type(graph, origin), value_type(graph, node.outputs[0])):
        if bypass(graph, node, node.outputs[0], origin):
            return f"removed {producer.op_type}+{node.op_type} pair"
        return None
    # A Reshape to an explicit shape does not care how its input was shaped before; a 0 in
    # the shape copies an input dim, so it must not read a differently shaped input.
    if node.op_type == "Reshape":
        shape = index.constant(node.inputs[1])
        if shape is not None and (node.attr("allowzero", 0) or not np.any(shape == 0)):
            node.inputs[0] = origin
            return f"merged {producer.op_type}+Reshape"
    return None


def _transpose(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    perm = _perm(node, graph)
    if perm is None:
        return None
    if perm == list(range(len(perm))):
        return "removed identity Transpose" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None
    producer = index.producer.get(node.inputs[0])
    if producer is None or producer.op_type != "Transpose" or producer.domain:
        return None
    first = _perm(producer, graph)
    if first is None or len(first) != len(perm):
        return None
    # y = transpose(x, first), z = transpose(y, perm): z's axis j is x's axis first[perm[j]].
    composed = [first[p] for p in perm]
    if composed == list(range(len(composed))):
        return "removed Transpose pair" if bypass(graph, node, node.outputs[0], producer.inputs[0]) else None
    node.inputs[0] = producer.inputs[0]
    node.attrs = {**node.attrs, "perm": composed}
    return "merged Transpose pair"


def _slice(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    steps = index.constant(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else np.ones(1)
    if steps is None or not np.all(steps == 1):  # a reversed slice keeps the shape, not the order
        return None
    return "removed Slice of the whole tensor" if _same_shape_bypass(node, graph, index) else None


def _pad(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    pads = index.constant(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attr("pads")
    if pads is None or np.any(np.asarray(pads) != 0):
        return None
    return "removed Pad by zeros" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


def _concat(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    if len(node.inputs) != 1:
        return None
    return "removed single-input Concat" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


def _split(node: Node, graph: Graph, index: GraphIndex) -> str | None:
    if len(node.outputs) != 1:
        return None
    return "removed single-output Split" if bypass(graph, node, node.outputs[0], node.inputs[0]) else None


_Rule = Callable[[Node, Graph, GraphIndex], "str | None"]
_RULES: dict[str, _Rule] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "CastLike": _cast,
    "Reshape": _shape_op,
    "Squeeze": _shape_op,
    "Unsqueeze": _shape_op,
    "Flatten": _shape_op,
    "Expand": _same_shape_bypass,
    "Tile": _same_shape_bypass,
    "Transpose": _transpose,
    "Slice": _slice,
    "Pad": _pad,
    "Concat": _concat,
    "Split": _split,
}


def same_shape(a: TensorType | None, b: TensorType | None) -> bool:
    """Whether two tensors provably have the same type and shape."""
    if a is None or b is None or a.dtype != b.dtype or a.shape is None or b.shape is None:
        return False
    return a.shape == b.shape and all(d is not None for d in a.shape)


def _perm(node: Node, graph: Graph) -> list[int] | None:
    perm = node.attr("perm")
    if perm is not None:
        return [int(p) for p in perm]
    t = value_type(graph, node.inputs[0])
    return None if t is None or t.rank is None else list(reversed(range(t.rank)))


def _is_false(value: np.ndarray | None) -> bool:
    return value is not None and value.size == 1 and not bool(value.reshape(-1)[0])
