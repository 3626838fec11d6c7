"""Generated RoiAlign kernels (opsets 10 and 16): X [N, C, H, W] (fp32, fp16 or bf16, stored
NCHW or channels-last) pooled over the runtime boxes rois [R, 4] (x1, y1, x2, y2; fp32, fp16 or
bf16) of the images batch_indices [R] (int64), into Y [R, C, output_height, output_width],
logical and of X's type. rois and batch_indices are data: read by the kernel, never needed
when the plan is made, and R may be a dim that varies.

One thread per output element, grid-stride. NCHW X: neighbouring threads take neighbouring
output cells of one channel (Y's order); channels-last X: neighbouring channels of one cell
(coalesced loads of the same taps; Y's stores stride by a plane). Each thread computes its
roi's geometry in fp32, then walks the bin's grid_h x grid_w sample points, each the bilinear
blend of its four taps, in fp32, rounded once to X's type at the store.

Semantics are the reference backend's (rtxrt/backends/reference/ops/misc.py, the ONNX spec's
pre-calculation, as ONNX Runtime computes it): corners scaled by spatial_scale and shifted by
half a pixel under "half_pixel" (opset 16's default); under "output_half_pixel" a roi under
one pixel tall or wide becomes one pixel. Along each axis a sample outside [-1, size] weighs 0,
one in [-1, 0) samples the first pixel, one past the last pixel's centre the last pixel.
Sampling ratio 0 is adaptive: ceil(roi size / output size) samples per bin axis, at least 0,
per roi. avg divides the samples' sum by their count; max (ONNX Runtime's) is the largest
weighted tap, w * x, over all taps of all sample points, 0 weights included, NaN propagating.
A roi with no samples gives 0, as does a roi naming an image outside X (the reference
refuses it, or wraps a negative index as numpy does).

The reference computes in float64. Positions differ from it by fp32 rounding, which bilinear
sampling turns into an error of that order, except where a position lies exactly on -1 or a
size (the weight steps there). The adaptive count steps at integers too, so the kernel takes
it from the fp32 quotient only where that is clear of an integer by more than its rounding
error, and otherwise from the reference's float64 operations (``SAMPLES``): the count is the
reference's. A non-finite roi (whose count the reference's int() refuses) or a count past an
int samples nothing: Y is 0.

Not covered (CodegenError): other X or rois types, X not 4-D, an X whose H or W may be 0, rois
not [R, 4], an unknown mode or coordinate_transformation_mode, an output size below 1.
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
from ..codegen.kernel_source import KernelArg, KernelSource, LaunchPolicy, grid_stride_loop, index_type, loop_kernel
from ..codegen.template import render
from ..plan.program import BufferRole

X_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
ROI_DTYPES = X_DTYPES
LAYOUTS = ("NCHW", "NHWC")
MODES = ("avg", "max")
COORDINATE_MODES = ("half_pixel", "output_half_pixel")
HALF_PIXEL_SINCE = 16  # the opset that added coordinate_transformation_mode, defaulting to half_pixel
F32, F64 = DType.FLOAT32, DType.FLOAT64
_NEG_INF = "__uint_as_float(0xff800000u)"
_MAX = "((v > acc || v != v) ? v : acc)"  # NaN-propagating, as numpy's max
# 2^-20: 4x the fp32 error of an adaptive count's quotient, per unit of the scaled corners it
# came from (two products, two shifts, a difference, a division: 2^-22) and of itself (2^-23)
_TIE = 2.0**-20

# The adaptive sample count along one axis: ceil(size / pooled), at least 0, from the roi's
# corners lo, hi as stored and the fp32 quotient q = size / pooled. Within its rounding error of
# an integer q cannot tell which side the reference's float64 quotient is on: recomputed there
# with the reference's operations.
SAMPLES = r"""
__device__ __forceinline__ int ${name}(float lo, float hi, float q) {
  if (!(fabsf(q) < 2147483648.0f)) return 0;  // infinite, NaN or past an int: no samples
  const float err = ${tie} * ((fabsf(lo * ${scale}) + fabsf(hi * ${scale}) + 1.0f) / ${pooled} + fabsf(q));
  if (fabsf(q - rintf(q)) > err) return max((int)ceilf(q), 0);
  double size = ((double)hi * ${scale_d}${shift_d}) - ((double)lo * ${scale_d}${shift_d});${at_least_one}
  return max((int)ceil(size / ${pooled_d}), 0);
}
"""


@dataclass(frozen=True)
class RoiAlignOptions:
    """The node's attributes; ``ratio`` 0 (or below) is adaptive."""

    max_mode: bool
    half_pixel: bool
    pooled: tuple[int, int]  # output_height, output_width
    ratio: int
    scale: float

    @classmethod
    def of(cls, node: Node, opset: int) -> RoiAlignOptions:
        mode = node.attr("mode", "avg")
        default = "half_pixel" if opset >= HALF_PIXEL_SINCE else "output_half_pixel"
        coordinates = node.attr("coordinate_transformation_mode", default)
        if mode not in MODES:
            raise CodegenError(f"{node.label}: RoiAlign mode {mode!r} (generated: {', '.join(MODES)})")
        if coordinates not in COORDINATE_MODES:
            raise CodegenError(f"{node.label}: coordinate_transformation_mode {coordinates!r} "
                               f"(generated: {', '.join(COORDINATE_MODES)})")
        pooled = (int(node.attr("output_height", 1)), int(node.attr("output_width", 1)))
        if min(pooled) < 1:
            raise CodegenError(f"{node.label}: output size {list(pooled)} must be at least 1x1")
        return cls(mode == "max", coordinates == "half_pixel", pooled, int(node.attr("sampling_ratio", 0)),
                   float(node.attr("spatial_scale", 1.0)))


