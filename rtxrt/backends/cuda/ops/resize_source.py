"""Generated Resize kernels for 4-D tensors: nearest, (bi)linear and (bi)cubic modes over the
spatial (last two logical) axes, stored NCHW or NHWC (``layout``) as fp32, fp16 or bf16.

Where each output row and column samples the input depends only on that row or column, so
it is computed here, on the host, in float64 with the reference backend's arithmetic
(rtxrt/backends/reference/ops/resize.py): nearest picks agree with it exactly, ties
included, for every coordinate transform and rounding mode. The results are baked into the
source as tables, one entry per output row and per output column; the kernel walks the
output grid-stride, one thread per element (NHWC: neighbouring threads take neighbouring
channels), and looks its position up.

Nearest copies the stored bits (exact). Linear blends the two neighbours along each axis in
fp32 (edges clamp, as the reference's edge padding) and rounds once to the storage type
(``AxisMap``). Cubic (Keys' kernel with ``cubic_coeff_a``), linear with ``antialias`` or
``exclude_outside``, and every mode under tf_crop_and_resize take tap tables instead
(``AxisTaps``): per output position, the first of a run of consecutive input positions and
their weights, the reference's interpolation-matrix row (weights clamped to the same edge
summed, renormalised where exclude_outside or antialias say) rounded to float32; the kernel
sums the separable product in fp32. tf_crop_and_resize writes ``extrapolation_value``
(rounded to the storage type, as the reference casts it) where a row or column samples
outside the input.

Not covered (CodegenError): other ranks, resizing the batch or channel axis (a
tf_crop_and_resize roi must keep them whole), tf_crop_and_resize without its roi, and a
keep_aspect_ratio_policy other than stretch without its sizes (both read at plan time).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ....ir.ops.resize import ROI_INPUT_SINCE, fit_sizes, scaled_dim, source_coordinates
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import is_dynamic, lower
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    loop_kernel,
    pixel_coordinates,
)
from ..plan.forms import numpy_dtype
from ..plan.program import BufferRole

RESIZE_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
LAYOUTS = ("NCHW", "NHWC")
MODES = ("nearest", "linear", "cubic")
CROP = "tf_crop_and_resize"
TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", CROP)
ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}
CUBIC_COEFF_A = -0.75  # ONNX's default cubic_coeff_a (TensorFlow's is -0.5)
_ONNX = ("", "ai.onnx")
_PER_LINE = 16  # table entries per source line


@dataclass(frozen=True, eq=False)
class AxisMap:
    """Where the output positions of one axis sample the input: nearest reads ``lo``; linear
    reads ``lo`` and ``hi`` (clamped neighbours) and gives ``hi`` the weight ``frac``."""

    lo: np.ndarray  # int64, one per output position
    hi: np.ndarray
    frac: np.ndarray  # float32


@dataclass(frozen=True, eq=False)
class AxisTaps:
    """Where the output positions of one axis read the input, as tap tables: position ``o``
    reads the ``width`` positions from ``start[o]`` on, weighted ``weights[o]`` (nearest: one,
    weight 1, copied); where ``outside[o]``, tf_crop_and_resize extrapolates instead."""

    start: np.ndarray  # int64, one per output position
    weights: np.ndarray  # float32, (output positions, width)
    outside: np.ndarray  # bool, one per output position

    @property
    def width(self) -> int:
        return self.weights.shape[1]


@dataclass(frozen=True)
class _Axis:
    """One axis resized from ``size`` to ``out`` positions by ``scale``; ``length`` is the output
    length before flooring (which the transforms use), ``box`` its roi (start, end) where
    tf_crop_and_resize resizes it, else None."""

    size: int
    out: int
    scale: float
    length: float
    box: tuple[float, float] | None = None

    @property
    def identity(self) -> bool:
        """Not resized: the reference skips the axis (tf_crop_and_resize resizes every listed one)."""
        return self.scale == 1 and self.out == self.size and self.box is None


def resize_kernel(node: Node, inputs: Sequence[TensorType | None], output_shape: Sequence[int], dtype: DType,
                  layout: str = "NCHW", *, scales: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
                  roi: Sequence[float] | None = None, opset: int = 21) -> KernelSource:
    """The kernel computing Resize ``node`` of X (``inputs[0]``, static logical type) to the
    logical ``output_shape``, both stored as ``dtype`` in ``layout``. ``scales``: the value of
    the node's constant scales input when it has one (the coordinate transforms use the scale,
    not the size ratio); ``sizes``: the constant sizes input, read only under a
    keep_aspect_ratio_policy other than stretch (the axes then share the scale fitting them);
    ``roi``: the constant roi input, read only by tf_crop_and_resize. ``opset``: the model's
    default-domain opset. Kernel arguments: X, Y."""
    if node.domain not in _ONNX or node.op_type != "Resize":
        raise CodegenError(f"{node.label} is not a Resize")
    if dtype not in RESIZE_DTYPES:
        raise CodegenError(f"{node.label}: Resize kernels store float32, float16 or bfloat16, not {dtype.short}")
    if layout not in LAYOUTS:
        raise CodegenError(f"{node.label}: layout must be one of {LAYOUTS}, got {layout!r}")
    if not inputs or inputs[0] is None or not inputs[0].is_static:
        raise CodegenError(f"{node.label}: Resize kernels need a static input shape")
    shape = tuple(d if is_dynamic(d) else int(d) for d in inputs[0].shape)  # a generic plan's DimInts stay
    out = tuple(d if is_dynamic(d) else int(d) for d in output_shape)
    mode, transform, nearest_mode = _options(node, opset)
    rows_axis, cols_axis = _spatial_axes(node, shape, out, scales=scales, sizes=sizes, roi=roi, opset=opset)
    comment = f"// rtxrt Resize kernel: {mode} {transform} {layout} {_dims(shape)} -> {_dims(out)} {dtype.short}"
    per_axis = _scales_per_axis(node, scales)[2:]
    if _tapped(node, mode, transform):
        rows, cols = (_axis_taps(node, mode, transform, nearest_mode, a) for a in (rows_axis, cols_axis))
        source = _taps_source(comment + _filter_note(node, mode, transform), mode == "nearest", rows, cols,
                              _extrapolation(node, transform, dtype), shape, out, dtype, layout)
    elif any(is_dynamic(d) for d in (*shape[2:], *out[2:])) and _computable(transform, shape[2:], per_axis):
        source = _computed_source(comment, mode, transform, nearest_mode, per_axis, shape, out, dtype, layout)
    else:
        rows, cols = (_axis_map(mode, transform, nearest_mode, a) for a in (rows_axis, cols_axis))
        source = _source(comment, mode == "linear", rows, cols, shape, out, dtype, layout)
    args = (KernelArg("in0", BufferRole.IN, 0, dtype, _physical(shape, layout)),
            KernelArg("out0", BufferRole.OUT, 0, dtype, _physical(out, layout)))
    return KernelSource.named("rtx_resize_", source, LaunchPolicy(math.prod(out)), args)


def _source(comment: str, linear: bool, rows: AxisMap, cols: AxisMap, shape: tuple[int, ...], out: tuple[int, ...],
            dtype: DType, layout: str) -> str:
    c, h, w = shape[1:]
    oh, ow = out[2:]
    total = math.prod(out)
    index, suffix, off, coords, row, col = pixel_coordinates(layout, shape, (c, h, w), (oh, ow), total)
    tables = [_table("rtx_y0", "int", rows.lo), _table("rtx_x0", "int", cols.lo)]
    body = [f"{index} r = i;", *coords, f"const {off} y0 = rtx_y0[y], x0 = rtx_x0[x];"]
    if not linear:
        body.append(f"out0[i] = in0[base + y0 * {row} + x0 * {col}];  // the stored bits: exact")
    else:
        tables += [_table("rtx_y1", "int", rows.hi), _table("rtx_x1", "int", cols.hi),
                   _table("rtx_fy", "float", rows.frac), _table("rtx_fx", "float", cols.frac)]

        def at(r: str, k: str) -> str:
            return C.load(f"in0[base + {r} * {row} + {k} * {col}]", dtype)

        body += [f"const {off} y1 = rtx_y1[y], x1 = rtx_x1[x];",
                 "const float fy = rtx_fy[y], fx = rtx_fx[x];",
                 f"const float top = {at('y0', 'x0')} * (1.0f - fx) + {at('y0', 'x1')} * fx;",
                 f"const float bottom = {at('y1', 'x0')} * (1.0f - fx) + {at('y1', 'x1')} * fx;",
                 f"out0[i] = {C.store('top * (1.0f - fy) + bottom * fy', dtype)};"]
    storage = C.storage_type(dtype)
    return loop_kernel([comment, C.PRELUDE.strip(), *tables],
                       [f"const {storage}* __restrict__ in0", f"{storage}* __restrict__ out0"],
                       grid_stride_loop(index, suffix, total), body)


def _taps_source(comment: str, nearest: bool, rows: AxisTaps, cols: AxisTaps, extrapolation: str,
                 shape: tuple[int, ...], out: tuple[int, ...], dtype: DType, layout: str) -> str:
    """The kernel over tap tables: nearest copies the one tap's stored bits; the filters sum
    each row's taps weighted along x, then the rows weighted along y, in fp32."""
    c, h, w = shape[1:]
    oh, ow = out[2:]
    total = math.prod(out)
    index, suffix, off, coords, row, col = pixel_coordinates(layout, shape, (c, h, w), (oh, ow), total)
    tables = [_table("rtx_y0", "int", rows.start), _table("rtx_x0", "int", cols.start)]
    body = [f"{index} r = i;", *coords]
    if rows.outside.any() or cols.outside.any():
        tables += [_table("rtx_yout", "unsigned char", rows.outside), _table("rtx_xout", "unsigned char", cols.outside)]
        body.append(f"if (rtx_yout[y] || rtx_xout[x]) {{ out0[i] = {extrapolation}; continue; }}  // outside the input")
    body.append(f"const {off} y0 = rtx_y0[y], x0 = rtx_x0[x];")
    if nearest:
        body.append(f"out0[i] = in0[base + y0 * {row} + x0 * {col}];  // the stored bits: exact")
    else:
        ky, kx = rows.width, cols.width
        tables += [_table("rtx_wy", "float", rows.weights.reshape(-1)),
                   _table("rtx_wx", "float", cols.weights.reshape(-1))]
        tap = C.load(f"in0[base + (y0 + ky) * {row} + (x0 + kx) * {col}]", dtype)
        body += ["float acc = 0.0f;",
                 f"for (int ky = 0; ky < {ky}; ++ky) {{",
                 "  float sum = 0.0f;",
                 f"  for (int kx = 0; kx < {kx}; ++kx) sum += rtx_wx[x * {kx} + kx] * {tap};",
                 f"  acc += rtx_wy[y * {ky} + ky] * sum;",
                 "}",
                 f"out0[i] = {C.store('acc', dtype)};"]
    storage = C.storage_type(dtype)
    return loop_kernel([comment, C.PRELUDE.strip(), *tables],
                       [f"const {storage}* __restrict__ in0", f"{storage}* __restrict__ out0"],
                       grid_stride_loop(index, suffix, total), body)


