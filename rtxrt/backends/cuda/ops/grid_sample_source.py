"""Generated GridSample kernels: X [N, C, *spatial] (1 to 3 spatial axes: 4-D images and the
5-D volumes of opset 20) sampled at the normalized positions of a runtime grid
[N, *out, k] (component 0 is x, the last spatial axis). X and Y are stored alike: in the
logical layout, or (4-D) channels-last, where neighbouring threads take neighbouring
channels of one output pixel (the same taps: coalesced loads, one grid entry); the grid is
always logical.

One thread per output element, grid-stride. Each thread reads its k grid components and,
along every spatial axis on its own, finds its taps (1 for nearest, 2 for linear, 4 for
cubic) and their weights; the taps' product is blended separably in fp32 (X is fp32, fp16 or
bf16 in memory; the grid any float type), and the sum rounded once to X's storage type.

Semantics are the reference backend's (rtxrt/backends/reference/ops/misc.py), step for step:
unnormalizing, nearest's round-half-to-even (``rint``), border clamping and reflection of the
position (not for cubic, whose every tap is padded instead, as in PyTorch), the padding of
each tap, Keys' cubic weights with A = -0.75. Positions are computed in float64 with the
reference's operations in its order (NVRTC runs without FMA contraction), so every tap lands
where the reference's does, nearest ties included: nearest copies X's values exactly. Only
the weights and the blend are fp32.

Every load is clamped inside X, so NaN, infinite or huge grid values never read outside it;
zeros padding multiplies a dropped tap's weight by 0 (as the reference does, so NaN weights
stay NaN).

Not covered (CodegenError): float64 X (the blend is fp32), integer X, more than 3 spatial
axes, and an X whose spatial axis may be empty (no tap to clamp to).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dims_text, is_dynamic, lower, upper
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole

X_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
GRID_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)
MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest", "cubic": "cubic", "bicubic": "cubic"}
PADDINGS = ("zeros", "border", "reflection")
LAYOUTS = ("NCHW", "NHWC")
MAX_SPATIAL = 3  # taps grow as 4**k; ONNX models use 2-D and 3-D
CUBIC_A = -0.75  # Keys' cubic convolution parameter, as the reference, PyTorch and ONNX Runtime
TAPS = {"nearest": (0,), "linear": (0, 1), "cubic": (-1, 0, 1, 2)}  # tap offsets from floor(position)
GUARD = 4  # a tap base beyond [-GUARD, size + GUARD] has every tap outside X: clamped to it
AXIS_NAMES = "xyz"  # grid component j names the spatial axis it indexes
_ONNX = ("", "ai.onnx")

# Fold a position outside [lo, hi] back in, mirroring at the borders: the reference's _reflect,
# operation for operation in float64.
REFLECT = r"""
__device__ __forceinline__ double rtx_gs_reflect(double x, double lo, double hi) {
  const double span = hi - lo;
  if (span <= 0.0) return lo;
  if (x >= lo && x <= hi) return x;
  const bool below = x < lo;
  const double dist = below ? lo - x : x - hi;
  const double flips = floor(dist / span);
  const double rest = dist - flips * span;
  const bool even = fmod(flips, 2.0) == 0.0;
  return below == even ? lo + rest : hi - rest;
}
"""

# A position clamped to the pixels of an axis of ``size`` (NaN to 0): border padding's clamp,
# and what keeps a reflected tap inside X.
CLAMP = r"""
__device__ __forceinline__ double rtx_gs_clamp(double p, double size) { return fmin(fmax(p, 0.0), size - 1.0); }
"""


def _cubic_helpers() -> str:
    """Keys' weights (A = -0.75) in factored form, from the fraction t and u = 1 - t (both from
    float64): the taps at -1 and 2 weigh ``outer(t, u)`` and ``outer(u, t)``, the taps at 0 and
    1 ``inner(u, t)`` and ``inner(t, u)``. The same polynomials as the reference's, without
    its cancellation (in float32 that would cost ~1e-6 of the result)."""
    a, a2 = C.literal(CUBIC_A, DType.FLOAT32), C.literal(CUBIC_A + 2, DType.FLOAT32)
    return (f"__device__ __forceinline__ float rtx_gs_outer(float p, float q) {{ return {a} * p * q * q; }}\n"
            f"__device__ __forceinline__ float rtx_gs_inner(float p, float q) {{"
            f" return p * (1.0f + q - {a2} * q * q); }}")


@dataclass(frozen=True)
class GridSampleOptions:
    """The node's attributes, with opset 16's mode names mapped to opset 20's."""

    mode: str  # nearest, linear or cubic
    padding: str  # zeros, border or reflection
    align_corners: bool

    @classmethod
    def of(cls, node: Node) -> GridSampleOptions:
        mode = node.attr("mode", "linear")
        padding = node.attr("padding_mode", "zeros")
        if mode not in MODES:
            raise CodegenError(f"{node.label}: GridSample mode {mode!r} (generated: {', '.join(MODES)})")
        if padding not in PADDINGS:
            raise CodegenError(f"{node.label}: GridSample padding_mode {padding!r} (generated: {', '.join(PADDINGS)})")
        return cls(MODES[mode], padding, bool(int(node.attr("align_corners", 0))))