def roi_align_output_shape(x: Sequence[int], rois: Sequence[int], options: RoiAlignOptions) -> tuple[int, ...]:
    """Y is [R, C, output_height, output_width]."""
    return (rois[0], x[1], *options.pooled)


def roi_align_kernel(node: Node, opset: int, x: TensorType, rois: TensorType, layout: str = "NCHW") -> KernelSource:
    """The kernel of RoiAlign ``node`` on X (stored in ``layout``) and rois (logical types;
    their dims may be DimInts of a generic plan). Kernel arguments: X, rois, batch_indices
    (int64 [R]), Y (logical, X's type)."""
    options = RoiAlignOptions.of(node, opset)
    if x.dtype not in X_DTYPES or rois.dtype not in ROI_DTYPES:
        raise CodegenError(f"{node.label}: RoiAlign kernels take float32, float16 or bfloat16 X and rois (computed "
                           f"in float32), not {x.dtype.short} and {rois.dtype.short}")
    if not x.is_static or not rois.is_static:
        raise CodegenError(f"{node.label}: RoiAlign kernels need static shapes, got X {x} and rois {rois}")
    if len(x.shape) != 4 or len(rois.shape) != 2 or is_dynamic(rois.shape[1]) or int(rois.shape[1]) != 4:
        raise CodegenError(f"{node.label}: takes X [N, C, H, W] and rois [R, 4], got {dims_text(x.shape)} "
                           f"and {dims_text(rois.shape)}")
    if layout not in LAYOUTS:
        raise CodegenError(f"{node.label}: layout must be one of {LAYOUTS}, got {layout!r}")
    if lower(x.shape[2]) < 1 or lower(x.shape[3]) < 1:
        raise CodegenError(f"{node.label}: X {dims_text(x.shape)} may have no pixels to sample")
    x_shape, r = tuple(x.shape), rois.shape[0]
    out = roi_align_output_shape(x_shape, rois.shape, options)
    source = _source(options, x_shape, r, out, x.dtype, rois.dtype, layout == "NHWC")
    physical = (x_shape[0], x_shape[2], x_shape[3], x_shape[1]) if layout == "NHWC" else x_shape
    args = (KernelArg("in0", BufferRole.IN, 0, x.dtype, physical),
            KernelArg("in1", BufferRole.IN, 1, rois.dtype, (r, 4)),
            KernelArg("in2", BufferRole.IN, 2, DType.INT64, (r,)),
            KernelArg("out0", BufferRole.OUT, 0, x.dtype, out))
    return KernelSource.named("rtx_roi_align_", source, LaunchPolicy(math.prod(out)), args)