def _filter_note(node: Node, mode: str, transform: str) -> str:
    """The comment's note of the attributes the tap tables follow."""
    notes = [f"cubic_coeff_a={float(node.attr('cubic_coeff_a', CUBIC_COEFF_A))}"] if mode == "cubic" else []
    notes += [f"{attr}=1" for attr in ("exclude_outside", "antialias") if mode != "nearest" and int(node.attr(attr, 0))]
    if transform == CROP:
        notes.append(f"extrapolation_value={float(node.attr('extrapolation_value', 0.0))}")
    return "".join(f" {n}" for n in notes)


def _extrapolation(node: Node, transform: str, dtype: DType) -> str:
    """tf_crop_and_resize's extrapolation_value as a stored element: rounded once to ``dtype``
    on the host, as the reference casts its result."""
    if transform != CROP:
        return ""
    value = np.array(float(node.attr("extrapolation_value", 0.0)), np.float64).astype(numpy_dtype(dtype))
    if dtype == DType.FLOAT32:
        return C.literal(value, dtype)
    return f"(unsigned short)0x{int(value.view(np.uint16)):04x}u"


def _computable(transform: str, sizes: Sequence[int], scales: Sequence[float | None]) -> bool:
    """Whether the kernel may compute where each output row and column samples the input (a
    generic plan, whose sizes vary, cannot bake tables): a constant scale per axis (not sizes,
    whose ratio varies) and a transform of the output position and the scale alone."""
    if any(sc is None for sc in scales):
        return False
    if transform == "pytorch_half_pixel":  # its length > 1 test must hold at every shape
        return all(lower(size) * sc > 1 for size, sc in zip(sizes, scales))
    return transform in ("half_pixel", "asymmetric")


