"""Row-wise ops: softmax, layer/RMS normalization and reductions over the last axes."""
from __future__ import annotations

from .reduction_source import REDUCE_OPS, ROW_OPS, reduction_kernel
from ..plan.forms import TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, single_kernel
from .lowering import LOWERINGS


def lower_rows(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    node = ctx.node
    axes = None
    if node.op_type in REDUCE_OPS and ctx.opset >= REDUCE_OPS[node.op_type] and ctx.has(1):
        axes = [int(a) for a in ctx.const(1, "axes").reshape(-1)]
    kernel = reduction_kernel(node, [None if f is None else f.type for f in ctx.inputs], opset=ctx.opset, axes=axes)
    x = ctx.input(0)
    outputs = [TensorForm(x.dtype, ctx.outputs[0].shape)] + [None] * (len(node.outputs) - 1)
    return [single_kernel(kernel, outputs, node.op_type.lower())]

LOWERINGS.register(*ROW_OPS)(lower_rows)