def _source(options: RoiAlignOptions, x: tuple[int, ...], r: int, out: tuple[int, ...], dtype: DType,
            rois_dtype: DType, channels_last: bool) -> str:
    n, c, h, w = x
    ph, pw = options.pooled
    total = math.prod(out)
    index, suffix = index_type(max(upper(total), upper(math.prod(x))))
    off = "long long" if upper(math.prod(x)) >= 2**31 else "int"
    body = [*_coordinates(index, suffix, c, ph, pw, channels_last), "const long long batch = in2[roi];",
            *_geometry(options, rois_dtype),
            "float acc = 0.0f;  // no samples, or an image outside X",
            f"if (batch >= 0 && batch < {c_int(n)} && grid_h > 0 && grid_w > 0) {{"]
    if channels_last:  # the pixel (y, x) of channel c is at base + (y * W + x) * C
        base, row, col = f"(({off})batch * {h * w} * {c} + ({off})c)", f"{w * c}", f"{c}"
    else:  # at base + y * W + x
        base, row, col = f"(({off})batch * {c} + ({off})c) * {h * w}", f"{w}", "1"
    sampling = [f"const {off} base = {base};",
                *([f"acc = {_NEG_INF};"] if options.max_mode else []),
                "for (int iy = 0; iy < grid_h; ++iy) {",
                "  const float sy = y0 + (float)ph * bin_h + ((float)iy + 0.5f) * bin_h / (float)grid_h;",
                *(f"  {line}" for line in _taps("y", h, row, off)),
                "  for (int ix = 0; ix < grid_w; ++ix) {",
                "    const float sx = x0 + (float)pw * bin_w + ((float)ix + 0.5f) * bin_w / (float)grid_w;",
                *(f"    {line}" for line in _taps("x", w, col, off)),
                *(f"    {line}" for line in _blend(options.max_mode, dtype)),
                "  }",
                "}"]
    if not options.max_mode:
        sampling.append("acc /= (float)grid_h * (float)grid_w;")
    body += [*(f"  {line}" for line in sampling), "}", f"out0[o] = {C.store('acc', dtype)};"]
    helpers = [C.PRELUDE.strip()]
    if options.ratio <= 0:
        helpers.append(_samples_helper(options).strip())
    comment = (f"// rtxrt RoiAlign kernel: {'max' if options.max_mode else 'avg'}"
               f" {'half_pixel' if options.half_pixel else 'output_half_pixel'}"
               f" output {ph}x{pw} sampling_ratio {max(options.ratio, 0)} spatial_scale {options.scale!r}"
               f" X {dims_text(x)} {'NHWC' if channels_last else 'NCHW'} {dtype.short}"
               f" rois [{r}, 4] {rois_dtype.short}")
    storage = C.storage_type(dtype)
    return loop_kernel([comment, *helpers],
                       [f"const {storage}* __restrict__ in0", f"const {C.storage_type(rois_dtype)}* __restrict__ in1",
                        "const long long* __restrict__ in2", f"{storage}* __restrict__ out0"],
                       grid_stride_loop(index, suffix, total), body)


def _coordinates(index: str, suffix: str, c: int, ph: int, pw: int, channels_last: bool) -> list[str]:
    """The lines turning the loop index ``i`` into the output cell ``ph``, ``pw``, the channel
    ``c``, the ``roi`` and Y's offset ``o`` (Y is logical: [R, C, ph, pw])."""
    cell = [f"const {index} pw = r % {pw}{suffix}; r /= {pw}{suffix};",
            f"const {index} ph = r % {ph}{suffix}; r /= {ph}{suffix};"]
    if not channels_last:  # i walks Y's order
        return [f"{index} r = i;", *cell, f"const {index} c = r % {c_int(c, suffix)}, roi = r / {c_int(c, suffix)};",
                f"const {index} o = i;"]
    return [f"{index} r = i;", f"const {index} c = r % {c_int(c, suffix)}; r /= {c_int(c, suffix)};", *cell,
            f"const {index} roi = r;",
            f"const {index} o = ((roi * {c_int(c, suffix)} + c) * {ph}{suffix} + ph) * {pw}{suffix} + pw;"]