def grid_sample_output_shape(x: Sequence[int], grid: Sequence[int]) -> tuple[int, ...]:
    """Y is [N, C, *grid's spatial dims]."""
    return (x[0], x[1], *grid[1:-1])


def grid_sample_kernel(node: Node, x: TensorType, grid: TensorType, layout: str = "NCHW") -> KernelSource:
    """The kernel of GridSample ``node`` on X and the grid (logical types; their dims may be
    DimInts of a generic plan), X and Y stored in ``layout`` (NHWC: 4-D only), the grid
    logical. Y is stored as X. Kernel arguments: X, grid, Y."""
    if node.domain not in _ONNX or node.op_type != "GridSample":
        raise CodegenError(f"{node.label} is not a GridSample")
    options = GridSampleOptions.of(node)
    if x.dtype not in X_DTYPES:
        raise CodegenError(f"{node.label}: GridSample kernels take float32, float16 or bfloat16 X (blended in "
                           f"float32), not {x.dtype.short}")
    if grid.dtype not in GRID_DTYPES:
        raise CodegenError(f"{node.label}: the grid must be a float tensor, not {grid.dtype.short}")
    if not x.is_static or not grid.is_static:
        raise CodegenError(f"{node.label}: GridSample kernels need static shapes, got X {x} and grid {grid}")
    k = len(x.shape) - 2
    if layout not in LAYOUTS or (layout == "NHWC" and k != 2):
        raise CodegenError(f"{node.label}: layout {layout!r} for X {dims_text(x.shape)} (NCHW, or NHWC for 4-D)")
    if not 1 <= k <= MAX_SPATIAL:
        raise CodegenError(f"{node.label}: generated GridSample samples 1 to {MAX_SPATIAL} spatial axes, "
                           f"X {dims_text(x.shape)} has {k}")
    last = grid.shape[-1]
    if len(grid.shape) != k + 2 or is_dynamic(last) or int(last) != k:
        raise CodegenError(f"{node.label}: grid {dims_text(grid.shape)} does not fit X {dims_text(x.shape)}: "
                           f"expected [N, *out, {k}]")
    spatial = tuple(x.shape[2:])
    if any(lower(s) < 1 for s in spatial):
        raise CodegenError(f"{node.label}: X {dims_text(x.shape)} may have an empty spatial axis: nothing to sample")
    out = grid_sample_output_shape(tuple(x.shape), tuple(grid.shape))
    source = _source(options, tuple(x.shape), tuple(grid.shape), out, x.dtype, grid.dtype, layout == "NHWC")
    args = (KernelArg("in0", BufferRole.IN, 0, x.dtype, _physical(tuple(x.shape), layout)),
            KernelArg("in1", BufferRole.IN, 1, grid.dtype, tuple(grid.shape)),
            KernelArg("out0", BufferRole.OUT, 0, x.dtype, _physical(out, layout)))
    return KernelSource.named("rtx_grid_sample_", source, LaunchPolicy(math.prod(out)), args)


