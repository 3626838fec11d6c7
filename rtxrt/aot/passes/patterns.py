"""Small helpers for passes that match a decomposed op (LayerNorm, Gelu, Softmax...) and
replace it by one node: typed producer/consumer steps, scalar constants compared with a
tolerance, reduction axes, the fused node's name, and the loop that replaces every match. The
graph-level steps (is_private, Replacements, value_type) are rtxrt.ir.rewrite's."""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

from ...ir.graph import Graph, Node
from ...ir.ops.reduce import axes_input_since
from ...ir.rewrite import GraphIndex, NameGenerator, Replacements, value_type
from ..pass_result import PassResult

# A match: the nodes it replaces, how to make the node that replaces them, the change kind.
Match = tuple[Sequence[Node], Callable[[], Node], str]

# Relative tolerance for the constants of a pattern (sqrt(2) exported as 1.4142135, ...).
RTOL = 1e-4


def is_op(node: Node | None, *op_types: str) -> bool:
    """Whether ``node`` is one of ``op_types`` (default domain); "Add" also matches a
    two-input Sum, which ONNX's function bodies use for it."""
    if node is None or node.domain:
        return False
    if node.op_type == "Sum" and len(node.inputs) == 2:
        return "Add" in op_types or "Sum" in op_types
    return node.op_type in op_types


def producer(index: GraphIndex, name: str, *op_types: str) -> Node | None:
    """The node defining ``name`` when it is one of ``op_types`` (default domain)."""
    node = index.producer.get(name)
    return node if is_op(node, *op_types) else None


def consumers(index: GraphIndex, name: str, *op_types: str) -> list[Node]:
    """The distinct nodes of ``op_types`` reading ``name``, in graph order."""
    seen: dict[int, Node] = {}
    for node in index.consumers.get(name, []):
        if is_op(node, *op_types):
            seen.setdefault(id(node), node)
    return list(seen.values())


def sole_consumer(index: GraphIndex, name: str, *op_types: str) -> Node | None:
    """The only reader of ``name`` (no graph output reads it either) when it is one of ``op_types``."""
    node = index.only_consumer(name)
    return node if is_op(node, *op_types) else None


def other_input(node: Node, name: str) -> str | None:
    """The operand of a two-input node besides ``name`` (``name`` itself for ``f(name, name)``)."""
    if len(node.inputs) != 2 or name not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def scalar(index: GraphIndex, name: str) -> float | None:
    """The value of a one-element float or integer constant."""
    value = index.constant(name)
    if value is None or value.size != 1 or value.dtype.kind not in "fiu":
        return None
    return float(value.reshape(-1)[0])


def close(value: float | None, expected: float, rtol: float = RTOL) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=rtol)


def scaled(index: GraphIndex, node: Node | None) -> tuple[str, float] | None:
    """``(operand, factor)`` when ``node`` computes ``operand * factor`` with a scalar constant
    factor: Mul by it (either side) or Div by its reciprocal."""
    if is_op(node, "Mul"):
        for i in (0, 1):
            factor = scalar(index, node.inputs[1 - i])
            if factor is not None:
                return node.inputs[i], factor
    elif is_op(node, "Div"):
        divisor = scalar(index, node.inputs[1])
        if divisor:
            return node.inputs[0], 1 / divisor
    return None


def reduce_axes(index: GraphIndex, node: Node, opset: int) -> list[int] | None:
    """The explicit axes of a keepdims reduction (attribute or input, by opset); None when
    they are absent, computed at run time, or the reduction drops them."""
    if not node.attrs.get("keepdims", 1):
        return None
    if opset >= axes_input_since(node.op_type):
        if len(node.inputs) < 2 or not node.inputs[1]:
            return None
        value = index.constant(node.inputs[1])
        axes = None if value is None else [int(a) for a in value.reshape(-1)]
    else:
        axes = node.attrs.get("axes")
    return list(axes) if axes else None


def rank(graph: Graph, name: str) -> int | None:
    t = value_type(graph, name)
    return None if t is None else t.rank


def fused_name(names: NameGenerator, group: Sequence[Node], fallback: str) -> str:
    """A fresh node name: the path the group's node names share ("/bert/.../LayerNorm" for
    "/bert/.../LayerNorm/ReduceMean" ...), else ``fallback``."""
    paths = [n.name for n in group if n.name]
    prefix = os.path.commonprefix(paths) if len(paths) == len(group) else ""
    prefix = prefix[: prefix.rfind("/")] if "/" in prefix else ""
    return names(prefix or fallback)


def fuse_matches(graph: Graph, find: Callable[[GraphIndex, Node], "Match | None"]) -> PassResult:
    """Replace matched groups of nodes by one node each. ``find(index, node)`` is asked of every
    node in graph order; a match sharing no node with an earlier one becomes the node its
    ``build()`` makes (so names are drawn for these only) and is counted as its kind."""
    index = GraphIndex(graph)
    todo = Replacements()
    result = PassResult()
    for node in graph.nodes:
        found = find(index, node)
        if found is None:
            continue
        group, build, kind = found
        if todo.overlaps(group):
            continue
        todo.add(group, build())
        result.add(kind)
    todo.apply(graph)
    return result
