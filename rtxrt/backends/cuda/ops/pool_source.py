"""Generated 2-D pooling kernels: MaxPool and AveragePool (kernel_shape, strides, pads,
auto_pad, dilations, ceil_mode, count_include_pad), GlobalMaxPool and GlobalAveragePool
(any spatial rank), over NCHW or NHWC tensors (``layout``), in fp32, fp16 or bf16 storage.

Semantics are the reference backend's (rtxrt/backends/reference/ops/pool.py): the window
geometry comes from the same ``sliding_window``; MaxPool starts from the first tap (padding
is -inf) and takes a later tap only when it is larger, so NaNs behave alike; AveragePool
sums the taps in row-major order in fp32 and divides by the taps inside the input (or, with
count_include_pad, inside input plus declared pads, never ceil mode's extra padding). So
fp32 averages are bit-exact; fp16/bf16 round once at the store.

MaxPool's optional Indices output is not generated (CodegenError).

MaxRoiPool (``roi_pool_kernel``): one thread per output element, computing its roi's bin as
the reference does (corners scaled and rounded half away from zero in fp32, floor/ceil bin
bounds clipped to the image) and the bin's NaN-propagating maximum, 0 for an empty bin. A roi
naming a batch outside X (which the reference refuses) gives zeros.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ....ir.dtypes import DType
from ....ir.ops.conv import sliding_window
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, is_dynamic
from ..codegen.template import render
from .conv_implicit_source import window_out
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
    pixel_coordinates,
)
from ..plan.program import BufferRole

POOL_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16})
LAYOUTS = ("NCHW", "NHWC")
WARP = 32
_NEG_INF = "__uint_as_float(0xff800000u)"
# NaN-propagating max (numpy's max over a global window propagates NaN)
_GMAX = "((v > acc || v != v) ? v : acc)"


def pool_kernel(op_type: str, shape: Sequence[int], dtype: DType, attrs: Mapping[str, Any] | None = None,
                layout: str = "NCHW") -> KernelSource:
    """The kernel for ``op_type`` (MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool)
    on a ``shape`` tensor laid out as ``layout`` with the node's ONNX attributes."""
    attrs = dict(attrs or {})
    if dtype not in POOL_DTYPES:
        raise CodegenError(f"{op_type}: pooling kernels take float32, float16 or bfloat16, not {dtype.short}")
    if layout not in LAYOUTS:
        raise CodegenError(f"{op_type}: layout must be one of {LAYOUTS}, got {layout!r}")
    shape = tuple(d if is_dynamic(d) else int(d) for d in shape)  # a generic plan's DimInts stay
    if op_type in ("GlobalMaxPool", "GlobalAveragePool"):
        return _global_pool(op_type == "GlobalAveragePool", shape, dtype, layout)
    if op_type in ("MaxPool", "AveragePool"):
        return _window_pool(op_type, shape, dtype, attrs, layout)
    raise CodegenError(f"no generated pooling kernel for {op_type}")


