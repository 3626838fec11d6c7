"""QuantizeLinear and DequantizeLinear as simulated arithmetic in generated kernels.

Both are elementwise ops of the elementwise generator (elementwise_source.py emits them with
the expressions made here): a lone node is one kernel, and per tensor they fuse with their
elementwise neighbours (aot/passes/fuse_elementwise.py), so a Q -> DQ pair on an activation
is one "fake quantization" kernel that reads and writes floats.

The arithmetic is ONNX's (opsets 10 to 21) as the reference backend computes it, whatever
``--precision`` the model was compiled with (the ops are Precision.OPAQUE: their float
inputs and outputs keep their logical types, and nothing here computes narrower than them):

- QuantizeLinear: ``q = x / scale`` in the type numpy promotes x and scale to (fp32 for
  fp32; an fp16 or bf16 quotient is computed in fp32 and rounded once to its type, as numpy
  does; int32 x in double) or in the type the ``precision`` attribute names; then rint (round
  half to even), plus the zero point, saturated to the output type's range. NaN gives 0, as
  the reference does on x86-64 (ONNX leaves it undefined) and the GPU's float -> int
  conversion does.
- DequantizeLinear: ``x - zero point`` exactly in integers (64-bit for int32), converted to
  fp32 (round to nearest even), times the scale in fp32, rounded once to the output type (the
  scale's type, or ``output_dtype``).
- The sub-byte integers (int4, uint4, int2, uint2; ctypes_map.SUB_BYTE_INTS) are integers
  like the others, with their narrow ranges: int4 weights dequantized per block are the
  weight-only quantization of LLMs.
- float8 (the four types of ctypes_map.FLOAT8): QuantizeLinear adds the zero point to the
  quotient (one rounding in fp32; the reference's float64 sum rounds to the same float) and
  converts as Cast does, saturating unless ``saturate`` is 0; no rint. DequantizeLinear
  subtracts in fp32 (the difference rounded once, as the reference's float64 one is).

Division and multiplication are IEEE (kernels compile with --fmad=false, precise division),
so a quotient on a rounding tie (x / scale = 2.5) rounds as numpy's does.

Granularity: per tensor (a one-element scale), per axis (1-D along ``axis``) and blocked
(opset 21: ``block_size`` values along ``axis`` share one). The generator broadcasts its
operands as numpy does, so a lone node's parameters are presented as views that broadcast
(``broadcast_views``): per axis, [C] along axis 1 of [N, C, H, W] is read as [C, 1, 1];
blocked along an axis of D = nb * B elements, x is read as [.., nb, B, ..] and the scale as
[.., nb, 1, ..]. The views are reshapes of contiguous buffers: no data moves.

Not supported (CodegenError naming the node; it then runs on the host): float4e2m1,
float8e8m0 scales, a block size that does not divide its axis (a partial last block), and a
per-axis or blocked scale presented channels-last (the builder then offers the node its
inputs in the logical layout).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import dims_text, divisible, is_dynamic
from ..codegen.kernel_source import KernelSource
from ..plan.program import BufferRole

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
QUANTIZE_OPS = frozenset({QUANTIZE, DEQUANTIZE})

F32, F16, BF16, F64, I32 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.INT32
# Integer types the GPU simulates, with their saturation ranges.
RANGES = {DType.INT8: (-128, 127), DType.UINT8: (0, 255), DType.INT16: (-32768, 32767), DType.UINT16: (0, 65535),
          DType.INT4: (-8, 7), DType.UINT4: (0, 15), DType.INT2: (-2, 1), DType.UINT2: (0, 3)}
SCALE_TYPES = frozenset({F32, F16, BF16})
QUANTIZE_INPUTS = frozenset({F32, F16, BF16, I32})
QUANTIZED = frozenset({*RANGES, *C.FLOAT8})
DEQUANTIZE_INPUTS = frozenset({*RANGES, I32, *C.FLOAT8})
DEQUANTIZED = frozenset({F32, F16, BF16})

# rint, then the zero point, then saturation. A NaN passes the comparisons and the
# conversion after it makes it 0.
HELPERS = r"""__device__ __forceinline__ float rtx_qsat(float q, float zero, float lo, float hi) {
  const float r = rintf(q) + zero;
  return r < lo ? lo : (r > hi ? hi : r);
}
__device__ __forceinline__ double rtx_qsat(double q, double zero, double lo, double hi) {
  const double r = rint(q) + zero;
  return r < lo ? lo : (r > hi ? hi : r);
}
"""


def quantized_dtype(node: Node, zero: DType | None) -> DType:
    """QuantizeLinear's output type: its zero point's, else ``output_dtype``, else uint8."""
    if zero is not None:
        return zero
    return DType(int(node.attrs.get("output_dtype", 0) or DType.UINT8))


def dequantized_dtype(node: Node, scale: DType) -> DType:
    """DequantizeLinear's output type: ``output_dtype``, else the scale's."""
    output_dtype = int(node.attrs.get("output_dtype", 0) or 0)
    return DType(output_dtype) if output_dtype else scale


def check_types(node: Node, x: DType, scale: DType, zero: DType | None) -> DType:
    """The node's output type, where the GPU simulates these types; else a CodegenError
    naming the node."""
    def refuse(what: str, dtype: DType) -> CodegenError:
        simulated = C.KERNEL_DTYPES | C.FLOAT8 | C.SUB_BYTE_INTS
        why = "float4e2m1 and float8e8m0 have no GPU kernel" if dtype not in simulated else "the ONNX spec does not allow it"
        return CodegenError(f"{node.label}: {node.op_type} with {what} {dtype.short} runs on the host ({why})")

    if scale not in SCALE_TYPES and not (node.op_type == QUANTIZE and scale == I32 and x == I32):
        raise refuse("a scale of type", scale)
    if node.op_type == QUANTIZE:
        out = quantized_dtype(node, zero)
        if x not in QUANTIZE_INPUTS:
            raise refuse("an input of type", x)
        if out not in QUANTIZED:
            raise refuse("output type", out)
        return out
    out = dequantized_dtype(node, scale)
    if x not in DEQUANTIZE_INPUTS:
        raise refuse("an input of type", x)
    if zero is not None and zero != x:
        raise refuse("a zero point of type", zero)
    if out not in DEQUANTIZED:
        raise refuse("output type", out)
    return out


def quotient_dtype(node: Node, x: DType, scale: DType) -> DType:
    """The type ``x / scale`` is rounded to: the ``precision`` attribute's, else the type
    numpy promotes x and scale to (an int32 operand promotes to double)."""
    precision = int(node.attrs.get("precision", 0) or 0)
    if precision:
        if DType(precision) not in (F32, F16, BF16, F64):
            raise CodegenError(f"{node.label}: QuantizeLinear with precision {DType(precision).short} runs on the host")
        return DType(precision)
    if x == scale:
        return F64 if x == I32 else x
    if I32 in (x, scale) and BF16 not in (x, scale):
        return F64
    if {x, scale} <= {F32, F16} or {x, scale} <= {F32, BF16}:
        return F32
    raise CodegenError(f"{node.label}: QuantizeLinear of {x.short} by a {scale.short} scale has no common type")


def quantize_expr(node: Node, x: tuple[str, DType], scale: tuple[str, DType],
                  zero: tuple[str, DType] | None) -> tuple[str, DType]:
    """QuantizeLinear of register values (C variables and their logical types): the C
    expression and its type."""
    out = check_types(node, x[1], scale[1], zero and zero[1])
    compute = quotient_dtype(node, x[1], scale[1])
    wide = F64 if compute == F64 else F32
    q = f"({C.convert(x[0], x[1], wide)} / {C.convert(scale[0], scale[1], wide)})"
    q = C.round_to(q, compute)  # an fp16 or bf16 quotient, as numpy rounds it
    if out in C.FLOAT8:  # the generator rounds it where it is read or stored
        total = f"({q} + {C.convert(zero[0], zero[1], wide)})" if zero else q
        return C.to_float8(total, wide, out, bool(node.attrs.get("saturate", 1))), out
    shift = C.convert(zero[0], zero[1], wide) if zero else C.literal(0.0, wide)
    lo, hi = (C.literal(float(v), wide) for v in RANGES[out])
    return f"({C.register_type(out)})(int)rtx_qsat({q}, {shift}, {lo}, {hi})", out


def dequantize_expr(node: Node, x: tuple[str, DType], scale: tuple[str, DType],
                    zero: tuple[str, DType] | None) -> tuple[str, DType]:
    """DequantizeLinear of register values: the C expression (in fp32; the generator rounds
    it to an fp16 or bf16 result) and its type."""
    out = check_types(node, x[1], scale[1], zero and zero[1])
    # x - zero point never wraps; float8's rounds once, as the reference's float64 one does
    wide = "long long" if x[1] == I32 else "float" if x[1] in C.FLOAT8 else "int"
    centered = f"({wide}){x[0]} - ({wide}){zero[0]}" if zero else x[0]
    return f"((float)({centered}) * {C.convert(scale[0], scale[1], F32)})", out


def broadcasts(param: Sequence[int], x: Sequence[int]) -> bool:
    """Whether a scale or zero point of shape ``param`` is read right by numpy broadcasting
    against ``x``: one element, or x's rank with each dim 1 or x's (a per-axis or blocked
    parameter as ``broadcast_views`` presents it). A raw per-axis [C] against a rank-2+ x is
    not: broadcasting would align C with x's last axis, not with ``axis``."""
    if _one_element(param):
        return True
    return len(param) == len(x) and all((not is_dynamic(p) and p == 1) or int(p) == int(d) for p, d in zip(param, x))


