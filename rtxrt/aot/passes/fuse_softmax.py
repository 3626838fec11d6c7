"""fuse_softmax: softmax written out op by op → one Softmax or LogSoftmax along one axis.

    e = Exp(z);  Div(e, ReduceSum(e, [a]))            → Softmax(z, axis=a)
    Sub(z, Log(ReduceSum(Exp(z), [a])))               → LogSoftmax(z, axis=a)
    z = Sub(x, ReduceMax(x, [a]))  (the stable forms)  → the same of x
    Log(Softmax(x))                                   → LogSoftmax(x)

Reductions keep their dims. The max subtraction changes nothing mathematically, and the fused
ops subtract the max themselves, so it joins whenever its values are read nowhere else; the
plain forms fuse too (they then stop overflowing for large inputs). Before opset 13 Softmax
flattened its input to 2-D at the axis, so there only the last axis fuses.
"""
from __future__ import annotations

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import GraphIndex, NameGenerator, is_private
from ..options import AotOptions
from ..pass_result import PassResult
from .patterns import Match, fuse_matches, fused_name, is_op, producer, rank, reduce_axes, sole_consumer


def fuse_softmax(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    names = NameGenerator(graph)

    def find(index: GraphIndex, node: Node) -> Match | None:
        match = _match(graph, index, node, model.opset) if is_op(node, "ReduceSum") else None
        if match is None:
            return None
        op_type, x, nodes, axis = match
        output = nodes[-1].outputs[0]
        return nodes, lambda: Node(op_type, [x], [output], {"axis": axis}, name=fused_name(names, nodes, op_type)), op_type

    def find_log_of_softmax(index: GraphIndex, node: Node) -> Match | None:
        softmax = producer(index, node.inputs[0], "Softmax") if is_op(node, "Log") else None
        if softmax is None or index.only_consumer(softmax.outputs[0]) is not node:
            return None
        group = [softmax, node]
        return group, lambda: Node("LogSoftmax", softmax.inputs, node.outputs, dict(softmax.attrs),
                                   name=fused_name(names, group, "LogSoftmax")), "LogSoftmax"

    result = fuse_matches(graph, find)
    result.changes.update(fuse_matches(graph, find_log_of_softmax).changes)
    return result


def _match(graph: Graph, index: GraphIndex, reduce_sum: Node, opset: int) -> tuple[str, str, list[Node], int] | None:
    """(op type, input, nodes with the result last, axis) of the pattern around a ReduceSum."""
    exp = producer(index, reduce_sum.inputs[0], "Exp")
    if exp is None:
        return None
    e, total, z = exp.outputs[0], reduce_sum.outputs[0], exp.inputs[0]
    axis = _axis(graph, index, reduce_sum, z, opset)
    if axis is None:
        return None
    divide = sole_consumer(index, total, "Div")
    log = sole_consumer(index, total, "Log")
    minus = sole_consumer(index, log.outputs[0], "Sub") if log is not None else None
    if divide is not None and divide.inputs == [e, total]:
        op_type, nodes = "Softmax", [exp, reduce_sum, divide]
    elif minus is not None and minus.inputs == [z, log.outputs[0]]:
        op_type, nodes = "LogSoftmax", [exp, reduce_sum, log, minus]
    else:
        return None
    if not is_private(index, nodes, [nodes[-1].outputs[0]]):
        return None
    shift = _max_shift(graph, index, z, axis, opset)
    if shift is not None and is_private(index, shift + nodes, [nodes[-1].outputs[0]]):
        return op_type, shift[0].inputs[0], shift + nodes, axis
    return op_type, z, nodes, axis


def _axis(graph: Graph, index: GraphIndex, reduction: Node, x: str, opset: int) -> int | None:
    """The one axis ``reduction`` reduces (kept), non-negative where x's rank is known;
    None where the fused op could not say the same (see the module note on opset 13)."""
    axes = reduce_axes(index, reduction, opset)
    if axes is None or len(axes) != 1:
        return None
    axis, r = axes[0], rank(graph, x)
    if r is not None:
        if not -r <= axis < r:
            return None
        axis %= r
    last = axis == -1 or (r is not None and axis == r - 1)
    if opset < 13 and not last:
        return None
    return axis if r is not None or axis < 0 else None


def _max_shift(graph: Graph, index: GraphIndex, z: str, axis: int, opset: int) -> list[Node] | None:
    """[ReduceMax, Sub] when z = x - ReduceMax(x) along ``axis``."""
    sub = producer(index, z, "Sub")
    top = producer(index, sub.inputs[1], "ReduceMax") if sub is not None else None
    if top is None or top.inputs[0] != sub.inputs[0] or _axis(graph, index, top, top.inputs[0], opset) != axis:
        return None
    return [top, sub]

