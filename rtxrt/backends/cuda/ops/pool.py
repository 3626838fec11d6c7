"""Max, average and global pooling, in either layout."""
from __future__ import annotations

from .pool_source import pool_kernel
from ..plan.forms import NHWC, TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, single_kernel


def lower_pool(ctx: LowerContext) -> list[NodeProgram]:
    node = ctx.node
    if len([o for o in node.outputs if o]) != 1 or not node.outputs[0]:
        raise Unsupported(f"{node.label}: only the pooled output is generated")
    x, out = ctx.input(0), ctx.outputs[0]
    layout = "NHWC" if x.layout == NHWC else "NCHW"
    kernel = pool_kernel(node.op_type, x.physical, x.dtype, node.attrs, layout)
    form = TensorForm(x.dtype, out.shape, x.layout)
    if kernel.outputs[0].shape != form.physical:
        raise Unsupported(f"{node.label}: the kernel writes {kernel.outputs[0].shape}, the graph expects {form}")
    return [single_kernel(kernel, [form], "pool")]


LOWERINGS = {op: lower_pool for op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")}
