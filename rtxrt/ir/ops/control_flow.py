"""Control flow: If, Loop and Scan, whose bodies are subgraph attributes.

Inference fills the body graphs' types before it reaches the node, so the output types here
follow from the types of the body outputs (``Graph.types``).
"""
from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..graph import Dim, Graph, TensorType
from .infer_helpers import normalize_axis
from .facts import OPAQUE
from .registry import VARIADIC, InferenceContext, register


def join_types(a: TensorType | None, b: TensorType | None) -> TensorType | None:
    """The most precise type that covers both: dims that agree stay, others become unknown."""
    if a is None or b is None:
        known = a or b
        return None if known is None else TensorType(known.dtype, None)
    if a.dtype != b.dtype:
        raise ValueError(f"element types differ: {a} and {b}")
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorType(a.dtype, None)
    return TensorType(a.dtype, tuple(x if x == y else None for x, y in zip(a.shape, b.shape)))


def _body(ctx: InferenceContext, key: str) -> Graph:
    body = ctx.attr(key)
    if not isinstance(body, Graph):
        raise ctx.fail(f"attribute {key!r} must be a graph")
    return body


def _output_types(graph: Graph, names: list[str]) -> list[TensorType | None]:
    return [graph.types.get(name) for name in names]


def _with_dim(t: TensorType | None, axis: int, dim: Dim) -> TensorType | None:
    """``t`` with a new dimension ``dim`` at ``axis`` (a scan output built from its elements)."""
    if t is None or t.shape is None:
        return None if t is None else TensorType(t.dtype, None)
    shape = list(t.shape)
    shape.insert(axis % (len(shape) + 1), dim)
    return TensorType(t.dtype, tuple(shape))


def _infer_if(ctx: InferenceContext) -> list[TensorType | None]:
    then_branch, else_branch = _body(ctx, "then_branch"), _body(ctx, "else_branch")
    count = len(ctx.node.outputs)
    if len(then_branch.outputs) != count or len(else_branch.outputs) != count:
        raise ctx.fail(
            f"has {count} output(s) but its branches produce {len(then_branch.outputs)} and "
            f"{len(else_branch.outputs)}"
        )
    cond = ctx.type(0)
    if cond.dtype != DType.BOOL:
        raise ctx.fail(f"condition must be bool, got {cond}")
    if cond.is_static and np.prod(cond.shape) != 1:
        raise ctx.fail(f"condition must hold one element, got {cond}")
    known = ctx.constant(0)
    if known is not None and known.size == 1:  # only the branch taken runs: its types are the If's
        taken = then_branch if bool(known.reshape(-1)[0]) else else_branch
        return _output_types(taken, taken.outputs)
    pairs = zip(_output_types(then_branch, then_branch.outputs), _output_types(else_branch, else_branch.outputs))
    try:
        return [join_types(t, e) for t, e in pairs]
    except ValueError as exc:
        raise ctx.fail(f"then and else branches disagree: {exc}") from None


def _infer_loop(ctx: InferenceContext) -> list[TensorType | None]:
    body = _body(ctx, "body")
    carried = len(ctx.node.inputs) - 2
    if len(body.inputs) != carried + 2 or len(body.outputs) < carried + 1:
        raise ctx.fail(
            f"has {carried} loop-carried value(s) but its body takes {len(body.inputs)} input(s) "
            f"(iteration number, condition, carried values) and returns {len(body.outputs)}"
        )
    if len(ctx.node.outputs) != len(body.outputs) - 1:
        raise ctx.fail(f"has {len(ctx.node.outputs)} output(s) but its body returns {len(body.outputs) - 1} after the condition")
    for i, name in enumerate(body.inputs[2:], start=2):  # the body's types hold from the first iteration on
        declared, initial = body.types.get(name), ctx.input_types[i]
        if declared is not None and initial is not None and not _compatible(declared, initial):
            raise ctx.fail(f"loop-carried value {ctx.node.inputs[i]!r} starts as {initial} but the body declares "
                           f"its input {name!r} as {declared}")
    outputs = _output_types(body, body.outputs[1:])
    try:
        # Zero iterations return the initial values, so the result covers both.
        finals = [join_types(ctx.input_types[i + 2], t) for i, t in enumerate(outputs[:carried])]
    except ValueError as exc:
        raise ctx.fail(f"a loop-carried value changes type in the body: {exc}") from None
    if _never_ends(ctx, body):
        raise ctx.fail("never ends: it has no trip count, starts with a true condition and its body "
                       "returns the condition unchanged")
    trips = _fixed_trip_count(ctx, body)
    return finals + [_with_dim(t, 0, trips) for t in outputs[carried:]]


