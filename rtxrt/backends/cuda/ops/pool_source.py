"""Generated pooling kernels: MaxPool and AveragePool (kernel_shape, strides, pads,
auto_pad, dilations, ceil_mode, count_include_pad) over any number of spatial axes (1-D,
2-D, 3-D: one nested loop per axis), GlobalMaxPool and GlobalAveragePool (any spatial rank),
over channels-first or channels-last tensors (``layout`` "NCHW" or "NHWC", at any rank), in
fp32, fp16 or bf16 storage.

Semantics are the reference backend's (rtxrt/backends/reference/ops/pool.py): the window
geometry comes from the same ``sliding_window``; MaxPool starts from the first tap (padding
is -inf) and takes a later tap only when it is larger, so NaNs behave alike; AveragePool
sums the taps in row-major order in fp32 and divides by the taps inside the input (or, with
count_include_pad, inside input plus declared pads, never ceil mode's extra padding). So
fp32 averages are bit-exact; fp16/bf16 round once at the store.

MaxPool's optional Indices output (int64, laid out as Y) is where the kept tap was read, as
the reference's flat index into the logical N, C, *spatial input, the spatial axes row-major
or (``storage_order`` 1) column-major, whatever the physical layout.

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
from ....ir.ops.conv import Window, sliding_window
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, is_dynamic, upper
from ..codegen.template import render
from .conv_implicit_source import window_out
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole

POOL_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16})
LAYOUTS = ("NCHW", "NHWC")
WARP = 32
_NEG_INF = "__uint_as_float(0xff800000u)"
# NaN-propagating max (numpy's max over a global window propagates NaN)
_GMAX = "((v > acc || v != v) ? v : acc)"


def pool_kernel(op_type: str, shape: Sequence[int], dtype: DType, attrs: Mapping[str, Any] | None = None,
                layout: str = "NCHW", indices: bool = False) -> KernelSource:
    """The kernel for ``op_type`` (MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool)
    on a ``shape`` tensor laid out as ``layout`` with the node's ONNX attributes; with
    ``indices``, MaxPool also writes its int64 Indices (``out1``, laid out as Y)."""
    attrs = dict(attrs or {})
    if dtype not in POOL_DTYPES:
        raise CodegenError(f"{op_type}: pooling kernels take float32, float16 or bfloat16, not {dtype.short}")
    if layout not in LAYOUTS:
        raise CodegenError(f"{op_type}: layout must be one of {LAYOUTS}, got {layout!r}")
    if indices and op_type != "MaxPool":
        raise CodegenError(f"{op_type}: only MaxPool has an Indices output")
    shape = tuple(d if is_dynamic(d) else int(d) for d in shape)  # a generic plan's DimInts stay
    if op_type in ("GlobalMaxPool", "GlobalAveragePool"):
        return _global_pool(op_type == "GlobalAveragePool", shape, dtype, layout)
    if op_type in ("MaxPool", "AveragePool"):
        return _window_pool(op_type, shape, dtype, attrs, layout, indices)
    raise CodegenError(f"no generated pooling kernel for {op_type}")


def _window_pool(op_type: str, shape: tuple[int, ...], dtype: DType, attrs: dict[str, Any], layout: str,
                 indices: bool) -> KernelSource:
    if len(shape) < 3:
        raise CodegenError(f"{op_type}: pooling needs a rank >= 3 input (N, C, *spatial), got shape {list(shape)}")
    n, c, sizes = (shape[0], shape[1], shape[2:]) if layout == "NCHW" else (shape[0], shape[-1], shape[1:-1])
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    try:
        win = sliding_window(attrs, sizes, attrs.get("kernel_shape") or (), ceil_mode)
    except ValueError as exc:
        raise CodegenError(f"{op_type}: {exc}") from None
    outs = window_out(sizes, win, ceil_mode)
    rank, pads = len(sizes), tuple(int(p) for p in win.pads)
    out = (n, c, *outs) if layout == "NCHW" else (n, *outs, c)
    total = math.prod(out)
    index, suffix, off, coords, strides = _window_coordinates(layout, shape, c, sizes, outs, total)
    offset = " + ".join(f"({off})i{a} * {strides[a]}" for a in range(rank))
    load = C.load(f"in0[base + {offset}]", dtype)
    starts = ", ".join(f"b{a} = (int)o{a} * {win.strides[a]} - {pads[a]}" for a in range(rank))
    body = [f"{index} r = i;", *coords, f"const int {starts};  // where the window begins"]
    storage_order = int(attrs.get("storage_order", 0))
    if op_type == "MaxPool":
        body += _max(win, sizes, load, dtype, _flat_index(layout, c, sizes, storage_order) if indices else None)
    else:
        body += _average(win, sizes, pads, bool(attrs.get("count_include_pad", 0)), load, dtype)
    comment = (f"{op_type} {layout} {_dims(shape)} -> {_dims(out)} kernel {list(win.kernel)} "
               f"strides {list(win.strides)} dilations {list(win.dilations)} pads {list(pads)}"
               + (f" indices storage_order {storage_order}" if indices else ""))
    loop = grid_stride_loop(index, suffix, total)
    return _finish("rtx_pool_", comment, dtype, shape, out, loop, body, total, indices)


def _window_coordinates(layout: str, shape: tuple[int, ...], c: int, sizes: tuple[int, ...], outs: tuple[int, ...],
                        total: int) -> tuple[str, str, str, list[str], list[int]]:
    """For one thread per output element: the index type and literal suffix, the input offset
    type, the lines turning ``r`` (the output index) into the window position ``o0``, ``o1``,
    ... (and channels-last, the channel ``ch``) and the input's ``base`` offset of that sample
    and channel, and the input's stride along each spatial axis, in elements."""
    index, suffix = index_type(max(upper(total), upper(math.prod(shape))))
    off = "long long" if upper(math.prod(shape)) >= 2**31 else "int"
    positions = [f"const {index} o{a} = r % {c_int(outs[a], suffix)}; r /= {c_int(outs[a], suffix)};"
                 for a in reversed(range(len(sizes)))]
    strides = [math.prod(sizes[a + 1:]) for a in range(len(sizes))]
    if layout == "NCHW":  # r is left as n * C + c
        return index, suffix, off, [*positions, f"const {off} base = ({off})r * {math.prod(sizes)};"], strides
    coords = [f"const {index} ch = r % {c_int(c, suffix)}; r /= {c_int(c, suffix)};", *positions,
              f"const {off} base = ({off})r * {math.prod(sizes) * c} + ({off})ch;"]
    return index, suffix, off, coords, [s * c for s in strides]


