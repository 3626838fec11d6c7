"""Structural checks that reject ill-formed IR graphs with a message naming the fault."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from .graph import Graph, Model, TensorType
from .ops import get_schema

_ATTR_TYPES = (int, float, str, list, np.ndarray, Graph, TensorType)


def check_model(model: Model) -> None:
    """Raise UnsupportedOpError (listing every unknown op) or GraphError on the first fault."""
    unsupported = [
        (n.domain, n.op_type, n.name)
        for n in model.graph.walk()
        if get_schema(n.op_type, n.domain) is None
    ]
    if unsupported:
        raise UnsupportedOpError(unsupported)
    if model.opset < 1:
        raise GraphError("model declares no version of the default operator set")
    check_graph(model.graph, outer=set())


def check_graph(graph: Graph, outer: set[str]) -> None:
    where = f"graph {graph.name!r}"
    defined: set[str] = set(outer)
    for name in graph.inputs:
        if not name:
            raise GraphError(f"{where}: an input has an empty name")
        if name in graph.inputs[: graph.inputs.index(name)]:
            raise GraphError(f"{where}: input {name!r} is listed twice")
        defined.add(name)
    for name, array in graph.initializers.items():
        if not isinstance(array, np.ndarray):
            raise GraphError(f"{where}: initializer {name!r} is not an array")
        defined.add(name)
    local: set[str] = set(graph.inputs) | set(graph.initializers)
    for node in graph.nodes:
        schema = get_schema(node.op_type, node.domain)
        assert schema is not None  # check_model reported unknown ops already
        n_in = len(node.inputs)
        while n_in and not node.inputs[n_in - 1]:
            n_in -= 1  # trailing omitted optionals do not count
        if not schema.min_inputs <= n_in <= schema.max_inputs:
            raise GraphError(
                f"{node.label}: takes {_arity(schema.min_inputs, schema.max_inputs)} input(s), got {n_in}"
            )
        n_out = len(node.outputs)
        if not schema.min_outputs <= n_out <= schema.max_outputs:
            raise GraphError(
                f"{node.label}: produces {_arity(schema.min_outputs, schema.max_outputs)} output(s), got {n_out}"
            )
        for name in node.inputs:
            if name and name not in defined:
                raise GraphError(f"{node.label}: reads {name!r}, which nothing defines before it")
        for key, value in node.attrs.items():
            if not isinstance(value, _ATTR_TYPES):
                raise GraphError(f"{node.label}: attribute {key!r} has unsupported type {type(value).__name__}")
        for sub in node.subgraphs():
            check_graph(sub, defined)
        for name in node.outputs:
            if not name:
                continue
            if name in local:
                raise GraphError(f"{node.label}: output {name!r} is already defined in {where}")
            local.add(name)
            defined.add(name)
    for name in graph.outputs:
        if name not in defined:
            raise GraphError(f"{where}: output {name!r} is never computed")


def _arity(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"at least {lo}" if hi >= 1 << 30 else f"{lo} to {hi}"