def _source(options: GridSampleOptions, x: tuple[int, ...], grid: tuple[int, ...], out: tuple[int, ...],
            dtype: DType, grid_dtype: DType, channels_last: bool) -> str:
    k = len(x) - 2
    total, pixels, spatial, channels = math.prod(out), math.prod(out[2:]), x[2:], x[1]
    index, suffix = index_type(max(upper(total), upper(math.prod(x)), upper(math.prod(grid))))
    x_off, grid_off = _offset_type(x), _offset_type(grid)
    if channels_last:  # i = (n * pixels + q) * C + c
        body = [f"const {index} nq = i / {c_int(channels, suffix)};  // n * pixels + q: the grid entry",
                f"const {grid_off} gq = ({grid_off})nq * {k};",
                f"const {x_off} xb = ({x_off})(nq / {c_int(pixels, suffix)}) * {math.prod(spatial) * channels}"
                f" + ({x_off})(i % {c_int(channels, suffix)});"]
    else:  # i = (n * C + c) * pixels + q
        body = [f"const {index} q = i % {c_int(pixels, suffix)};  // the output position: grid entry q of batch n",
                f"const {index} nc = i / {c_int(pixels, suffix)};  // (n, c) of X and Y",
                f"const {grid_off} gq = (({grid_off})(nc / {c_int(channels, suffix)}) * {pixels}"
                f" + ({grid_off})q) * {k};",
                f"const {x_off} xb = ({x_off})nc * {math.prod(spatial)};"]
    axes = []
    for a, size in enumerate(spatial):
        component = k - 1 - a  # the grid lists x (the last axis) first
        name = AXIS_NAMES[component]
        stride = math.prod(spatial[a + 1:]) * (channels if channels_last else 1)
        body += _axis_lines(options, name, size, stride, C.load(f"in1[gq + {component}]", grid_dtype), x_off)
        axes.append((name, len(TAPS[options.mode])))
    body.append("float acc = 0.0f;  // 0 + w * v: a dropped tap gives +0, as the reference's sum")
    body += [f"acc += {term};" for term in _terms(axes, "xb", dtype)]
    body.append(f"out0[i] = {C.store('acc', dtype)};")
    helpers = [C.PRELUDE.strip()]
    if options.padding != "zeros":
        helpers.append(CLAMP.strip())
    if options.padding == "reflection":
        helpers.append(REFLECT.strip())
    if options.mode == "cubic":
        helpers.append(_cubic_helpers())
    comment = (f"// rtxrt GridSample kernel: {options.mode} {options.padding}"
               f" align_corners={int(options.align_corners)}"
               f" X {dims_text(x)} {'NHWC' if channels_last else 'NCHW'} {dtype.short}"
               f" grid {dims_text(grid)} {grid_dtype.short}")
    storage, grid_storage = C.storage_type(dtype), C.storage_type(grid_dtype)
    return loop_kernel([comment, *helpers],
                       [f"const {storage}* __restrict__ in0", f"const {grid_storage}* __restrict__ in1",
                        f"{storage}* __restrict__ out0"],
                       grid_stride_loop(index, suffix, total), body)


