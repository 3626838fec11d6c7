"""GridSample on the GPU: one generated kernel (grid_sample_source.py) reading X (logical or,
4-D, channels-last) and the runtime grid (logical), and writing Y in X's layout and dtype."""
from __future__ import annotations

from ....ir.graph import TensorType
from ..plan.forms import NHWC, TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, WrongForm, single_kernel
from .grid_sample_source import grid_sample_kernel
from .lowering import LOWERINGS


def lower_grid_sample(ctx: LowerContext) -> list[NodeProgram]:
    """The grid is data: read by the kernel, never needed when the plan is made. A
    channels-last X (a Conv's output, say) is sampled as it is stored: no conversion."""
    x, grid = ctx.input(0), ctx.input(1)
    if grid.layout:  # its last axis holds the components: only the logical layout makes sense
        raise WrongForm(f"{ctx.node.label}: reads the grid in the logical layout", {1: grid.logical})
    if ctx.outputs[0] is None:
        raise Unsupported(f"{ctx.node.label}: output 0 has no type")
    # a CodegenError (what the generator does not cover) is Unsupported; it names the node
    kernel = grid_sample_kernel(ctx.node, TensorType(x.dtype, x.shape), TensorType(grid.dtype, grid.shape),
                                "NHWC" if x.layout == NHWC else "NCHW")
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape, x.layout)], "grid_sample")]


LOWERINGS.add("GridSample", lower_grid_sample)