def _tap_loops(win: Window) -> list[list[str]]:
    """The opening lines of one loop per spatial axis over its taps ``k0``, ``k1``, ...,
    outermost first, each finding the input position ``i0``, ``i1``, ... its tap reads."""
    return [["#pragma unroll", f"for (int k{a} = 0; k{a} < {k}; ++k{a}) {{",
             f"  const int i{a} = b{a} + k{a} * {d};"] for a, (k, d) in enumerate(zip(win.kernel, win.dilations))]


def _nest(loops: list[list[str]], innermost: list[str]) -> list[str]:
    """``loops`` (opening lines, outermost first) nested around ``innermost``."""
    lines = []
    for depth, loop in enumerate(loops):
        lines += ["  " * depth + line for line in loop]
    lines += ["  " * len(loops) + line for line in innermost]
    return lines + ["  " * depth + "}" for depth in reversed(range(len(loops)))]


def _max(win: Window, sizes: tuple[int, ...], load: str, dtype: DType, index: str | None) -> list[str]:
    """The largest tap, padding being -inf; with ``index`` (the C expression of where it was
    read, from ``m0``, ``m1``, ...) written to ``out1``."""
    rank = len(sizes)
    inside = " && ".join(f"i{a} >= 0 && i{a} < {sizes[a]}" for a in range(rank))
    first = " && ".join(f"k{a} == 0" for a in range(rank))
    keep = "acc = v;" + ("".join(f" m{a} = i{a};" for a in range(rank)) if index else "")
    innermost = [f"const float v = ({inside}) ? {load} : {_NEG_INF};",
                 f"if (({first}) || v > acc) {{ {keep} }}  // the first tap, then only larger ones"]
    lines = [f"float acc = {_NEG_INF};"]
    if index:
        lines.append(f"int {', '.join(f'm{a} = 0' for a in range(rank))};  // where acc was read")
    lines += [*_nest(_tap_loops(win), innermost), f"out0[i] = {C.store('acc', dtype)};"]
    return lines + ([f"out1[i] = {index};"] if index else [])


