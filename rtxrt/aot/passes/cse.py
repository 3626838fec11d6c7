"""Common-subexpression elimination: of identical nodes (same op, attributes and inputs) only the
first stays, and identical small initializers become one, so that later fusions see one shared
value where the exporter wrote several copies."""
from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from ...ir.graph import Graph, Model, Node, TensorType
from ...ir.rewrite import constants, remove_nodes, replace_uses
from ..options import AotOptions
from ..pass_result import PassResult
from ...ir.ops.facts import NONDETERMINISTIC_OPS

# Initializers compared: float scalars and integer vectors up to this length (shape vectors,
# axes), the values patterns match on. Weights are left alone: merging depends on values, and
# equal initial values (zero biases, say) must not merge tensors that refit fills differently.
SMALL_CONSTANT_ELEMENTS = 8


def eliminate_common_subexpressions(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    alias = _merge_small_initializers(graph, result)
    seen: dict[Hashable, Node] = {}
    duplicates: list[Node] = []
    outputs = set(graph.outputs)
    for node in graph.nodes:  # in graph order, so inputs are already renamed to the survivors
        node.inputs = [alias.get(name, name) for name in node.inputs]
        key = _node_key(node)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first is node or any(name in outputs for name in node.outputs):
            continue  # a graph output keeps its producer
        for name, kept in zip(node.outputs, first.outputs):
            if name:
                alias[name] = kept
        duplicates.append(node)
        result.add(f"merged duplicate {node.op_type}")
    remove_nodes(graph, duplicates)
    if any(True for node in graph.nodes for _ in node.subgraphs()):
        for old, new in alias.items():  # subgraphs may read the merged values too
            replace_uses(graph, old, new)
    return result


def _merge_small_initializers(graph: Graph, result: PassResult) -> dict[str, str]:
    alias: dict[str, str] = {}
    first: dict[Hashable, str] = {}
    for name, array in constants(graph).items():
        if not _small_constant(array):
            continue
        kept = first.setdefault(_array_key(array), name)
        if kept != name and name not in graph.outputs:
            alias[name] = kept
            del graph.initializers[name]
            result.add("merged duplicate initializer")
    return alias


def _small_constant(array: np.ndarray) -> bool:
    if array.dtype.kind in "iub":
        return array.size <= SMALL_CONSTANT_ELEMENTS
    return array.size == 1 and array.dtype != object


def _node_key(node: Node) -> Hashable | None:
    """What makes two nodes compute the same values; None for nodes never merged."""
    if node.op_type in NONDETERMINISTIC_OPS:
        return None
    try:
        attrs = tuple(sorted((key, _freeze(value)) for key, value in node.attrs.items()))
    except TypeError:  # a subgraph: not compared
        return None
    return (node.domain, node.op_type, tuple(node.inputs), attrs,
            tuple(bool(name) for name in node.outputs), node.precision)


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for an attribute value that is equal exactly when the values are."""
    if isinstance(value, np.ndarray):
        return _array_key(value)
    if isinstance(value, float):
        return ("float", value.hex())  # tells 0.0 from -0.0, and NaN equals itself
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_freeze(v) for v in value))
    if isinstance(value, (int, str, TensorType)):
        return (type(value).__name__, value)
    raise TypeError(f"attribute of type {type(value).__name__} is not compared")


def _array_key(array: np.ndarray) -> Hashable:
    data = tuple(array.reshape(-1).tolist()) if array.dtype == object else array.tobytes()
    return ("array", str(array.dtype), array.shape, data)
