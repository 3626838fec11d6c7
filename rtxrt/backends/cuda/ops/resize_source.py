"""Generated Resize kernels for 4-D tensors: nearest and (bi)linear modes over the spatial
(last two logical) axes, stored NCHW or NHWC (``layout``) as fp32, fp16 or bf16.

Where each output row and column samples the input depends only on that row or column, so
it is computed here, on the host, in float64 with the reference backend's arithmetic
(rtxrt/backends/reference/ops/resize.py): nearest picks agree with it exactly, ties
included, for every coordinate transform and rounding mode. The results are baked into the
source as tables (``AxisMap``), one entry per output row and per output column; the kernel
walks the output grid-stride, one thread per element (NHWC: neighbouring threads take
neighbouring channels), and looks its position up.

Nearest copies the stored bits (exact). Linear blends the two neighbours along each axis in
fp32 (edges clamp, as the reference's edge padding) and rounds once to the storage type.

Not covered (CodegenError): cubic mode, antialias, exclude_outside, keep_aspect_ratio_policy
other than stretch, tf_crop_and_resize, and resizing the batch or channel axis.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ....ir.ops.resize import ROI_INPUT_SINCE, scaled_dim, source_coordinates
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
from ..plan.program import BufferRole

RESIZE_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
LAYOUTS = ("NCHW", "NHWC")
MODES = ("nearest", "linear")
TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")
ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}
_ONNX = ("", "ai.onnx")
_PER_LINE = 16  # table entries per source line


@dataclass(frozen=True, eq=False)
class AxisMap:
    """Where the output positions of one axis sample the input: nearest reads ``lo``; linear
    reads ``lo`` and ``hi`` (clamped neighbours) and gives ``hi`` the weight ``frac``."""

    lo: np.ndarray  # int64, one per output position
    hi: np.ndarray
    frac: np.ndarray  # float32


def resize_kernel(node: Node, inputs: Sequence[TensorType | None], output_shape: Sequence[int], dtype: DType,
                  layout: str = "NCHW", *, scales: Sequence[float] | None = None, opset: int = 21) -> KernelSource:
    """The kernel computing Resize ``node`` of X (``inputs[0]``, static logical type) to the
    logical ``output_shape``, both stored as ``dtype`` in ``layout``. ``scales``: the value of
    the node's constant scales input when it has one (the coordinate transforms use the scale,
    not the size ratio). ``opset``: the model's default-domain opset. Kernel arguments: X, Y."""
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
    rows, cols = resize_axis_maps(node, shape, out, scales=scales, opset=opset)
    mode, transform, nearest_mode = _options(node, opset)
    comment = f"// rtxrt Resize kernel: {mode} {transform} {layout} {_dims(shape)} -> {_dims(out)} {dtype.short}"
    per_axis = _scales_per_axis(node, scales)[2:]
    if any(is_dynamic(d) for d in (*shape[2:], *out[2:])) and _computable(transform, shape[2:], per_axis):
        source = _computed_source(comment, mode, transform, nearest_mode, per_axis, shape, out, dtype, layout)
    else:
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
                     scales: Sequence[float] | None = None, opset: int = 21) -> tuple[AxisMap, AxisMap]:
    """The row and column tables of ``node`` resizing logical ``in_shape`` to ``output_shape``
    (``scales``: the scales input's value, if the node has one, else the sizes made the output
    shape). CodegenError for what the kernels do not cover."""
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
    for attr, default in (("antialias", 0), ("exclude_outside", 0)):
        if int(node.attr(attr, default)):
            raise CodegenError(f"{node.label}: {attr} is not generated")
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise CodegenError(f"{node.label}: keep_aspect_ratio_policy {node.attr('keep_aspect_ratio_policy')!r} "
                           "is not generated")
    per_axis = _scales_per_axis(node, scales)
    maps = []
    for axis, (size, out, scale) in enumerate(zip(in_shape, output_shape, per_axis)):
        if axis < 2:
            if out != size or scale not in (None, 1.0):
                raise CodegenError(f"{node.label} resizes axis {axis} ({list(in_shape)} -> {list(output_shape)}); "
                                   "generated Resize covers the spatial (last two) axes")
            continue
        if scale is None:  # sizes: each axis stretched on its own
            scale, length = (out / size if size else 1.0), float(out)
        elif out != scaled_dim(size, scale):
            raise CodegenError(f"{node.label}: output shape {list(output_shape)} does not follow from "
                               f"scales {list(scales or ())} and input {list(in_shape)}")
        else:
            length = scale * size
        if scale == 1 and out == size:
            maps.append(_identity_map(size))
        else:
            maps.append(_axis_map(mode, transform, nearest_mode, size, out, scale, length))
    return maps[0], maps[1]


def _axis_map(mode: str, transform: str, nearest_mode: str, in_len: int, out_len: int, scale: float,
              length: float) -> AxisMap:
    """The sampling table of one axis resized from ``in_len`` to ``out_len`` positions."""
    coords = source_coordinates(transform, out_len, in_len, scale, length)
    last = max(in_len - 1, 0)
    if mode == "nearest":
        lo = np.clip(ROUNDING[nearest_mode](coords), 0, last).astype(np.int64)
        return AxisMap(lo, lo, np.zeros(out_len, np.float32))
    base = np.floor(coords)
    return AxisMap(np.clip(base, 0, last).astype(np.int64), np.clip(base + 1, 0, last).astype(np.int64),
                   (coords - base).astype(np.float32))


def _identity_map(length: int) -> AxisMap:
    """An axis that is not resized."""
    positions = np.arange(length, dtype=np.int64)
    return AxisMap(positions, positions, np.zeros(length, np.float32))


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
    axes = [int(a) for a in node.attr("axes", None) or range(4)]
    if len(scales) != len(axes) or any(not -4 <= a < 4 for a in axes):
        raise CodegenError(f"{node.label}: scales {list(scales)} do not fit axes {axes} of a 4-D input")
    per_axis: list[float | None] = [1.0] * 4
    for a, s in zip(axes, scales):
        if not s > 0:
            raise CodegenError(f"{node.label}: scales {list(scales)} must be positive")
        per_axis[a % 4] = float(np.float32(s))
    return per_axis


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