# the nearest_modes in C, on a double
_C_ROUNDING = {"round_prefer_floor": "ceil({} - 0.5)", "round_prefer_ceil": "floor({} + 0.5)",
               "floor": "floor({})", "ceil": "ceil({})"}


def _computed_source(comment: str, mode: str, transform: str, nearest_mode: str, scales: Sequence[float],
                     shape: tuple[int, ...], out: tuple[int, ...], dtype: DType, layout: str) -> str:
    """The kernel of ``_source`` with the sampling positions computed per thread instead of
    looked up: the same float64 arithmetic as the tables (``source_coordinates``, the rounding,
    the clamping), so the results are the same, bit for bit."""
    c, h, w = shape[1:]
    oh, ow = out[2:]
    total = math.prod(out)
    index, suffix, off, coords, row, col = pixel_coordinates(layout, shape, (c, h, w), (oh, ow), total)
    body = [f"{index} r = i;", *coords]
    for v, size, scale in (("y", h, scales[0]), ("x", w, scales[1])):
        s = repr(float(scale))
        at = f"((double){v} + 0.5) / {s} - 0.5" if transform != "asymmetric" else f"(double){v} / {s}"
        body.append(f"const double c{v} = {at};")
        if mode == "nearest":
            pick = _C_ROUNDING[nearest_mode].format(f"c{v}")
            body.append(f"const {off} {v}0 = ({off})min(max((int){pick}, 0), {size} - 1);")
        else:
            body += [f"const double b{v} = floor(c{v});",
                     f"const {off} {v}0 = ({off})min(max((int)b{v}, 0), {size} - 1), "
                     f"{v}1 = ({off})min(max((int)b{v} + 1, 0), {size} - 1);",
                     f"const float f{v} = (float)(c{v} - b{v});"]
    if mode == "nearest":
        body.append(f"out0[i] = in0[base + y0 * {row} + x0 * {col}];  // the stored bits: exact")
    else:
        def at(r: str, k: str) -> str:
            return C.load(f"in0[base + {r} * {row} + {k} * {col}]", dtype)

        body += [f"const float top = {at('y0', 'x0')} * (1.0f - fx) + {at('y0', 'x1')} * fx;",
                 f"const float bottom = {at('y1', 'x0')} * (1.0f - fx) + {at('y1', 'x1')} * fx;",
                 f"out0[i] = {C.store('top * (1.0f - fy) + bottom * fy', dtype)};"]
    storage = C.storage_type(dtype)
    return loop_kernel([comment, C.PRELUDE.strip()],
                       [f"const {storage}* __restrict__ in0", f"{storage}* __restrict__ out0"],
                       grid_stride_loop(index, suffix, total), body)