def _flat_index(layout: str, c: int, sizes: tuple[int, ...], storage_order: int) -> str:
    """MaxPool's Index of the element read into ``acc`` (``m0``, ``m1``, ...): its offset in
    the logical N, C, *spatial input, the spatial axes row-major or (storage_order 1)
    column-major, whatever the physical layout (as the reference's ``_flat_indices``)."""
    order = list(reversed(range(len(sizes)))) if storage_order else list(range(len(sizes)))
    spatial = f"(long long)m{order[0]}"
    for a in order[1:]:
        spatial = f"({spatial}) * {sizes[a]} + m{a}" if "+" in spatial else f"{spatial} * {sizes[a]} + m{a}"
    plane = "(long long)r" if layout == "NCHW" else f"((long long)r * {c} + (long long)ch)"
    return f"{plane} * {math.prod(sizes)} + {spatial}"


def _average(win: Window, sizes: tuple[int, ...], pads: tuple[int, ...], include_pad: bool, load: str,
             dtype: DType) -> list[str]:
    """The mean of the taps inside the input, divided by the product over the axes of how
    many taps fall inside the input (or, with count_include_pad, inside input plus pads)."""
    rank = len(sizes)
    bounds = [(-pads[a], sizes[a] + pads[rank + a]) if include_pad else (0, sizes[a]) for a in range(rank)]

    def counted(a: int) -> str:
        return f"cnt{a} += (i{a} >= {bounds[a][0]} && i{a} < {bounds[a][1]});"

    lines = ["float acc = 0.0f;", f"int {', '.join(f'cnt{a} = 0' for a in range(rank))};"]
    for a in range(1, rank):  # the outermost axis is counted in the summing loop below
        lines += ["#pragma unroll",
                  f"for (int k{a} = 0; k{a} < {win.kernel[a]}; ++k{a}) {{ const int i{a} = b{a} + k{a} * "
                  f"{win.dilations[a]}; {counted(a)} }}"]
    loops = [loop + ([f"  {counted(a)}"] if a == 0 else []) + [f"  if (i{a} < 0 || i{a} >= {sizes[a]}) continue;"]
             for a, loop in enumerate(_tap_loops(win))]
    count = " * ".join(f"cnt{a}" for a in range(rank))
    return lines + _nest(loops, [f"acc += {load};"]) + [f"out0[i] = {C.store(f'acc / (float)({count})', dtype)};"]


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
            loop: str, body: list[str], threads: int, indices: bool = False) -> KernelSource:
    storage = C.storage_type(dtype)
    params = [f"const {storage}* __restrict__ in0", f"{storage}* __restrict__ out0"]
    args = [KernelArg("in0", BufferRole.IN, 0, dtype, shape), KernelArg("out0", BufferRole.OUT, 0, dtype, out)]
    if indices:
        params.append(f"{C.storage_type(DType.INT64)}* __restrict__ out1")
        args.append(KernelArg("out1", BufferRole.OUT, 1, DType.INT64, out))
    source = loop_kernel([f"// rtxrt pooling kernel: {comment}", C.PRELUDE.strip()], params, loop, body)
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
