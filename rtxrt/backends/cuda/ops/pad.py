"""GPU lowering of ONNX Pad (every mode; the kernel is pad_source.py's).

Opsets before 11 give ``pads`` and ``value`` as attributes; from 11 ``pads`` is input 1, the
optional ``constant_value`` input 2 and (from 18) the optional ``axes`` input 3. ``pads`` and
``axes`` shape the kernel, so they must be known when the plan is made; ``constant_value``
may be a plan-time constant (baked into the source) or a value computed on the device (the
kernel reads it through a pointer).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ....ir.ops.tensor import PADS_INPUT_SINCE
from ..codegen import CodegenError
from ..codegen.dynamic import is_dynamic, lower
from ..plan.forms import TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, Unsupported, single_kernel
from .lowering import LOWERINGS
from .pad_source import RuntimeValue, pad_kernel

_CONSTANT_VALUE = 2  # the node's input holding constant_value


def lower_pad(ctx: LowerContext) -> list[NodeProgram]:
    """One kernel writing the padded (or cropped) tensor."""
    ctx.require_logical()
    node, x = ctx.node, ctx.input(0)
    mode = node.attr("mode", "constant")
    if ctx.opset < PADS_INPUT_SINCE:
        pads, axes, value = _ints(node.attr("pads", ())), None, node.attr("value", 0.0)
    else:
        if not ctx.has(1):
            raise Unsupported(f"{node.label}: has no pads input")
        pads = _ints(ctx.const(1, "pads"))
        axes = _ints(ctx.const(3, "axes")) if ctx.has(3) else None
        value = _constant_value(ctx) if mode == "constant" else 0
    out = ctx.outputs[0]
    if out is None:
        raise Unsupported(f"{node.label}: output 0 has no type")
    try:
        kernel = pad_kernel(x.shape, pads_per_axis(pads, axes, len(x.shape)), x.dtype, mode, value)
    except CodegenError as exc:
        raise Unsupported(f"{node.label}: {str(exc).removeprefix('Pad: ')}") from exc
    if [int(d) for d in kernel.outputs[0].shape] != [int(d) for d in out.shape]:
        raise Unsupported(f"{node.label}: pads {pads} give shape {[int(d) for d in kernel.outputs[0].shape]}, "
                          f"the graph says {[int(d) for d in out.shape]}")
    return [single_kernel(kernel, [TensorForm(x.dtype, out.shape)], "pad")]


def pads_per_axis(pads: Sequence[int], axes: Sequence[int] | None, rank: int) -> list[int]:
    """ONNX ``pads`` over ``axes`` (None: every axis) as begins then ends of every axis of
    ``rank`` (0 where an axis is not named; a repeated axis takes its last pads, as the
    reference backend does)."""
    axes = list(range(rank)) if axes is None else list(axes)
    if len(pads) != 2 * len(axes):
        raise CodegenError(f"Pad: pads {list(pads)} must hold a begin and an end for each of the axes {axes}")
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        if not -rank <= axis < rank:
            raise CodegenError(f"Pad: axis {axis} is out of range for rank {rank}")
        full[axis % rank], full[axis % rank + rank] = pads[i], pads[i + len(axes)]
    return full


def _constant_value(ctx: LowerContext) -> float | int | bool | np.generic | RuntimeValue:
    """The constant mode's value: 0 without the input (or an empty one), the first element of
    a plan-time constant, else a RuntimeValue for the kernel to read on the device."""
    if not ctx.has(_CONSTANT_VALUE):
        return 0
    if _CONSTANT_VALUE < len(ctx.consts) and ctx.consts[_CONSTANT_VALUE] is not None:
        known = ctx.const(_CONSTANT_VALUE, "constant_value")
        return 0 if known.size == 0 else known.reshape(-1)[0]
    form, x = ctx.input(_CONSTANT_VALUE), ctx.input(0)
    if form.dtype != x.dtype:  # the kernel copies the value's bits
        raise Unsupported(f"{ctx.node.label}: constant_value is held as {form.dtype.short}, the data as "
                          f"{x.dtype.short}")
    size = math.prod(form.shape)
    if not is_dynamic(size) and size == 0:
        return 0
    if lower(size) < 1:
        raise Unsupported(f"{ctx.node.label}: constant_value may be empty over the profile")
    return RuntimeValue(_CONSTANT_VALUE, tuple(form.shape))


def _ints(value) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


LOWERINGS.add("Pad", lower_pad)