def _dims(shape: Sequence[int]) -> str:
    """``shape`` as a comment shows it: as a list prints, a dim that varies as its expression."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def resize_axis_maps(node: Node, in_shape: Sequence[int], output_shape: Sequence[int], *,
                     scales: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
                     opset: int = 21) -> tuple[AxisMap, AxisMap]:
    """The row and column tables of nearest or linear ``node`` (without antialias,
    exclude_outside or tf_crop_and_resize, which take tap tables) resizing logical
    ``in_shape`` to ``output_shape`` (``scales``: the scales input's value, if the node has
    one, else the sizes made the output shape). CodegenError for what the kernels do not cover."""
    mode, transform, nearest_mode = _options(node, opset)
    if _tapped(node, mode, transform):
        raise CodegenError(f"{node.label}: {mode} {transform} resizes by tap tables (resize_axis_taps)")
    axes = _spatial_axes(node, in_shape, output_shape, scales=scales, sizes=sizes, opset=opset)
    rows, cols = (_axis_map(mode, transform, nearest_mode, a) for a in axes)
    return rows, cols


def resize_axis_taps(node: Node, in_shape: Sequence[int], output_shape: Sequence[int], *,
                     scales: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
                     roi: Sequence[float] | None = None, opset: int = 21) -> tuple[AxisTaps, AxisTaps]:
    """The row and column tap tables of ``node`` (any mode) resizing logical ``in_shape`` to
    ``output_shape``, as ``resize_kernel`` takes ``scales``, ``sizes`` and ``roi``."""
    mode, transform, nearest_mode = _options(node, opset)
    axes = _spatial_axes(node, in_shape, output_shape, scales=scales, sizes=sizes, roi=roi, opset=opset)
    rows, cols = (_axis_taps(node, mode, transform, nearest_mode, a) for a in axes)
    return rows, cols


def _tapped(node: Node, mode: str, transform: str) -> bool:
    """Whether ``node`` needs tap tables: cubic, linear's renormalised weights, and the
    extrapolation of tf_crop_and_resize (nearest ignores antialias and exclude_outside)."""
    renormalised = mode == "linear" and (int(node.attr("antialias", 0)) or int(node.attr("exclude_outside", 0)))
    return mode == "cubic" or transform == CROP or bool(renormalised)


def _spatial_axes(node: Node, in_shape: Sequence[int], output_shape: Sequence[int], *,
                  scales: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
                  roi: Sequence[float] | None = None, opset: int = 21) -> tuple[_Axis, _Axis]:
    """The rows and columns axes of ``node`` resizing logical ``in_shape`` to ``output_shape``.
    CodegenError for what the kernels do not cover."""
    in_shape, output_shape = tuple(int(d) for d in in_shape), tuple(int(d) for d in output_shape)
    if len(in_shape) != 4 or len(output_shape) != 4:
        raise CodegenError(f"{node.label}: generated Resize is 4-D, got {list(in_shape)} -> {list(output_shape)}")
    mode, transform, nearest_mode = _options(node, opset)
    if mode not in MODES:
        raise CodegenError(f"{node.label}: mode {mode!r} (generated Resize covers {', '.join(MODES)})")
    if transform not in TRANSFORMS:
        raise CodegenError(f"{node.label}: coordinate_transformation_mode {transform!r} is not generated")
    if mode == "nearest" and nearest_mode not in ROUNDING:
        raise CodegenError(f"{node.label}: unknown nearest_mode {nearest_mode!r}")
    boxes = _boxes(node, roi) if transform == CROP else [None] * 4
    axes = [_Axis(size, out, scale, length, box) for size, out, (scale, length), box
            in zip(in_shape, output_shape, _axis_scales(node, in_shape, output_shape, scales, sizes), boxes)]
    for axis, a in enumerate(axes[:2]):
        if not (a.identity or _uncropped(a)):
            raise CodegenError(f"{node.label} resizes axis {axis} ({list(in_shape)} -> {list(output_shape)}); "
                               "generated Resize covers the spatial (last two) axes")
    return axes[2], axes[3]


def _uncropped(a: _Axis) -> bool:
    """Whether tf_crop_and_resize keeps axis ``a`` as it is (its roi [0, 1], say)."""
    if a.out != a.size or a.box is None:
        return False
    coords = source_coordinates(CROP, a.out, a.size, a.scale, a.length, a.box)
    return bool(np.array_equal(coords, np.arange(a.size)))


def _axis_scales(node: Node, in_shape: tuple[int, ...], output_shape: tuple[int, ...],
                 scales: Sequence[float] | None, sizes: Sequence[int] | None) -> list[tuple[float, float]]:
    """The scale of each axis and its output length before flooring, as the reference derives
    them from scales, from sizes (each axis stretched on its own), or from sizes fitted under a
    keep_aspect_ratio_policy (the listed axes share one scale)."""
    per_axis = _scales_per_axis(node, scales)
    if per_axis[0] is not None:
        if any(out != scaled_dim(size, s) for size, out, s in zip(in_shape, output_shape, per_axis)):
            raise CodegenError(f"{node.label}: output shape {list(output_shape)} does not follow from "
                               f"scales {list(scales or ())} and input {list(in_shape)}")
        return [(s, s * size) for size, s in zip(in_shape, per_axis)]
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return [((out / size if size else 1.0), float(out)) for size, out in zip(in_shape, output_shape)]
    axes = _listed_axes(node)
    if sizes is None or len(sizes) != len(axes):
        raise CodegenError(f"{node.label}: keep_aspect_ratio_policy {policy!r} needs constant sizes, one per axis "
                           f"{axes}, got {sizes if sizes is None else list(sizes)}")
    try:
        fitted, shared = fit_sizes([in_shape[a] for a in axes], [int(s) for s in sizes], policy)
    except ValueError as exc:
        raise CodegenError(f"{node.label}: {exc}") from None
    if any(output_shape[a] != f for a, f in zip(axes, fitted)):
        raise CodegenError(f"{node.label}: output shape {list(output_shape)} does not follow from sizes "
                           f"{list(sizes)} fitted {policy} to input {list(in_shape)}")
    result = [(1.0, float(size)) for size in in_shape]
    for a in axes:
        result[a] = (shared, shared * in_shape[a])
    return result


def _axis_map(mode: str, transform: str, nearest_mode: str, a: _Axis) -> AxisMap:
    """The sampling table of axis ``a``."""
    if a.identity:
        positions = np.arange(a.size, dtype=np.int64)
        return AxisMap(positions, positions, np.zeros(a.size, np.float32))
    coords = source_coordinates(transform, a.out, a.size, a.scale, a.length)
    last = max(a.size - 1, 0)
    if mode == "nearest":
        lo = np.clip(ROUNDING[nearest_mode](coords), 0, last).astype(np.int64)
        return AxisMap(lo, lo, np.zeros(a.out, np.float32))
    base = np.floor(coords)
    return AxisMap(np.clip(base, 0, last).astype(np.int64), np.clip(base + 1, 0, last).astype(np.int64),
                   (coords - base).astype(np.float32))


def _axis_taps(node: Node, mode: str, transform: str, nearest_mode: str, a: _Axis) -> AxisTaps:
    """The tap tables of axis ``a``."""
    if a.identity:
        return AxisTaps(np.arange(a.size, dtype=np.int64), np.ones((a.size, 1), np.float32), np.zeros(a.size, bool))
    coords = source_coordinates(transform, a.out, a.size, a.scale, a.length, a.box)
    outside = (coords < 0) | (coords > a.size - 1) if transform == CROP else np.zeros(a.out, bool)
    last = max(a.size - 1, 0)
    if mode == "nearest":
        start = np.clip(ROUNDING[nearest_mode](coords), 0, last).astype(np.int64)
        return AxisTaps(start, np.ones((a.out, 1), np.float32), outside)
    positions, weights = _filter_taps(node, mode, coords, a)
    return _band(np.clip(positions, 0, last), weights, outside, a.size)


def _filter_taps(node: Node, mode: str, coords: np.ndarray, a: _Axis) -> tuple[np.ndarray, np.ndarray]:
    """The input positions (not yet clamped) each output position of axis ``a`` reads and
    their float64 weights, as the reference builds its interpolation matrix."""
    if mode == "linear":
        kernel, support = _triangle, 1
    else:
        kernel, support = _keys_cubic(float(node.attr("cubic_coeff_a", CUBIC_COEFF_A))), 2
    antialias = bool(int(node.attr("antialias", 0)))
    stretch = min(a.scale, 1.0) if antialias else 1.0  # antialiasing widens the filter by 1/scale downsampling
    first = math.floor(-support / stretch) + 1
    taps = np.arange(first, 2 - first)
    base = np.floor(coords)
    weights = kernel((taps[None, :] - (coords - base)[:, None]) * stretch)
    if antialias:
        weights = weights / weights.sum(axis=1, keepdims=True)
    positions = base.astype(np.int64)[:, None] + taps[None, :]
    if int(node.attr("exclude_outside", 0)):  # the taps outside the input drop out; the rest renormalise
        weights = np.where((positions < 0) | (positions >= a.size), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return positions, weights


def _triangle(d: np.ndarray) -> np.ndarray:
    return np.maximum(1 - np.abs(d), 0)


def _keys_cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def kernel(d: np.ndarray) -> np.ndarray:  # Keys' cubic convolution kernel, as the reference writes it
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))

    return kernel


def _band(positions: np.ndarray, weights: np.ndarray, outside: np.ndarray, size: int) -> AxisTaps:
    """Clamped ``positions`` and their ``weights`` as one run of consecutive positions per
    output position, as wide as the widest: taps clamped to the same edge add up (the
    reference's edge padding); a run that would pass the last position starts earlier."""
    out = len(positions)
    lo = positions.min(axis=1) if out else np.zeros(0, np.int64)
    width = int((positions.max(axis=1) - lo).max()) + 1 if out else 1
    start = np.minimum(lo, size - width)
    band = np.zeros((out, width))
    rows = np.broadcast_to(np.arange(out)[:, None], positions.shape)
    np.add.at(band, (rows, positions - start[:, None]), weights)
    return AxisTaps(start.astype(np.int64), band.astype(np.float32), outside)


def _options(node: Node, opset: int) -> tuple[str, str, str]:
    """mode, coordinate_transformation_mode and nearest_mode of ``node``."""
    if opset < ROI_INPUT_SINCE:  # Resize-10 samples asymmetrically, rounding down
        return node.attr("mode", "nearest"), "asymmetric", "floor"
    return (node.attr("mode", "nearest"), node.attr("coordinate_transformation_mode", "half_pixel"),
            node.attr("nearest_mode", "round_prefer_floor"))


def _scales_per_axis(node: Node, scales: Sequence[float] | None) -> list[float | None]:
    """The scale of each of the 4 axes (1.0 where ``axes`` leaves one out), or all None without
    scales (an empty scales tensor counts as none, as in the reference). Scales are float32 in
    ONNX: their exact values, as the reference reads them."""
    if scales is None or len(scales) == 0:
        return [None] * 4
    axes = _listed_axes(node)
    if len(scales) != len(axes):
        raise CodegenError(f"{node.label}: scales {list(scales)} do not fit axes {axes} of a 4-D input")
    per_axis: list[float | None] = [1.0] * 4
    for a, s in zip(axes, scales):
        if not s > 0:
            raise CodegenError(f"{node.label}: scales {list(scales)} must be positive")
        per_axis[a] = float(np.float32(s))
    return per_axis


def _listed_axes(node: Node) -> list[int]:
    """The axes ``node`` resizes (its ``axes``, opset 18; else all 4), counted from 0."""
    axes = [int(a) for a in node.attr("axes", None) or range(4)]
    if any(not -4 <= a < 4 for a in axes) or len({a % 4 for a in axes}) != len(axes):
        raise CodegenError(f"{node.label}: axes {axes} do not fit a 4-D input")
    return [a % 4 for a in axes]


def _boxes(node: Node, roi: Sequence[float] | None) -> list[tuple[float, float] | None]:
    """tf_crop_and_resize's (start, end) of each axis it resizes, None for the others. The roi
    holds the starts then the ends, one per listed axis or one per axis, as the reference reads it."""
    axes = _listed_axes(node)
    r = np.asarray(roi if roi is not None else [], np.float64).reshape(-1)
    if len(r) not in (2 * len(axes), 8):
        raise CodegenError(f"{node.label}: coordinate_transformation_mode {CROP!r} needs a constant roi of "
                           f"{2 * len(axes)} values (starts, then ends), got {r.tolist() if roi is not None else None}")
    half = len(r) // 2
    picks = range(len(axes)) if half == len(axes) else axes
    boxes: list[tuple[float, float] | None] = [None] * 4
    for a, p in zip(axes, picks):
        boxes[a] = (float(r[p]), float(r[half + p]))
    return boxes


def _physical(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return shape if layout == "NCHW" else (shape[0], shape[2], shape[3], shape[1])


def _table(name: str, ctype: str, values: np.ndarray) -> str:
    """A read-only device array (at least one entry: C has no empty arrays)."""
    if ctype == "float":  # the shortest decimal that reads back as the same float32
        text = [np.format_float_positional(np.float32(v), trim="0") + "f" for v in values]
    else:
        text = [str(int(v)) for v in values]
    text = text or ["0"]
    lines = [", ".join(text[i : i + _PER_LINE]) for i in range(0, len(text), _PER_LINE)]
    return f"__device__ const {ctype} {name}[{len(text)}] = {{\n  " + ",\n  ".join(lines) + "\n};"
