"""Pointwise ops and rtxrt::Elementwise chains: one generated kernel, in either layout."""
from __future__ import annotations

from ....ir.graph import TensorType
from ....ir.ops import elementwise_ops
from .elementwise_source import elementwise_kernel
from ..plan.forms import NHWC, TO_NHWC, TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, single_kernel
from .lowering import LOWERINGS


def lower_elementwise(ctx: LowerContext) -> list[NodeProgram]:
    nhwc = any(f is not None and f.layout == NHWC for f in (*ctx.inputs, *ctx.outputs))
    types = [None if f is None else (_channels_last(ctx, f) if nhwc else _plain(ctx, f)) for f in ctx.inputs]
    outputs: list[TensorForm | None] = []
    for form in ctx.outputs:
        if form is not None and nhwc and len(form.shape) != 4:
            raise Unsupported(f"{ctx.node.label}: a channels-last node writes 4-D outputs")
        outputs.append(None if form is None else TensorForm(form.dtype, form.shape, NHWC if nhwc else ""))
    kernel = elementwise_kernel(ctx.node, types, [f.dtype for f in outputs if f is not None])
    for arg in kernel.outputs:
        if outputs[arg.index] is None or arg.shape != outputs[arg.index].physical:
            raise Unsupported(f"{ctx.node.label}: the kernel writes {arg.shape}, the graph expects {outputs[arg.index]}")
    return [single_kernel(kernel, outputs, "elementwise")]


def _plain(ctx: LowerContext, form: TensorForm) -> TensorType:
    if form.layout:
        raise Unsupported(f"{ctx.node.label}: mixes layouts")
    return form.type


def _channels_last(ctx: LowerContext, form: TensorForm) -> TensorType:
    """The operand as a channels-last kernel indexes it: a logical-layout operand of rank <= 4
    qualifies where its bytes read the same in both layouts (per-channel or per-pixel values)."""
    if form.layout == NHWC:
        return form.type
    if len(form.shape) > 4:
        raise Unsupported(f"{ctx.node.label}: a rank-{len(form.shape)} operand in a channels-last node")
    shape4 = (1,) * (4 - len(form.shape)) + form.shape
    if not TensorForm(form.dtype, shape4, NHWC).same_bytes(TensorForm(form.dtype, shape4)):
        raise Unsupported(f"{ctx.node.label}: operand {form.describe()} is not channels-last")
    return TensorType(form.dtype, tuple(shape4[i] for i in TO_NHWC))

for _op in elementwise_ops():
    LOWERINGS.add(_op, lower_elementwise)
LOWERINGS.add("Elementwise", lower_elementwise, domain="rtxrt")
