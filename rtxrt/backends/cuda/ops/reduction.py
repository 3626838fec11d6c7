"""Reductions, softmax, arg-reductions and row normalizations over any axes: the row kernels
(reduction_source.py) where the reduced axes are the trailing ones, else the strided kernels
(reduction_axes_source.py), both offered to the autotuner where there is a choice. A
channels-last (NHWC) input is reduced over the physical axes its logical axes are, so a
channel softmax or mean of an NHWC tensor is a row kernel and needs no conversion."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ..codegen.kernel_source import KernelSource
from ..plan.forms import NHWC, TO_NHWC, TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, single_kernel
from .lowering import LOWERINGS
from .reduction_axes_source import strided_kernel, strided_tactics
from .reduction_source import (
    NORM_OPS,
    REDUCE_OPS,
    ROW_OPS,
    Reduction,
    reduction_problem,
    row_kernel,
    rows_of,
)

ROWS = "rows"


def tactics(r: Reduction) -> list[str]:
    """The kernels that compute ``r``, best first: the row kernel for trailing axes, else the
    strided kernels (``columns``, ``split``) in the order their bounds suggest."""
    return [ROWS] if r.trailing else strided_tactics(r)


def kernel_for(r: Reduction, tactic: str) -> KernelSource:
    """The kernel of one of ``tactics(r)``."""
    return row_kernel(rows_of(r)) if tactic == ROWS else strided_kernel(r, tactic)


def node_kernel(node: Node, inputs: Sequence[TensorType | None], *, opset: int = 21,
                axes: Sequence[int] | None = None, tactic: str | None = None) -> KernelSource:
    """The kernel computing ``node`` on inputs of these static types (``reduction_problem``'s
    arguments): the ``tactic`` one, or the first offered."""
    r = reduction_problem(node, inputs, opset=opset, axes=axes)
    return kernel_for(r, tactic or tactics(r)[0])


def lower_reduction(ctx: LowerContext) -> list[NodeProgram]:
    """One program per kernel offered for the node (only the first, or the wanted one, when
    not tuning); Unsupported where an input is not one the kernels take."""
    node = ctx.node
    x = ctx.input(0)
    if any(f is not None and f.layout for f in ctx.inputs[1:]):
        raise Unsupported(f"{node.label}: takes its parameters in the logical layout")
    axes = None
    if node.op_type in REDUCE_OPS and ctx.opset >= REDUCE_OPS[node.op_type] and ctx.has(1):
        axes = [int(a) for a in ctx.const(1, "axes").reshape(-1)]
    types = [None if f is None else f.logical.type for f in ctx.inputs]
    r = reduction_problem(node, types, opset=ctx.opset, axes=axes)
    layout = ""
    if x.layout == NHWC:
        r, layout = channels_last(node, r)
    ctx.out_dtype(0)  # Unsupported where the output has no type
    outputs = [TensorForm(r.out_dtype, ctx.outputs[0].shape, layout)] + [None] * (len(node.outputs) - 1)
    for i in r.stats:  # LayerNormalization's Mean and InvStdDev, in the stash type
        ctx.out_dtype(i)
        outputs[i] = TensorForm(DType.FLOAT32, ctx.outputs[i].shape)
    return [single_kernel(kernel_for(r, t), outputs, node.op_type.lower() if t == ROWS else t)
            for t in ctx.tactics(tactics(r), str)]


def channels_last(node: Node, r: Reduction) -> tuple[Reduction, str]:
    """``r`` (over a logical N,C,H,W input) as it reads that input stored N,H,W,C, and the
    layout of what it writes: channels-last where the output is 4-D, else logical, which the
    kernel writes only where the kept axes keep their order (C with N alone, or H, W without C)."""
    if r.op in NORM_OPS:
        raise Unsupported(f"{node.label}: normalizes a channels-last input (its scale is logical)")
    if r.op == "Hardmax" and len(r.axes) > 1:  # its first maximum is first in the logical order
        raise Unsupported(f"{node.label}: Hardmax over several axes of a channels-last input")
    position = [TO_NHWC.index(a) for a in range(4)]  # logical axis -> physical axis
    physical = replace(r, shape=tuple(r.shape[i] for i in TO_NHWC), axes=tuple(sorted(position[a] for a in r.axes)))
    if len(r.out_shape) == 4:
        return replace(physical, out_shape=tuple(r.out_shape[i] for i in TO_NHWC)), NHWC
    kept = [a for a in range(4) if a not in r.axes]
    if sorted(kept, key=position.__getitem__) != kept:
        raise Unsupported(f"{node.label}: keepdims=0 over axes {list(r.axes)} of a channels-last input "
                          "would reorder the kept axes")
    return physical, ""

LOWERINGS.register(*ROW_OPS)(lower_reduction)
