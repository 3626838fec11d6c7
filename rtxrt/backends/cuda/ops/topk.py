"""GPU lowering of ONNX TopK (the kernels are topk_source.py's): one kernel, rows sorted in
shared memory where they fit and radix-selected where longer, a global scratch where K is
longer than shared memory holds.

K is an attribute before opset 10 and input 1 from then. It shapes the kernel, so it must be
known when the plan is made (a constant, or a value computed from shapes); a K given as an
input is a parameter the runtime plans per value (backends/parameter_inputs.py). Either
output may be omitted; the kernel then does not write it.
"""
from __future__ import annotations

import numpy as np

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..plan.forms import TensorForm
from ..plan.program import NodeProgram, Ref
from .context import LowerContext, Unsupported, kernel_args, launch_of
from .lowering import LOWERINGS
from .topk_source import TopK, topk_kernel

K_INPUT_SINCE = 10  # the opset from which K is input 1 rather than an attribute


def lower_topk(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    node, x = ctx.node, ctx.input(0)
    rank = len(x.shape)
    axis = int(node.attr("axis", -1))
    if not -rank <= axis < rank:
        raise Unsupported(f"{node.label}: axis {axis} is out of range for rank {rank}")
    written = [i < len(node.outputs) and bool(node.outputs[i]) and i < len(ctx.outputs) and ctx.outputs[i] is not None
               for i in range(2)]
    p = TopK(tuple(x.shape), axis % rank, _k(ctx), x.dtype, bool(node.attr("largest", 1)), *written)
    for i, form in enumerate(ctx.outputs[:2]):
        if written[i] and [int(d) for d in form.shape] != [int(d) for d in p.out_shape]:
            raise Unsupported(f"{node.label}: K={p.k} gives shape {[int(d) for d in p.out_shape]}, the graph says "
                              f"{[int(d) for d in form.shape]}")
    try:
        kernel = topk_kernel(p, ctx.sm_count)
    except CodegenError as exc:
        raise Unsupported(f"{node.label}: {str(exc).removeprefix('TopK: ')}") from exc
    outputs = [TensorForm(x.dtype, ctx.outputs[0].shape) if written[0] else None,
               TensorForm(DType.INT64, ctx.outputs[1].shape) if written[1] else None]
    scratch = dict(kernel.scratch)
    launch = launch_of(kernel, kernel_args(kernel, {a.ref: Ref.scratch(a.name) for a in kernel.args
                                                    if a.name in scratch}))
    steps = [launch] if all(launch.grid) and any(written) else []
    return [NodeProgram(steps, outputs, {kernel.name: kernel.source}, scratch, label=kernel.path)]


def _k(ctx: LowerContext) -> int:
    if ctx.opset < K_INPUT_SINCE:
        k = ctx.node.attr("k")
        if k is None:
            raise Unsupported(f"{ctx.node.label}: has no k attribute")
        return int(k)
    if not ctx.has(1):
        raise Unsupported(f"{ctx.node.label}: has no K input")
    values = np.asarray(ctx.const(1, "K")).reshape(-1)
    if values.size != 1:
        raise Unsupported(f"{ctx.node.label}: K must hold one value, got {values.size}")
    return int(values[0])


LOWERINGS.add("TopK", lower_topk)
