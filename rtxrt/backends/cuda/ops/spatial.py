"""Spatial ops of image models: instance/group normalization, Resize and ConvTranspose (any
spatial rank), in either layout."""
from __future__ import annotations

import numpy as np

from ....ir.graph import TensorType
from .conv_transpose_source import (
    conv_transpose_kernel,
    pack_conv_transpose_weights,
)
from .normalization_source import normalization_kernel
from .resize_source import resize_kernel
from ..plan.forms import NHWC, TensorForm, numpy_dtype
from ..plan.program import Launch, NodeProgram, Ref
from .context import LowerContext, Unsupported, kernel_args, launch_of, single_kernel
from .lowering import LOWERINGS


def _layout(x: TensorForm) -> str:
    return "NHWC" if x.layout == NHWC else "NCHW"


def _logical_types(ctx: LowerContext) -> list[TensorType | None]:
    return [None if f is None else TensorType(f.dtype, f.shape) for f in ctx.inputs]


def lower_normalization(ctx: LowerContext) -> list[NodeProgram]:
    x = ctx.input(0)
    for i in (1, 2):
        if ctx.input(i).layout or ctx.input(i).dtype != x.dtype:
            raise Unsupported(f"{ctx.node.label}: scale and bias must be stored as X ({x.dtype.short})")
    kernel = normalization_kernel(ctx.node, _logical_types(ctx), x.dtype, _layout(x), opset=ctx.opset)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape, x.layout)], "normalization")]


def lower_resize(ctx: LowerContext) -> list[NodeProgram]:
    """The roi (tf_crop_and_resize) and the sizes (a keep_aspect_ratio_policy other than
    stretch) are read at plan time only where the kernel needs them, as the scales are."""
    x, node = ctx.input(0), ctx.node
    scales = _constant(ctx, 2, "scales")
    roi = _constant(ctx, 1, "roi") if node.attr("coordinate_transformation_mode") == "tf_crop_and_resize" else None
    sizes = _constant(ctx, 3, "sizes") if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch" else None
    out = TensorForm(x.dtype, ctx.outputs[0].shape, x.layout)
    kernel = resize_kernel(node, _logical_types(ctx), out.shape, x.dtype, _layout(x), scales=scales,
                           sizes=None if sizes is None else [int(s) for s in sizes], roi=roi, opset=ctx.opset)
    program = single_kernel(kernel, [out], "resize")
    return [program]


def _constant(ctx: LowerContext, i: int, what: str) -> list[float] | None:
    """Input ``i``'s value, known at plan time; None where it is omitted or empty."""
    if not ctx.has(i):
        return None
    value = ctx.const(i, what)
    return [float(v) for v in value.reshape(-1)] if value.size else None


def lower_conv_transpose(ctx: LowerContext) -> list[NodeProgram]:
    """Constant weights are packed channels-last once, at plan time; weights computed at run
    time are read as they are held (a channels-last 4-D W is the packed layout already)."""
    x = ctx.input(0)
    if any(i >= len(ctx.consts) or ctx.consts[i] is None for i in (1, 2) if ctx.has(i)):
        return [_conv_transpose_on_inputs(ctx, x)]
    w = ctx.const(1, "the weights")
    dtype = numpy_dtype(x.dtype)
    consts = {"W": ctx.model_constant(f"W {dtype}", lambda: pack_conv_transpose_weights(w).astype(dtype))}
    if ctx.has(2):
        bias = ctx.const(2, "the bias")
        consts["B"] = ctx.model_constant(f"B {dtype}", lambda: np.ascontiguousarray(bias.astype(dtype)))
    types = _logical_types(ctx)
    kernel = conv_transpose_kernel(ctx.node, types, x.dtype, _layout(x), weight_layout="NHWC")
    packed = {Ref.input(1): Ref.const("W"), Ref.input(2): Ref.const("B")}
    launch: Launch = launch_of(kernel, kernel_args(kernel, packed))
    out = TensorForm(x.dtype, ctx.outputs[0].shape, x.layout)
    return [NodeProgram([launch] if all(launch.grid) else [], [out], {kernel.name: kernel.source}, consts=consts,
                        label="conv_transpose")]


def _conv_transpose_on_inputs(ctx: LowerContext, x: TensorForm) -> NodeProgram:
    w = ctx.input(1)
    if any(ctx.input(i).dtype != x.dtype for i in (1, 2) if ctx.has(i)):
        raise Unsupported(f"{ctx.node.label}: W and B computed at run time must be stored as X ({x.dtype.short})")
    kernel = conv_transpose_kernel(ctx.node, _logical_types(ctx), x.dtype, _layout(x), _layout(w))
    return single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape, x.layout)], "conv_transpose")


LOWERINGS.register("InstanceNormalization", "GroupNormalization")(lower_normalization)
LOWERINGS.add("Resize", lower_resize)
LOWERINGS.add("ConvTranspose", lower_conv_transpose)
