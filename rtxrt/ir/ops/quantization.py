"""Linear quantization (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear) and the
integer / quantized matmul and convolution operators."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import Shape, TensorType
from .cast import target_dtype
from .conv import sliding_window
from .infer_helpers import normalize_axis
from .linalg import matmul_shape
from .facts import OPAQUE, Layout
from .registry import InferenceContext, register

_QUANTIZED = frozenset({
    DType.UINT8, DType.INT8, DType.UINT16, DType.INT16, DType.UINT4, DType.INT4, DType.UINT2, DType.INT2,
    DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT4E2M1,
})
_DEQUANTIZED = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16})


def _check_granularity(ctx: InferenceContext, x: Shape | None, scale: Shape | None) -> None:
    """The scale is a scalar (per tensor), 1-D along ``axis`` (per axis) or, with
    ``block_size``, x's shape with ``ceil(D / block_size)`` along ``axis`` (blocked)."""
    if x is None or scale is None or all(d == 1 for d in scale):
        return
    axis = normalize_axis(ctx, ctx.attr("axis", 1), len(x)) if len(x) > 1 else 0
    block_size = ctx.attr("block_size", 0)
    if block_size < 0:
        raise ctx.fail(f"block_size must be positive, got {block_size}")
    if not block_size:
        if len(scale) != 1:
            raise ctx.fail(f"per-axis scale must be 1-D, got shape {scale} (set block_size for blocked quantization)")
        expected: Shape = (x[axis],)
    else:
        if len(scale) != len(x):
            raise ctx.fail(f"blocked scale must have the input's rank {len(x)}, got shape {scale}")
        d = x[axis]
        expected = tuple(-(-d // block_size) if i == axis and isinstance(d, int) else dim for i, dim in enumerate(x))
    for want, got in zip(expected, scale):
        if isinstance(want, int) and isinstance(got, int) and want != got:
            raise ctx.fail(f"scale of shape {scale} does not fit input {x} on axis {axis} (expected {expected})")


def _infer_quantize(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    output_dtype = ctx.attr("output_dtype", 0)
    if ctx.has_input(2):
        dtype = ctx.type(2).dtype
        if output_dtype and target_dtype(ctx, output_dtype) != dtype:
            raise ctx.fail(f"output_dtype {DType(output_dtype).short} differs from the zero point's {dtype.short}")
    else:
        dtype = target_dtype(ctx, output_dtype) if output_dtype else DType.UINT8
    if dtype not in _QUANTIZED:
        raise ctx.fail(f"cannot quantize to {dtype.short}")
    _check_granularity(ctx, x.shape, ctx.type(1).shape)
    return [TensorType(dtype, x.shape)]


def _infer_dequantize(ctx: InferenceContext) -> list[TensorType | None]:
    x, scale = ctx.type(0), ctx.type(1)
    if ctx.has_input(2) and ctx.type(2).dtype != x.dtype:
        raise ctx.fail(f"zero point is {ctx.type(2).dtype.short} but the input is {x.dtype.short}")
    output_dtype = ctx.attr("output_dtype", 0)
    dtype = target_dtype(ctx, output_dtype) if output_dtype else scale.dtype
    if dtype not in _DEQUANTIZED:
        raise ctx.fail(f"cannot dequantize to {dtype.short} (set output_dtype to float, float16 or bfloat16)")
    _check_granularity(ctx, x.shape, scale.shape)
    return [TensorType(dtype, x.shape)]


def _infer_dynamic_quantize(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    return [TensorType(DType.UINT8, x.shape), TensorType(DType.FLOAT32, ()), TensorType(DType.UINT8, ())]


def _infer_integer_conv(ctx: InferenceContext, w_index: int, dtype: DType) -> list[TensorType | None]:
    """Output of a convolution of input 0 (N, C, *spatial) by weights ``w_index`` (M, C/group, *kernel)."""
    x, w = ctx.type(0).shape, ctx.type(w_index).shape
    if x is None or w is None:
        return [TensorType(dtype, None if x is None else (x[0], None, *[None] * (len(x) - 2)))]
    if len(x) < 3 or len(w) != len(x):
        raise ctx.fail(f"X must be (N, C, D1, ...) and W of the same rank, got {tuple(x)} and {tuple(w)}")
    group = ctx.attr("group", 1)
    if isinstance(x[1], int) and isinstance(w[1], int) and x[1] != w[1] * group:
        raise ctx.fail(f"X has {x[1]} channels but W expects {w[1]} x group {group}")
    kernel = ctx.attr("kernel_shape") or w[2:]
    if not all(isinstance(k, int) for k in kernel):
        return [TensorType(dtype, (x[0], w[0], *[None] * (len(x) - 2)))]
    try:
        window = sliding_window(ctx.node.attrs, x[2:], kernel)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    return [TensorType(dtype, (x[0], w[0], *window.out))]


def _infer_matmul_integer(ctx: InferenceContext) -> list[TensorType | None]:
    return [TensorType(DType.INT32, matmul_shape(ctx, ctx.type(0).shape, ctx.type(1).shape))]


def _infer_qlinear_matmul(ctx: InferenceContext) -> list[TensorType | None]:
    return [TensorType(ctx.type(7).dtype, matmul_shape(ctx, ctx.type(0).shape, ctx.type(3).shape))]


# Simulated element by element (the GPU's elementwise generator holds them, and per tensor they
# fuse with their neighbours), in fp32 whatever the precision mode: OPAQUE, as before.
# A per-axis scale does not broadcast as numpy's rules say; the generator lays it out.
QUANTIZE_LINEAR = OPAQUE.but(layout=Layout.ANY, elementwise=True)
register("QuantizeLinear", _infer_quantize, inputs=(2, 3), facts=QUANTIZE_LINEAR)
register("DequantizeLinear", _infer_dequantize, inputs=(2, 3), facts=QUANTIZE_LINEAR)
register("DynamicQuantizeLinear", _infer_dynamic_quantize, outputs=3, facts=OPAQUE)
register("MatMulInteger", _infer_matmul_integer, inputs=(2, 4), facts=OPAQUE)
register("QLinearMatMul", _infer_qlinear_matmul, inputs=8, facts=OPAQUE)
register("ConvInteger", lambda ctx: _infer_integer_conv(ctx, 1, DType.INT32), inputs=(2, 4), facts=OPAQUE)
register("QLinearConv", lambda ctx: _infer_integer_conv(ctx, 3, ctx.type(7).dtype), inputs=(8, 9), facts=OPAQUE)