def _axis_lines(options: GridSampleOptions, v: str, size: int, stride: int, component: str, off: str) -> list[str]:
    """Along the spatial axis named ``v`` (of ``size``, ``stride`` elements apart in X), from
    its grid component: each tap j's offset ``o{v}{j}`` into X (clamped inside) and weight
    ``w{v}{j}``. Positions in float64, as the reference computes them."""
    s, align = f"s{v}", options.align_corners
    lines = [f"const double {s} = (double)({size});", f"const double g{v} = (double){component};"]
    if align:  # -1 and 1 are the centres of the corner elements
        lines.append(f"double c{v} = (g{v} + 1.0) / 2.0 * ({s} - 1.0);")
    else:  # -1 and 1 are the outer edges of the corner elements
        lines.append(f"double c{v} = ((g{v} + 1.0) * {s} - 1.0) / 2.0;")
    lo, hi = ("0.0", f"{s} - 1.0") if align else ("-0.5", f"{s} - 0.5")
    if options.mode == "nearest":
        lines.append(f"c{v} = rint(c{v});  // ties to even, as numpy's rint")
    if options.mode != "cubic":  # cubic pads each tap instead, as PyTorch does
        if options.padding == "border":
            lines.append(f"if (c{v} < {lo} || c{v} > {hi}) c{v} = rtx_gs_clamp(c{v}, {s});")
        elif options.padding == "reflection":
            lines.append(f"c{v} = rtx_gs_reflect(c{v}, {lo}, {hi});")
    if options.mode == "nearest":
        weights = ["1.0f"]
        lines.append(f"const double b{v} = trunc(c{v});")
    else:
        lines += [f"const double b{v} = floor(c{v});",
                  f"const float t{v} = (float)(c{v} - b{v}), u{v} = (float)(1.0 - (c{v} - b{v}));"]
        if options.mode == "linear":
            weights = [f"u{v}", f"t{v}"]
        else:
            weights = [f"rtx_gs_outer(t{v}, u{v})", f"rtx_gs_inner(u{v}, t{v})", f"rtx_gs_inner(t{v}, u{v})",
                       f"rtx_gs_outer(u{v}, t{v})"]
    if options.padding != "reflection":  # the taps in integers (fp64 is slow on most GPUs):
        # a position far outside (or NaN) keeps all its taps outside X, so the same ones are read
        lines.append(f"const {off} i{v} = ({off})fmin(fmax(b{v}, -{GUARD}.0), {s} + {GUARD}.0);")
    scaled = "" if not is_dynamic(stride) and int(stride) == 1 else f" * {stride}"
    for j, (offset, weight) in enumerate(zip(TAPS[options.mode], weights)):
        if options.padding == "reflection":  # reflect the tap's true position, in float64
            p = f"b{v}" if offset == 0 else f"b{v} {'+' if offset > 0 else '-'} {abs(offset)}.0"
            # clamping equals the reference's truncation to int64 for every position reflection
            # gives, and keeps garbage (NaN, overflow) inside X
            lines += [f"const float w{v}{j} = {weight};",
                      f"const {off} o{v}{j} = ({off})rtx_gs_clamp(rtx_gs_reflect({p}, {lo}, {hi}), {s}){scaled};"]
            continue
        p = f"i{v}" if offset == 0 else f"i{v} {'+' if offset > 0 else '-'} {abs(offset)}"
        lines.append(f"const {off} p{v}{j} = {p};")
        if options.padding == "zeros":  # the tap's weight is dropped outside X
            lines.append(f"const float w{v}{j} = ({weight}) * (float)(p{v}{j} >= 0 && p{v}{j} < {size});")
        else:
            lines.append(f"const float w{v}{j} = {weight};")
        lines.append(f"const {off} o{v}{j} = min(max(p{v}{j}, ({off})0), ({off})({size - 1})){scaled};")
    return lines


def _terms(axes: list[tuple[str, int]], at: str, dtype: DType) -> list[str]:
    """The weighted sum over the taps of ``axes`` (outermost first) at offset ``at`` into X,
    as one term per tap of the first axis (the inner axes blended inside each)."""
    v, taps = axes[0]
    terms = []
    for j in range(taps):
        where = f"{at} + o{v}{j}"
        if len(axes) == 1:
            terms.append(f"w{v}{j} * {C.load(f'in0[{where}]', dtype)}")
        else:
            terms.append(f"w{v}{j} * ({' + '.join(_terms(axes[1:], where, dtype))})")
    return terms


def _physical(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if layout == "NHWC" else shape


def _offset_type(shape: Sequence[int]) -> str:
    """The C type of element offsets into a tensor of ``shape`` (at its largest)."""
    return "long long" if upper(math.prod(shape)) >= 2**31 else "int"
