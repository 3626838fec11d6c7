"""RoiAlign on the GPU: one generated kernel (roi_align_source.py) reading X (logical or
channels-last), the runtime rois and batch_indices, and writing Y logical in X's type."""
from __future__ import annotations

from ....ir.dtypes import DType
from ....ir.graph import TensorType
from ..plan.forms import NHWC, TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, single_kernel
from .lowering import LOWERINGS
from .roi_align_source import roi_align_kernel


@LOWERINGS.register("RoiAlign")
def lower_roi_align(ctx: LowerContext) -> list[NodeProgram]:
    """rois and batch_indices are data (a region proposal network's boxes): read by the
    kernel, never needed when the plan is made. A channels-last X (a conv region's output) is
    read as it is stored: no conversion of the feature map."""
    x, rois, batch = ctx.input(0), ctx.input(1), ctx.input(2)
    if batch.dtype != DType.INT64 or len(batch.shape) != 1 or len(rois.shape) != 2 or batch.shape[0] != rois.shape[0]:
        raise Unsupported(f"{ctx.node.label}: takes rois [R, 4] and int64 batch_indices [R], got {rois.describe()} "
                          f"and {batch.describe()}")
    # a CodegenError (what the generator does not cover) is Unsupported; it names the node
    kernel = roi_align_kernel(ctx.node, ctx.opset, TensorType(x.dtype, x.shape), TensorType(rois.dtype, rois.shape),
                              "NHWC" if x.layout == NHWC else "NCHW")
    return [single_kernel(kernel, [TensorForm(x.dtype, kernel.outputs[0].shape)], "roi_align")]
