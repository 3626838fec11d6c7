"""Generated ConvTranspose kernels over any number of spatial axes (1-D, 2-D, 3-D: any
group, strides, pads, auto_pad, output_padding, output_shape, dilations, optional bias), X and
Y stored channels-first (``layout`` "NCHW": N, C, D1, D2, ...) or channels-last ("NHWC": N,
D1, D2, ..., C) as fp32, fp16 or bf16, computed in fp32.

A direct gather: one thread per output element (channels-last: neighbouring threads take
neighbouring output channels). Output position ``o`` along an axis is position ``o + pad``
of the full result, which input position ``i`` reaches through tap ``k`` when
``o + pad = i * stride + k * dilation``; so for each tap (one nested loop per axis) the thread
checks divisibility, finds ``i``, and adds the products over the group's input channels, in
fp32, plus the bias, rounding once to the storage type. Output positions no tap reaches
(output_padding, an output_shape longer than the full result) get the bias alone.

W is stored as ONNX has it, (C, OC/group, *kernel) (``weight_layout`` "NCHW"), or packed as
(C, *kernel, OC/group) ("NHWC": the layout pass's NHWC ConvTranspose weight; neighbouring
output channels read neighbouring weights). ``pack_conv_transpose_weights`` packs on the
host. The geometry is the reference's (rtxrt/ir/ops/conv.py ``transposed_window``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ....ir.ops.conv import Window, transposed_window
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, is_dynamic, upper
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole

CONV_TRANSPOSE_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
LAYOUTS = ("NCHW", "NHWC")  # channels first or last, at any spatial rank
WEIGHT_LAYOUTS = ("NCHW", "NHWC")  # (C, OC/g, *kernel) as ONNX has it, or packed (C, *kernel, OC/g)
_ONNX = ("", "ai.onnx")


def pack_conv_transpose_weights(w: np.ndarray) -> np.ndarray:
    """ONNX ConvTranspose weights (C, OC/group, *kernel) as the packed (C, *kernel, OC/group)."""
    return np.ascontiguousarray(np.moveaxis(w, 1, -1))


def conv_transpose_output_shape(node: Node, x_shape: Sequence[int], w_shape: Sequence[int]) -> tuple[int, ...]:
    """The logical output shape (N, OC, *spatial) of ConvTranspose ``node`` on a logical
    ``x_shape`` with ONNX-layout weights ``w_shape`` (any spatial rank)."""
    return _output_shape(node, tuple(int(d) for d in x_shape), tuple(int(d) for d in w_shape),
                         _window(node, x_shape, w_shape))


def conv_transpose_kernel(node: Node, inputs: Sequence[TensorType | None], dtype: DType, layout: str = "NCHW",
                          weight_layout: str = "NCHW") -> KernelSource:
    """The kernel computing ConvTranspose ``node`` on inputs of these static logical types
    (X (N, C, *spatial), W (C, OC/group, *kernel), optional B (OC,)), every tensor stored
    as ``dtype``, X and Y in ``layout``, W in ``weight_layout``. Kernel arguments: X, W,
    [B], Y."""
    if node.domain not in _ONNX or node.op_type != "ConvTranspose":
        raise CodegenError(f"{node.label} is not a ConvTranspose")
    if dtype not in CONV_TRANSPOSE_DTYPES:
        raise CodegenError(f"{node.label}: ConvTranspose kernels store float32, float16 or bfloat16, "
                           f"not {dtype.short}")
    if layout not in LAYOUTS or weight_layout not in WEIGHT_LAYOUTS:
        raise CodegenError(f"{node.label}: layout must be one of {LAYOUTS} and weight_layout one of "
                           f"{WEIGHT_LAYOUTS}, got {layout!r} and {weight_layout!r}")
    has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
    wanted = 3 if has_bias else 2
    if len(inputs) < wanted or any(t is None or not t.is_static for t in inputs[:wanted]):
        raise CodegenError(f"{node.label}: ConvTranspose kernels need static X, W (and B) shapes")
    x_shape = tuple(d if is_dynamic(d) else int(d) for d in inputs[0].shape)  # a generic plan's DimInts stay
    w_shape = tuple(int(d) for d in inputs[1].shape)
    if len(x_shape) < 3 or len(w_shape) != len(x_shape):
        raise CodegenError(f"{node.label}: ConvTranspose needs X (N, C, *spatial) and W of the same rank, "
                           f"got X {_dims(x_shape)} and W {list(w_shape)}")
    group = int(node.attr("group", 1) or 1)
    if x_shape[1] != w_shape[0] or group < 1 or x_shape[1] % group:
        raise CodegenError(f"{node.label}: X {list(x_shape)} does not fit W {list(w_shape)} with group {group}")
    kernel_shape = node.attr("kernel_shape")
    if kernel_shape and tuple(int(k) for k in kernel_shape) != w_shape[2:]:
        raise CodegenError(f"{node.label}: kernel_shape {list(kernel_shape)} differs from W's {list(w_shape[2:])}")
    window = _window(node, x_shape, w_shape)
    out = _output_shape(node, x_shape, w_shape, window)
    if has_bias and tuple(int(d) for d in inputs[2].shape) != (out[1],):
        raise CodegenError(f"{node.label}: B must have shape [{out[1]}], got {inputs[2]}")
    stored_w = w_shape if weight_layout == "NCHW" else _physical(w_shape, "NHWC")
    args = [KernelArg("in0", BufferRole.IN, 0, dtype, _physical(x_shape, layout)),
            KernelArg("weight", BufferRole.IN, 1, dtype, stored_w)]
    if has_bias:
        args.append(KernelArg("bias", BufferRole.IN, 2, dtype, (out[1],)))
    args.append(KernelArg("out0", BufferRole.OUT, 0, dtype, _physical(out, layout)))
    source = _source(x_shape, w_shape, out, window, group, has_bias, dtype, layout, weight_layout)
    return KernelSource.named("rtx_convt_", source, LaunchPolicy(math.prod(out)), args)


def _window(node: Node, x_shape: Sequence[int], w_shape: Sequence[int]) -> Window:
    try:
        window = transposed_window(node.attrs, tuple(x_shape[2:]), tuple(w_shape[2:]))
    except ValueError as exc:
        raise CodegenError(f"{node.label}: {exc}") from None
    if min(window.out, default=0) < 0:
        raise CodegenError(f"{node.label}: pads {list(window.pads)} leave a negative output size {list(window.out)}")
    return window


def _output_shape(node: Node, x_shape: tuple[int, ...], w_shape: tuple[int, ...], window: Window) -> tuple[int, ...]:
    return (x_shape[0], w_shape[1] * int(node.attr("group", 1) or 1),
            *(d if is_dynamic(d) else int(d) for d in window.out))


def _dims(shape: Sequence[int]) -> str:
    """``shape`` as a comment shows it: as a list prints, a dim that varies as its expression."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _physical(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return shape if layout == "NCHW" else (shape[0], *shape[2:], shape[1])


