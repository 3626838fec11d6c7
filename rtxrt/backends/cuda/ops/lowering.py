"""Finding a node's lowering: ``LOWERINGS`` holds, per operator, the function that turns a
node with concrete input forms into one or more ``NodeProgram``s (several: tactics for the
autotuner). Each module of this package registers its lowerings with ``@LOWERINGS.register``.

``lower(ctx)`` finds the node's lowering; Unsupported (a CodegenError) means "not in these
forms": the builder then presents the inputs in the logical layout, then in the logical
dtype, and finally runs the node on the host.

``SHAPE_AGNOSTIC`` holds, per operator, which of its nodes get kernels that take every dim as
an argument, fixed ones too (the plan builder hands their lowerings a DimInt for each dim:
codegen/dynamic.py). Their kernels are then the same for every node that makes the same
decisions (a GEMM's tile, its alignment flags, its epilogue), whatever the sizes: ResNet's
and BERT's GEMMs share a handful of kernels instead of compiling one per size and tile. That
is for kernels whose speed does not hang on constant sizes (a GEMM's loops run over tiles
either way); where it does (a convolution's index arithmetic divides by the sizes), the
sizes stay in the source."""
from __future__ import annotations

from collections.abc import Callable

from ....ir.graph import Node
from ....op_table import OpTable
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported

Lowering = Callable[[LowerContext], list[NodeProgram]]

LOWERINGS: OpTable[Lowering] = OpTable("GPU lowering", __name__.rpartition(".")[0])
SHAPE_AGNOSTIC: OpTable[Callable[[Node], bool]] = OpTable("shape-agnostic rule", __name__.rpartition(".")[0])


def shape_agnostic(node: Node) -> bool:
    """Whether ``node``'s kernels take its fixed dims as arguments too (SHAPE_AGNOSTIC)."""
    rule = SHAPE_AGNOSTIC.get(node.op_type, node.domain)
    return rule is not None and rule(node)


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