def broadcast_views(node: Node, inputs: Sequence[TensorType | None]) -> list[TensorType | None]:
    """A lone QuantizeLinear/DequantizeLinear's inputs (x, scale, zero point) as the
    elementwise generator should read them: per-tensor parameters as scalars, per-axis ones
    shaped to broadcast along ``axis``, and for blocked ones x split into its blocks."""
    x, scale, zero = (list(inputs) + [None, None])[:3]
    if x is None or scale is None:
        raise CodegenError(f"{node.label} lacks its input or scale")
    check_types(node, x.dtype, scale.dtype, zero and zero.dtype)
    shape = tuple(x.shape)
    x_view = shape
    views = []
    for param in (scale, zero):
        if param is None:
            views.append(None)
            continue
        view, x_view = _param_view(node, tuple(param.shape), shape, x_view)
        views.append(TensorType(param.dtype, view))
    return [TensorType(x.dtype, x_view), *views, *inputs[3:]]


def with_arg_shapes(kernel: KernelSource, inputs: Sequence[TensorType | None]) -> KernelSource:
    """``kernel`` (made from ``broadcast_views``) with its arguments shaped as the node's
    buffers are: the same bytes, read through the views."""
    x = tuple(inputs[0].shape)
    args = tuple(replace(a, shape=tuple(inputs[a.index].shape) if a.role is BufferRole.IN else x)
                 for a in kernel.args)
    return replace(kernel, args=args)