def _row_major(first: str, axes: Sequence[tuple[int, str]]) -> str:
    """The offset of ``first`` then each (size, index) of ``axes``, row-major (Horner's rule)."""
    offset = first
    for size, term in axes:
        offset = f"({offset}) * {size} + {term}" if "+" in offset else f"{offset} * {size} + {term}"
    return offset


def _tap_loops(window: Window, sizes: tuple[int, ...]) -> list[str]:
    """The opening lines of one loop per spatial axis over its taps ``k0``, ``k1``, ...,
    outermost first: each skips a tap through which no input position reaches the output
    position, and finds the input position ``i0``, ``i1``, ... of the others."""
    lines = []
    for a, (k, s, d, size) in enumerate(zip(window.kernel, window.strides, window.dilations, sizes)):
        indent = "  " * a
        lines += [f"{indent}#pragma unroll",
                  f"{indent}for (int k{a} = 0; k{a} < {k}; ++k{a}) {{",
                  f"{indent}  const int t{a} = p{a} - k{a} * {d};",
                  f"{indent}  if (t{a} < 0 || t{a} % {s} != 0 || t{a} / {s} >= {size}) continue;",
                  f"{indent}  const int i{a} = t{a} / {s};"]
    return lines


def _source(x_shape: tuple[int, ...], w_shape: tuple[int, ...], out: tuple[int, ...], window: Window, group: int,
            has_bias: bool, dtype: DType, layout: str, weight_layout: str) -> str:
    c, sizes = x_shape[1], x_shape[2:]
    oc, outs = out[1], out[2:]
    ocg, kernel = w_shape[1], w_shape[2:]
    rank, cg = len(sizes), c // group
    begins = [int(p) for p in window.pads[:rank]]
    total = math.prod(out)
    index, suffix = index_type(max(upper(total), upper(math.prod(x_shape))))
    off = "long long" if max(upper(math.prod(x_shape)), math.prod(w_shape)) >= 2**31 else "int"
    positions = [f"const {index} o{a} = r % {c_int(outs[a], suffix)}; r /= {c_int(outs[a], suffix)};"
                 for a in reversed(range(rank))]
    channel = f"const {index} oc = r % {c_int(oc, suffix)}; r /= {c_int(oc, suffix)};"
    spatial = _row_major(f"({off})i0", [(sizes[a], f"i{a}") for a in range(1, rank)])
    if layout == "NCHW":
        coords = [*positions, channel]
        pixel = f"(({off})r * {c} + ({off})g * {cg}) * {math.prod(sizes)} + ({spatial})"
        x_step = math.prod(sizes)
    else:
        coords = [channel, *positions]
        pixel = f"(({off})r * {math.prod(sizes)} + {spatial}) * {c} + ({off})g * {cg}"
        x_step = 1
    taps = [(kernel[a], f"k{a}") for a in range(rank)]
    if weight_layout == "NCHW":  # (C, OC/g, *kernel)
        tap = _row_major(f"({off})g * {cg} * {ocg} + ({off})og", taps)
    else:  # (C, *kernel, OC/g)
        tap = _row_major(f"({off})g * {cg}", [*taps, (ocg, f"({off})og")])
    w_step = ocg * math.prod(kernel)
    storage = C.storage_type(dtype)
    product = f"{C.load(f'xp[c * {x_step}]', dtype)} * {C.load(f'wp[c * {w_step}]', dtype)}"
    full = ", ".join(f"p{a} = (int)o{a} + {begins[a]}" for a in range(rank))
    body = [
        f"{index} r = i;", *coords,  # r is now the sample
        f"const int g = (int)(oc / {ocg}{suffix}), og = (int)(oc % {ocg}{suffix});",
        f"const int {full};  // position in the full result",
        "float acc = 0.0f;",
        *_tap_loops(window, sizes),
    ]
    indent = "  " * rank
    body += [f"{indent}const {storage}* xp = in0 + {pixel};",
             f"{indent}const {storage}* wp = weight + {tap};",
             f"{indent}#pragma unroll 4",
             f"{indent}for (int c = 0; c < {cg}; ++c) acc += {product};"]
    body += ["  " * a + "}" for a in reversed(range(rank))]
    if has_bias:
        body.append(f"acc += {C.load('bias[oc]', dtype)};")
    body.append(f"out0[i] = {C.store('acc', dtype)};")
    params = [f"const {storage}* __restrict__ in0", f"const {storage}* __restrict__ weight"]
    if has_bias:
        params.append(f"const {storage}* __restrict__ bias")
    params.append(f"{storage}* __restrict__ out0")
    comment = (f"// rtxrt ConvTranspose kernel: {layout} X {_dims(x_shape)} W {list(w_shape)} ({weight_layout}) "
               f"group {group} -> {_dims(out)} strides {list(window.strides)} dilations {list(window.dilations)} "
               f"pads {[int(p) for p in window.pads]} "
               f"{dtype.short}")
    return loop_kernel([comment, C.PRELUDE.strip()], params, grid_stride_loop(index, suffix, total), body)