def _geometry(options: RoiAlignOptions, rois_dtype: DType) -> list[str]:
    """The roi's start ``y0``, ``x0`` and bin sizes ``bin_h``, ``bin_w``, in fp32 as ONNX
    Runtime computes them, and its sample counts ``grid_h``, ``grid_w`` (adaptive: ``SAMPLES``)."""
    ph, pw = options.pooled
    scale = C.literal(options.scale, F32)
    shift = " - 0.5f" if options.half_pixel else ""

    def corner(k: int) -> str:
        return C.load(f"in1[roi * 4u + {k}u]", rois_dtype)

    lines = [f"const float rx0 = {corner(0)}, ry0 = {corner(1)}, rx1 = {corner(2)}, ry1 = {corner(3)};",
             f"const float x0 = rx0 * {scale}{shift}, y0 = ry0 * {scale}{shift};",
             f"float roi_w = (rx1 * {scale}{shift}) - x0, roi_h = (ry1 * {scale}{shift}) - y0;"]
    if not options.half_pixel:
        lines.append("roi_w = fmaxf(roi_w, 1.0f); roi_h = fmaxf(roi_h, 1.0f);  // malformed boxes become 1x1")
    lines.append(f"const float bin_h = roi_h / {C.literal(float(ph), F32)}, "
                 f"bin_w = roi_w / {C.literal(float(pw), F32)};")
    if options.ratio > 0:
        lines.append(f"const int grid_h = {options.ratio}, grid_w = {options.ratio};")
    else:
        lines.append("const int grid_h = rtx_roi_samples_h(ry0, ry1, bin_h), "
                     "grid_w = rtx_roi_samples_w(rx0, rx1, bin_w);")
    return lines


def _samples_helper(options: RoiAlignOptions) -> str:
    """``SAMPLES`` for each axis (``rtx_roi_samples_h``, ``_w``: their output sizes differ)."""
    shift_d = " - 0.5" if options.half_pixel else ""
    at_least_one = "" if options.half_pixel else "\n  size = fmax(size, 1.0);  // malformed boxes become 1x1"
    return "".join(
        render(SAMPLES, name=f"rtx_roi_samples_{axis}", tie=C.literal(_TIE, F32), scale=C.literal(options.scale, F32),
               pooled=C.literal(float(p), F32), scale_d=C.literal(options.scale, F64), shift_d=shift_d,
               at_least_one=at_least_one, pooled_d=C.literal(float(p), F64))
        for axis, p in zip("hw", options.pooled))


def _taps(v: str, size: int, stride: str, off: str) -> list[str]:
    """Along axis ``v`` (``size`` pixels, ``stride`` elements apart) from the sample position
    ``s{v}``: the offsets ``o{v}0``, ``o{v}1`` of the low and high tap and their weights ``w{v}0``,
    ``w{v}1``, 0 outside [-1, size], as the reference's _roi_axis."""
    extent = f"(float)({size})" if is_dynamic(size) else C.literal(float(size), F32)
    return [f"const bool in{v} = s{v} >= -1.0f && s{v} <= {extent};",
            f"const float c{v} = fmaxf(s{v}, 0.0f);  // NaN too: its weights are 0",
            f"const int t{v} = (int)c{v};  // saturates: a huge position is past the end",
            f"const bool end{v} = t{v} >= {size} - 1;  // at or past the last pixel's centre",
            f"const int lo{v} = end{v} ? {size} - 1 : t{v};",
            f"const float f{v} = end{v} ? 0.0f : c{v} - (float)lo{v};",
            f"const float w{v}0 = in{v} ? 1.0f - f{v} : 0.0f, w{v}1 = in{v} ? f{v} : 0.0f;",
            f"const {off} o{v}0 = ({off})lo{v} * {stride}, o{v}1 = ({off})(end{v} ? lo{v} : lo{v} + 1) * {stride};"]


def _blend(max_mode: bool, dtype: DType) -> list[str]:
    """One sample point: avg adds its bilinear blend to ``acc``; max keeps the largest of its
    four weighted taps (weights multiplied first, as the reference does)."""
    taps = {(a, b): C.load(f"in0[base + oy{a} + ox{b}]", dtype) for a in (0, 1) for b in (0, 1)}
    if max_mode:
        return [f"{{ const float v = {load} * (wy{a} * wx{b}); acc = {_MAX}; }}" for (a, b), load in taps.items()]
    return [f"acc += wy0 * (wx0 * {taps[0, 0]} + wx1 * {taps[0, 1]})"
            f" + wy1 * (wx0 * {taps[1, 0]} + wx1 * {taps[1, 1]});"]