def _window_pool(op_type: str, shape: tuple[int, ...], dtype: DType, attrs: dict[str, Any],
                 layout: str) -> KernelSource:
    if len(shape) != 4:
        raise CodegenError(f"{op_type}: generated pooling is 2-D (rank-4 input), got shape {list(shape)}")
    if op_type == "MaxPool" and int(attrs.get("storage_order", 0)):
        raise CodegenError("MaxPool: storage_order applies to Indices, which is not generated")
    n, c, h, w = shape if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    try:
        win = sliding_window(attrs, (h, w), attrs.get("kernel_shape") or (), bool(attrs.get("ceil_mode", 0)))
    except ValueError as exc:
        raise CodegenError(f"{op_type}: {exc}") from None
    oh, ow = window_out((h, w), win, bool(attrs.get("ceil_mode", 0)))
    (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
    top, left, bottom, right = pads = tuple(int(p) for p in win.pads)
    out = (n, c, oh, ow) if layout == "NCHW" else (n, oh, ow, c)
    total = math.prod(out)
    index, suffix, off, coords, row, col = pixel_coordinates(layout, shape, (c, h, w), (oh, ow), total)
    load = C.load(f"in0[base + ({off})ih * {row} + ({off})iw * {col}]", dtype)
    body = [f"{index} r = i;", *coords,
            f"const int h0 = (int)y * {sh} - {top}, w0 = (int)x * {sw} - {left};"]
    if op_type == "MaxPool":
        body += [
            f"float acc = {_NEG_INF};",
            "#pragma unroll",
            f"for (int a = 0; a < {kh}; ++a) {{",
            f"  const int ih = h0 + a * {dh};",
            "  #pragma unroll",
            f"  for (int b = 0; b < {kw}; ++b) {{",
            f"    const int iw = w0 + b * {dw};",
            f"    const float v = (ih >= 0 && ih < {h} && iw >= 0 && iw < {w}) ? {load} : {_NEG_INF};",
            "    if ((a == 0 && b == 0) || v > acc) acc = v;  // the first tap, then only larger ones",
            "  }",
            "}",
            f"out0[i] = {C.store('acc', dtype)};",
        ]
    else:
        include = bool(attrs.get("count_include_pad", 0))
        lo_h, hi_h = (-top, h + bottom) if include else (0, h)
        lo_w, hi_w = (-left, w + right) if include else (0, w)
        body += [
            "float acc = 0.0f;",
            "int rows = 0, cols = 0;",
            "#pragma unroll",
            f"for (int b = 0; b < {kw}; ++b) {{ const int iw = w0 + b * {dw}; cols += (iw >= {lo_w} && iw < {hi_w}); }}",
            "#pragma unroll",
            f"for (int a = 0; a < {kh}; ++a) {{",
            f"  const int ih = h0 + a * {dh};",
            f"  rows += (ih >= {lo_h} && ih < {hi_h});",
            f"  if (ih < 0 || ih >= {h}) continue;",
            "  #pragma unroll",
            f"  for (int b = 0; b < {kw}; ++b) {{",
            f"    const int iw = w0 + b * {dw};",
            f"    if (iw >= 0 && iw < {w}) acc += {load};",
            "  }",
            "}",
            f"out0[i] = {C.store('acc / (float)(rows * cols)', dtype)};",
        ]
    comment = (f"{op_type} {layout} {_dims(shape)} -> {_dims(out)} kernel {[kh, kw]} strides {[sh, sw]} "
               f"dilations {[dh, dw]} pads {list(pads)}")
    loop = grid_stride_loop(index, suffix, total)
    return _finish("rtx_pool_", comment, dtype, shape, out, loop, body, total)


def _global_pool(average: bool, shape: tuple[int, ...], dtype: DType, layout: str) -> KernelSource:
    """NCHW: one warp per (n, c), lanes stride over the spatial elements (coalesced) and
    combine by shuffles. NHWC: one thread per (n, c), neighbouring threads read neighbouring
    channels (coalesced), each summing its spatial elements in order."""
    if len(shape) < 3:
        raise CodegenError(f"global pooling needs a rank >= 3 input, got shape {list(shape)}")
    op_type = "GlobalAveragePool" if average else "GlobalMaxPool"
    n, c = shape[0], (shape[1] if layout == "NCHW" else shape[-1])
    spatial = math.prod(shape[2:] if layout == "NCHW" else shape[1:-1])
    out = (n, c, *[1] * (len(shape) - 2)) if layout == "NCHW" else (n, *[1] * (len(shape) - 2), c)
    outputs = n * c
    index, suffix = index_type(max(outputs * WARP, math.prod(shape)))
    init = "0.0f" if average else _NEG_INF
    combine = "acc += v;" if average else f"acc = {_GMAX};"
    divisor = f"(float){spatial}" if is_dynamic(spatial) else C.literal(float(spatial), DType.FLOAT32)
    result = f"acc / {divisor}" if average else "acc"
    if layout == "NCHW":
        threads = outputs * WARP
        loop = (f"for ({index} o = (blockIdx.x * ({index})blockDim.x + threadIdx.x) / {WARP}u; o < {c_int(outputs, suffix)};"
                f" o += ({index})gridDim.x * blockDim.x / {WARP}u) {{")  # warp-uniform: shuffles are safe
        body = [
            f"const unsigned int lane = threadIdx.x % {WARP}u;",
            f"float acc = {init};",
            f"for ({index} j = lane; j < {c_int(spatial, suffix)}; j += {WARP}u) {{",
            f"  const float v = {C.load(f'in0[o * {c_int(spatial, suffix)} + j]', dtype)}; {combine}",
            "}",
            f"for (int s = {WARP // 2}; s > 0; s >>= 1) {{",
            f"  const float v = __shfl_xor_sync(0xffffffffu, acc, s); {combine}",
            "}",
            f"if (lane == 0) out0[o] = {C.store(result, dtype)};",
        ]
    else:
        threads = outputs
        loop = grid_stride_loop(index, suffix, outputs, "o")
        body = [
            f"const {index} base = (o / {c_int(c, suffix)}) * {c_int(spatial * c, suffix)} + o % {c_int(c, suffix)};",
            f"float acc = {init};",
            f"for ({index} j = 0; j < {c_int(spatial, suffix)}; ++j) {{",
            f"  const float v = {C.load(f'in0[base + j * {c_int(c, suffix)}]', dtype)}; {combine}",
            "}",
            f"out0[o] = {C.store(result, dtype)};",
        ]
    comment = f"{op_type} {layout} {_dims(shape)} -> {_dims(out)}"
    return _finish("rtx_gpool_", comment, dtype, shape, out, loop, body, threads)


def _dims(shape: Sequence[int]) -> str:
    """``shape`` as a comment shows it: as a list prints, a dim that varies as its expression."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _finish(prefix: str, comment: str, dtype: DType, shape: tuple[int, ...], out: tuple[int, ...],
            loop: str, body: list[str], threads: int) -> KernelSource:
    storage = C.storage_type(dtype)
    source = loop_kernel([f"// rtxrt pooling kernel: {comment}", C.PRELUDE.strip()],
                         [f"const {storage}* __restrict__ in0", f"{storage}* __restrict__ out0"], loop, body)
    args = (KernelArg("in0", BufferRole.IN, 0, dtype, shape), KernelArg("out0", BufferRole.OUT, 0, dtype, out))
    return KernelSource.named(prefix, source, LaunchPolicy(threads), args)


_ROI_POOL_BODY = """\
${index} r = i;
const int pw = (int)(r % ${pooled_w}${suffix}); r /= ${pooled_w}${suffix};
const int ph = (int)(r % ${pooled_h}${suffix}); r /= ${pooled_h}${suffix};
const long long c = (long long)(r % ${channels}${suffix}), roi = (long long)(r / ${channels}${suffix});
const int batch = (int)${roi_batch};
const int x1 = (int)roundf(${roi_x1} * ${scale}), y1 = (int)roundf(${roi_y1} * ${scale});
const int x2 = (int)roundf(${roi_x2} * ${scale}), y2 = (int)roundf(${roi_y2} * ${scale});
const float bin_h = (float)max(y2 - y1 + 1, 1) / ${pooled_h_f}, bin_w = (float)max(x2 - x1 + 1, 1) / ${pooled_w_f};
const int top = min(max((int)floorf((float)ph * bin_h) + y1, 0), ${height});
const int bottom = min(max((int)ceilf((float)(ph + 1) * bin_h) + y1, 0), ${height});
const int left = min(max((int)floorf((float)pw * bin_w) + x1, 0), ${width});
const int right = min(max((int)ceilf((float)(pw + 1) * bin_w) + x1, 0), ${width});
float acc = 0.0f;
if (batch >= 0 && batch < ${batches} && bottom > top && right > left) {
  acc = ${neg_inf};
  const long long plane = ((long long)batch * ${channels} + c) * ${plane};
  for (int y = top; y < bottom; ++y) {
    for (int x = left; x < right; ++x) {
      const float v = ${load_x};
      acc = ${max};
    }
  }
}
out0[i] = ${store};"""


def roi_pool_kernel(x_shape: Sequence[int], x_dtype: DType, rois: int, rois_dtype: DType,
                    attrs: Mapping[str, Any]) -> KernelSource:
    """MaxRoiPool of an NCHW ``x_shape`` tensor over ``rois`` rows of [batch, x1, y1, x2, y2]."""
    if x_dtype not in POOL_DTYPES or rois_dtype not in POOL_DTYPES:
        raise CodegenError(f"MaxRoiPool: takes float32, float16 or bfloat16, not {x_dtype.short}/{rois_dtype.short}")
    batches, channels, height, width = (int(d) for d in x_shape)
    pooled_h, pooled_w = (int(v) for v in attrs["pooled_shape"])
    out = (rois, channels, pooled_h, pooled_w)
    total = math.prod(out)
    index, suffix = index_type(max(total, math.prod(x_shape)))
    f32 = DType.FLOAT32

    def roi_field(k: int) -> str:
        return C.load(f"in1[roi * 5 + {k}]", rois_dtype)

    body = render(
        _ROI_POOL_BODY, index=index, suffix=suffix, pooled_h=pooled_h, pooled_w=pooled_w, channels=channels,
        roi_batch=roi_field(0), roi_x1=roi_field(1), roi_y1=roi_field(2), roi_x2=roi_field(3), roi_y2=roi_field(4),
        scale=C.literal(float(attrs.get("spatial_scale", 1.0)), f32),
        pooled_h_f=C.literal(float(pooled_h), f32), pooled_w_f=C.literal(float(pooled_w), f32),
        height=height, width=width, batches=batches, neg_inf=_NEG_INF, plane=height * width,
        load_x=C.load(f"in0[plane + (long long)y * {width} + x]", x_dtype), max=_GMAX, store=C.store("acc", x_dtype),
    ).splitlines()
    source = loop_kernel(
        [f"// rtxrt MaxRoiPool: X {list(x_shape)}, {rois} rois -> {list(out)}", C.PRELUDE.strip()],
        [f"const {C.storage_type(x_dtype)}* __restrict__ in0", f"const {C.storage_type(rois_dtype)}* __restrict__ in1",
         f"{C.storage_type(x_dtype)}* __restrict__ out0"],
        grid_stride_loop(index, suffix, total), body)
    args = (KernelArg("in0", BufferRole.IN, 0, x_dtype, tuple(int(d) for d in x_shape)),
            KernelArg("in1", BufferRole.IN, 1, rois_dtype, (rois, 5)), KernelArg("out0", BufferRole.OUT, 0, x_dtype, out))
    return KernelSource.named("rtx_roipool_", source, LaunchPolicy(total), args)
