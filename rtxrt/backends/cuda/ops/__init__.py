"""Lowerings: one module per family of operators, each turning a node with concrete input
forms into one or more ``NodeProgram``s (several: tactics for the autotuner).

``lower(ctx)`` finds the node's lowering; Unsupported (a CodegenError) means "not in these
forms": the builder then presents the inputs in the logical layout, then in the logical
dtype, and finally runs the node on the host."""
from __future__ import annotations

from collections.abc import Callable

from ..plan.program import NodeProgram
from . import (
    attention,
    conv,
    data_movement,
    elementwise,
    matmul,
    pool,
    reduction,
    spatial,
)
from .context import LowerContext, Unsupported

Lowering = Callable[[LowerContext], list[NodeProgram]]

_TABLE: dict[tuple[str, str], Lowering] = {}
for module in (elementwise, matmul, conv, reduction, data_movement, pool, attention, spatial):
    for key, fn in module.LOWERINGS.items():
        domain, _, op = key.rpartition("::")
        _TABLE[(domain, op)] = fn


def find_lowering(domain: str, op_type: str) -> Lowering | None:
    return _TABLE.get(("" if domain == "ai.onnx" else domain, op_type))


def lower(ctx: LowerContext) -> list[NodeProgram]:
    fn = find_lowering(ctx.node.domain, ctx.node.op_type)
    if fn is None:
        raise Unsupported(f"{ctx.node.label}: no GPU kernel for {ctx.node.op_type}")
    programs = fn(ctx)
    if not programs:
        raise Unsupported(f"{ctx.node.label}: no program")
    return programs


__all__ = ["LowerContext", "Unsupported", "find_lowering", "lower"]
