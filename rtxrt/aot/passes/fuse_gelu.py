"""fuse_gelu: GELU written out op by op (PyTorch below opset 20, transformers' "gelu_new") →
one Gelu.

    erf form:   x * 0.5 * (1 + Erf(x / sqrt(2)))                          → Gelu(x)
    tanh form:  x * 0.5 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))   → Gelu(x, approximate="tanh")

Scaling by c is Mul by c (either side) or Div by 1/c; the 0.5 may scale x, the sum or the
product; x^3 is Pow(x, 3) or x*x*x. Constants match within a relative 1e-4.
"""
from __future__ import annotations

import math

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import GraphIndex, NameGenerator, is_private, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .patterns import (
    Match, close, fuse_matches, fused_name, is_op, other_input, producer, rank, scalar, scaled, sole_consumer,
)

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
TANH_CUBIC = 0.044715


def fuse_gelu(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    names = NameGenerator(graph)

    def find(index: GraphIndex, node: Node) -> Match | None:
        if is_op(node, "Erf"):
            match = _match_erf(index, node)
        elif is_op(node, "Tanh"):
            match = _match_tanh(index, node)
        else:
            return None
        if match is None:
            return None
        x, nodes, form = match
        output = nodes[-1].outputs[0]
        if not _keeps_type(graph, x, output) or not is_private(index, nodes, [output]):
            return None
        attrs = {"approximate": "tanh"} if form == "tanh" else {}
        return nodes, lambda: Node("Gelu", [x], [output], attrs, name=fused_name(names, nodes, "Gelu")), f"Gelu ({form} form)"

    return fuse_matches(graph, find)


def _match_erf(index: GraphIndex, erf: Node) -> tuple[str, list[Node], str] | None:
    """From Erf(x / sqrt(2)) on."""
    inner = index.producer.get(erf.inputs[0])
    found = scaled(index, inner)
    if found is None or not close(found[1], 1 / math.sqrt(2)):
        return None
    x = found[0]
    tail = _half_x_times_one_plus(index, x, erf)
    return None if tail is None else (x, [inner, erf, *tail], "erf")


def _match_tanh(index: GraphIndex, tanh: Node) -> tuple[str, list[Node], str] | None:
    """From Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)) on."""
    outer = index.producer.get(tanh.inputs[0])
    found = scaled(index, outer)
    if found is None or not close(found[1], SQRT_2_OVER_PI):
        return None
    add = producer(index, found[0], "Add")
    if add is None:
        return None
    for x, cubic_term in (add.inputs, add.inputs[::-1]):
        term = index.producer.get(cubic_term)
        cubic = scaled(index, term)
        if cubic is None or not close(cubic[1], TANH_CUBIC):
            continue
        cube = _cube(index, cubic[0], x)
        tail = _half_x_times_one_plus(index, x, tanh) if cube is not None else None
        if tail is not None:
            return x, [*cube, term, add, outer, tanh, *tail], "tanh"
    return None


def _cube(index: GraphIndex, name: str, x: str) -> list[Node] | None:
    """The nodes computing ``name`` = x^3: Pow(x, 3), or Mul of x and x*x in either order."""
    node = index.producer.get(name)
    if is_op(node, "Pow"):
        return [node] if node.inputs[0] == x and scalar(index, node.inputs[1]) == 3.0 else None
    if not is_op(node, "Mul") or x not in node.inputs:
        return None
    square = producer(index, other_input(node, x), "Mul")
    return [square, node] if square is not None and square.inputs == [x, x] else None


def _half_x_times_one_plus(index: GraphIndex, x: str, f: Node) -> list[Node] | None:
    """The nodes computing 0.5 * x * (1 + f), the result last: the Add and then
    (x * a) * 0.5, (a * 0.5) * x or (x * 0.5) * a for a = 1 + f."""
    add = sole_consumer(index, f.outputs[0], "Add")
    if add is None or not close(scalar(index, other_input(add, f.outputs[0])), 1.0):
        return None
    a = add.outputs[0]
    first = sole_consumer(index, a, "Mul")
    if first is None:
        return None
    operand = other_input(first, a)
    if operand == x:  # (x * a) * 0.5
        second = sole_consumer(index, first.outputs[0], "Mul", "Div")
        found = scaled(index, second)
        return [add, first, second] if found and close(found[1], 0.5) else None
    found = scaled(index, first)
    if found is not None and found[0] == a and close(found[1], 0.5):  # (a * 0.5) * x
        second = sole_consumer(index, first.outputs[0], "Mul")
        return [add, first, second] if second is not None and other_input(second, first.outputs[0]) == x else None
    half = index.producer.get(operand)  # (x * 0.5) * a
    found = scaled(index, half)
    if found is not None and found[0] == x and close(found[1], 0.5):
        return [half, add, first]
    return None


def _keeps_type(graph: Graph, x: str, y: str) -> bool:
    """Gelu keeps x's type: x is a float tensor and no constant of the pattern broadcast it
    to a higher rank."""
    t = value_type(graph, x)
    return t is not None and t.dtype.is_float and t.rank is not None and rank(graph, y) == t.rank