def _compatible(a: TensorType, b: TensorType) -> bool:
    if a.dtype != b.dtype:
        return False
    if a.shape is None or b.shape is None:
        return True
    return len(a.shape) == len(b.shape) and all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape))


def _never_ends(ctx: InferenceContext, body: Graph) -> bool:
    if ctx.has_input(0) or not _passes_condition_through(body):
        return False
    cond = ctx.constant(1) if ctx.has_input(1) else np.array(True)
    return cond is not None and cond.size == 1 and bool(cond.reshape(-1)[0])


def _fixed_trip_count(ctx: InferenceContext, body: Graph) -> int | None:
    """The trip count when it is a constant and the body passes its condition through."""
    count = ctx.constant(0) if ctx.has_input(0) else None
    if count is None or not _passes_condition_through(body):
        return None
    cond = ctx.constant(1) if ctx.has_input(1) else np.array(True)
    if cond is None or not bool(cond.reshape(-1)[0]):
        return None
    return max(int(count.reshape(-1)[0]), 0)


def _passes_condition_through(body: Graph) -> bool:
    """Whether the body returns its condition input as it is, directly or through Identity nodes
    (as exporters write it)."""
    producers = body.producers()
    name = body.outputs[0]
    for _ in range(len(body.nodes) + 1):  # an Identity cycle in an unchecked graph ends too
        if name == body.inputs[1]:
            return True
        node = producers.get(name)
        if node is None or node.op_type != "Identity" or node.domain or not node.inputs:
            return False
        name = node.inputs[0]
    return False


def _infer_scan(ctx: InferenceContext) -> list[TensorType | None]:
    body = _body(ctx, "body")
    scans = int(ctx.attr("num_scan_inputs", 0))
    states = len(ctx.node.inputs) - scans
    if scans < 1 or states < 0:
        raise ctx.fail(f"num_scan_inputs must be in [1, {len(ctx.node.inputs)}], got {scans}")
    if len(body.inputs) != len(ctx.node.inputs) or len(body.outputs) != len(ctx.node.outputs):
        raise ctx.fail(
            f"takes {len(ctx.node.inputs)} input(s) and {len(ctx.node.outputs)} output(s) but its body "
            f"takes {len(body.inputs)} and returns {len(body.outputs)}"
        )
    first = ctx.type(states)
    length: Dim = None
    if first.shape is not None:
        axis = (ctx.attr("scan_input_axes") or [0])[0]
        length = first.shape[normalize_axis(ctx, axis, len(first.shape))]
    outputs = _output_types(body, body.outputs)
    try:
        finals = [join_types(ctx.input_types[i], t) for i, t in enumerate(outputs[:states])]
    except ValueError as exc:
        raise ctx.fail(f"a state value changes type in the body: {exc}") from None
    axes = list(ctx.attr("scan_output_axes") or []) + [0] * len(outputs)
    return finals + [_with_dim(t, axis, length) for t, axis in zip(outputs[states:], axes)]


def _any_dims(t: TensorType | None) -> TensorType | None:
    """Same element type and rank, dims unknown: a carried value may change size per step."""
    if t is None or t.shape is None:
        return t
    return TensorType(t.dtype, tuple(None for _ in t.shape))


def _loop_body_inputs(ctx: InferenceContext) -> dict[str, list[TensorType | None]]:
    carried = [_any_dims(ctx.input_types[i]) for i in range(2, len(ctx.node.inputs))]
    return {"body": [TensorType(DType.INT64, ()), TensorType(DType.BOOL, ()), *carried]}


def _scan_body_inputs(ctx: InferenceContext) -> dict[str, list[TensorType | None]]:
    scans = int(ctx.attr("num_scan_inputs", 0))
    states = len(ctx.node.inputs) - scans
    axes = list(ctx.attr("scan_input_axes") or []) + [0] * scans
    elements = []
    for i, axis in zip(range(states, len(ctx.node.inputs)), axes):
        t = ctx.input_types[i]
        if t is None or t.shape is None:
            elements.append(t)
            continue
        shape = list(t.shape)
        del shape[axis % len(shape)]
        elements.append(TensorType(t.dtype, tuple(shape)))
    return {"body": [*ctx.input_types[:states], *elements]}


register("If", _infer_if, inputs=1, outputs=(1, VARIADIC), facts=OPAQUE)
register("Loop", _infer_loop, inputs=(2, VARIADIC), outputs=(1, VARIADIC), subgraph_inputs=_loop_body_inputs, facts=OPAQUE)
register("Scan", _infer_scan, inputs=(1, VARIADIC), outputs=(1, VARIADIC), subgraph_inputs=_scan_body_inputs, facts=OPAQUE)