def _axis(node: Node, rank: int) -> int:
    axis = int(node.attrs.get("axis", 1))
    if rank <= 1:
        return 0
    if not -rank <= axis < rank:
        raise CodegenError(f"{node.label}: axis {axis} is out of range for a rank-{rank} input")
    return axis % rank


def _param_view(node: Node, param: tuple[int, ...], x: tuple[int, ...],
                x_view: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One parameter's view and x's view with it (changed only by a blocked parameter)."""
    if _one_element(param):  # per tensor: ``axis`` does not matter
        return (), x_view
    where = f"{node.label}: a scale or zero point of shape {dims_text(param)} for an input of shape {dims_text(x)}"
    if not x:
        raise CodegenError(f"{where}: a scalar input takes a one-element scale and zero point")
    axis = _axis(node, len(x))
    block = int(node.attrs.get("block_size", 0) or 0)
    if not block:  # per axis
        if len(param) != 1 or int(param[0]) != int(x[axis]):
            raise CodegenError(f"{where} on axis {axis} is not per axis (or is presented channels-last)")
        return tuple(param[0] if d == axis else 1 for d in range(len(x))), x_view
    length = x[axis]
    blocks = -(-int(length) // block)
    expected = tuple(blocks if d == axis else int(n) for d, n in enumerate(x))
    if len(param) != len(x) or tuple(int(p) for p in param) != expected:
        raise CodegenError(f"{where} is not blocked by {block} on axis {axis} (or is presented channels-last)")
    if not is_dynamic(param[axis]) and param[axis] == 1:  # one block spans the axis: it broadcasts
        return param, x_view
    if not divisible(length, block):
        raise CodegenError(f"{node.label}: block_size {block} does not divide axis {axis} of {dims_text(x)} "
                           "(a partial last block); it runs on the host")
    split = (*x[:axis], length // block, block, *x[axis + 1:])
    return (*param[:axis], param[axis], 1, *param[axis + 1:]), split


def _one_element(shape: Sequence[int]) -> bool:
    return not any(is_dynamic(d) for d in shape) and math.prod(int(d) for d in shape) == 1
