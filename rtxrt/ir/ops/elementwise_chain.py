"""rtxrt::Elementwise: a DAG of elementwise and broadcasting ops run as one node, which the
JIT compiles into one kernel.

Attribute ``body`` is a graph of default-domain elementwise ops (``elementwise_ops()``); it reads only
its own inputs and initializers (one-element constants), which are the node's inputs in
order, and its outputs are the node's outputs in order. Every body op broadcasts its
inputs, so an output's shape is the broadcast of the inputs it depends on.
"""
from __future__ import annotations

from ..graph import Graph, TensorType
from .signature import Attribute
from .facts import POINTWISE
from .registry import VARIADIC, InferenceContext, elementwise_ops, register

def _body(ctx: InferenceContext) -> Graph:
    body = ctx.attr("body")
    if not isinstance(body, Graph):
        raise ctx.fail("attribute 'body' must be a graph")
    if len(body.inputs) != len(ctx.node.inputs) or len(body.outputs) != len(ctx.node.outputs):
        raise ctx.fail(
            f"has {len(ctx.node.inputs)} input(s) and {len(ctx.node.outputs)} output(s) but its body "
            f"takes {len(body.inputs)} and returns {len(body.outputs)}"
        )
    defined = set(body.inputs) | set(body.initializers)
    for node in body.nodes:
        if node.domain or node.op_type not in elementwise_ops():
            raise ctx.fail(f"body holds {node.label}, which is not an elementwise op")
        outside = [n for n in node.inputs if n and n not in defined]
        if outside:
            raise ctx.fail(f"body {node.label} reads {outside[0]!r} from outside the body")
        defined.update(n for n in node.outputs if n)
    return body


def _infer(ctx: InferenceContext) -> list[TensorType | None]:
    """The body has been typed from the node's inputs (see _body_inputs) before this runs."""
    body = _body(ctx)
    return [body.types.get(name) for name in body.outputs]


def _body_inputs(ctx: InferenceContext) -> dict[str, list[TensorType | None]]:
    return {"body": list(ctx.input_types)}


# Not itself a body op; its precision class is its body's (rtxrt.aot.precision_policy).
register("Elementwise", _infer, inputs=(1, VARIADIC), outputs=(1, VARIADIC), domain="rtxrt",
         facts=POINTWISE.but(elementwise=False),
         subgraph_inputs=_body_inputs, attributes={"body": Attribute("graph", required=True)})
