"""Max (with its Indices), average and global pooling over any spatial rank, in either
layout; MaxRoiPool."""
from __future__ import annotations

from ....ir.dtypes import DType
from .pool_source import pool_kernel, roi_pool_kernel
from ..plan.forms import NHWC, TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, single_kernel
from .lowering import LOWERINGS


def lower_pool(ctx: LowerContext) -> list[NodeProgram]:
    """Y, and MaxPool's Indices where the graph reads them, in X's layout."""
    node = ctx.node
    if not node.outputs or not node.outputs[0]:
        raise Unsupported(f"{node.label}: the kernels write Y, which the graph leaves out")
    indices = len(node.outputs) > 1 and bool(node.outputs[1])
    x, out = ctx.input(0), ctx.outputs[0]
    layout = "NHWC" if x.layout == NHWC else "NCHW"
    kernel = pool_kernel(node.op_type, x.physical, x.dtype, node.attrs, layout, indices)
    forms = [TensorForm(x.dtype, out.shape, x.layout)]
    if indices:
        forms.append(TensorForm(DType.INT64, out.shape, x.layout))
    if kernel.outputs[0].shape != forms[0].physical:
        raise Unsupported(f"{node.label}: the kernel writes {kernel.outputs[0].shape}, the graph expects {forms[0]}")
    return [single_kernel(kernel, forms, "pool")]


LOWERINGS.register("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")(lower_pool)


@LOWERINGS.register("MaxRoiPool")
def lower_roi_pool(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x, rois = ctx.input(0), ctx.input(1)
    if len(x.shape) != 4 or len(rois.shape) != 2 or rois.shape[1] != 5:
        raise Unsupported(f"{ctx.node.label}: takes X (N, C, H, W) and rois (R, 5), got {x.describe()}, {rois.describe()}")
    kernel = roi_pool_kernel(x.shape, x.dtype, rois.shape[0], rois.dtype, ctx.node.attrs)
    return [single_kernel(kernel, [TensorForm(x.dtype, kernel.outputs[0].shape)], "roi_pool")]
