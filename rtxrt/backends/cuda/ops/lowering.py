"""Finding a node's lowering: ``LOWERINGS`` holds, per operator, the function that turns a
node with concrete input forms into one or more ``NodeProgram``s (several: tactics for the
autotuner). Each module of this package registers its lowerings with ``@LOWERINGS.register``.

``lower(ctx)`` finds the node's lowering; Unsupported (a CodegenError) means "not in these
forms": the builder then presents the inputs in the logical layout, then in the logical
dtype, and finally runs the node on the host."""
from __future__ import annotations

from collections.abc import Callable

from ....op_table import OpTable
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported

Lowering = Callable[[LowerContext], list[NodeProgram]]

LOWERINGS: OpTable[Lowering] = OpTable("GPU lowering", __name__.rpartition(".")[0])


def find_lowering(domain: str, op_type: str) -> Lowering | None:
    return LOWERINGS.get(op_type, domain)


def lower(ctx: LowerContext) -> list[NodeProgram]:
    fn = find_lowering(ctx.node.domain, ctx.node.op_type)
    if fn is None:
        raise Unsupported(f"{ctx.node.label}: no GPU kernel for {ctx.node.op_type}")
    programs = fn(ctx)
    if not programs:
        raise Unsupported(f"{ctx.node.label}: no program")
    return programs
