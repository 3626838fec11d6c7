"""Structural checks that reject ill-formed IR graphs with a message naming the fault."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from .graph import Graph, Model, TensorType
from .infer import infer_types
from .ops import get_schema
from .ops.signature import newest_opset

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
    if model.opset > newest_opset():
        raise GraphError(f"model uses opset {model.opset} of the default operator set, newer than the "
                         f"{newest_opset()} this rtxrt knows")
    for node in model.graph.walk():  # in every branch: inference forgives a branch it cannot type
        get_schema(node.op_type, node.domain).check_node(node, model.opset)
    check_graph(model.graph, outer=set())


def check_and_type(model: Model) -> None:
    """What a model from outside (a .rtxir file, a Model handed to a Session) must pass before
    it runs: the structural checks, then type inference, which also refuses declared types
    that disagree with what the graph computes (a GraphError naming the node)."""
    check_model(model)
    infer_types(model)


def check_graph(graph: Graph, outer: set[str]) -> None:
    where = f"graph {graph.name!r}"
    defined: set[str] = set(outer)
    for name in graph.inputs:
        if not name:
            raise GraphError(f"{where}: an input has an empty name")
        if graph.inputs.count(name) > 1:
            raise GraphError(f"{where}: input {name!r} is listed twice")
        defined.add(name)
    for name, array in graph.initializers.items():
        if not isinstance(array, np.ndarray):
            raise GraphError(f"{where}: initializer {name!r} is not an array")
        defined.add(name)
    local: set[str] = set(graph.inputs) | set(graph.initializers)
    for node in graph.nodes:
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

