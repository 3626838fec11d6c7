"""Generated 2-D ConvTranspose kernels (any group, strides, pads, auto_pad, output_padding,
output_shape, dilations, optional bias), X and Y stored NCHW or NHWC (``layout``) as fp32,
fp16 or bf16, computed in fp32.

A direct gather: one thread per output element (NHWC: neighbouring threads take
neighbouring output channels). Output position ``o`` along an axis is position ``o + pad``
of the full result, which input position ``i`` reaches through tap ``k`` when
``o + pad = i * stride + k * dilation``; so for each tap the thread checks divisibility,
finds ``i``, and adds the products over the group's input channels, in fp32, plus the bias,
rounding once to the storage type. Output positions no tap reaches (output_padding, an
output_shape longer than the full result) get the bias alone.

W is stored as ONNX has it, (C, OC/group, kH, kW) (``weight_layout`` "NCHW"), or packed as
(C, kH, kW, OC/group) ("NHWC": the layout pass's NHWC ConvTranspose weight; neighbouring
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
LAYOUTS = ("NCHW", "NHWC")
WEIGHT_LAYOUTS = ("NCHW", "NHWC")  # (C, OC/g, kH, kW) as ONNX has it, or packed (C, kH, kW, OC/g)
_ONNX = ("", "ai.onnx")


def pack_conv_transpose_weights(w: np.ndarray) -> np.ndarray:
    """ONNX ConvTranspose weights (C, OC/group, kH, kW) as the packed (C, kH, kW, OC/group)."""
    return np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1)))


def conv_transpose_output_shape(node: Node, x_shape: Sequence[int], w_shape: Sequence[int]) -> tuple[int, ...]:
    """The logical output shape (N, OC, *spatial) of ConvTranspose ``node`` on a logical
    ``x_shape`` with ONNX-layout weights ``w_shape`` (any spatial rank)."""
    return _output_shape(node, tuple(int(d) for d in x_shape), tuple(int(d) for d in w_shape),
                         _window(node, x_shape, w_shape))


def conv_transpose_kernel(node: Node, inputs: Sequence[TensorType | None], dtype: DType, layout: str = "NCHW",
                          weight_layout: str = "NCHW") -> KernelSource:
    """The kernel computing 2-D ConvTranspose ``node`` on inputs of these static logical
    types (X (N, C, H, W), W (C, OC/group, kH, kW), optional B (OC,)), every tensor stored
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
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise CodegenError(f"{node.label}: generated ConvTranspose is 2-D, got X {list(x_shape)} and W {list(w_shape)}")
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
    stored_w = w_shape if weight_layout == "NCHW" else (w_shape[0], *w_shape[2:], w_shape[1])
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
    return shape if layout == "NCHW" else (shape[0], shape[2], shape[3], shape[1])


def _source(x_shape: tuple[int, ...], w_shape: tuple[int, ...], out: tuple[int, ...], window: Window, group: int,
            has_bias: bool, dtype: DType, layout: str, weight_layout: str) -> str:
    c, h, w = x_shape[1:]
    oc, oh, ow = out[1:]
    ocg, kh, kw = w_shape[1:]
    cg = c // group
    (sh, sw), (dh, dw) = window.strides, window.dilations
    top, left = (int(p) for p in window.pads[:2])
    total = math.prod(out)
    index, suffix = index_type(max(upper(total), upper(math.prod(x_shape))))
    off = "long long" if max(upper(math.prod(x_shape)), math.prod(w_shape)) >= 2**31 else "int"
    if layout == "NCHW":
        coords = [f"const {index} ox = r % {c_int(ow, suffix)}; r /= {c_int(ow, suffix)};",
                  f"const {index} oy = r % {c_int(oh, suffix)}; r /= {c_int(oh, suffix)};",
                  f"const {index} o = r % {c_int(oc, suffix)}; r /= {c_int(oc, suffix)};"]
        pixel = f"(({off})r * {c} + ({off})g * {cg}) * {h * w} + (({off})iy * {w} + ix)"
        x_step = h * w
    else:
        coords = [f"const {index} o = r % {c_int(oc, suffix)}; r /= {c_int(oc, suffix)};",
                  f"const {index} ox = r % {c_int(ow, suffix)}; r /= {c_int(ow, suffix)};",
                  f"const {index} oy = r % {c_int(oh, suffix)}; r /= {c_int(oh, suffix)};"]
        pixel = f"(({off})r * {h * w} + ({off})iy * {w} + ix) * {c} + ({off})g * {cg}"
        x_step = 1
    if weight_layout == "NCHW":  # (C, OC/g, kH, kW)
        tap = f"((({off})g * {cg} * {ocg} + ({off})og) * {kh} + a) * {kw} + b"
        w_step = ocg * kh * kw
    else:  # (C, kH, kW, OC/g)
        tap = f"((({off})g * {cg} * {kh} + a) * {kw} + b) * {ocg} + ({off})og"
        w_step = kh * kw * ocg
    storage = C.storage_type(dtype)
    product = f"{C.load(f'xp[k * {x_step}]', dtype)} * {C.load(f'wp[k * {w_step}]', dtype)}"
    body = [
        f"{index} r = i;", *coords,  # r is now the sample
        f"const int g = (int)(o / {ocg}{suffix}), og = (int)(o % {ocg}{suffix});",
        f"const int py = (int)oy + {top}, px = (int)ox + {left};  // position in the full result",
        "float acc = 0.0f;",
        "#pragma unroll",
        f"for (int a = 0; a < {kh}; ++a) {{",
        f"  const int ty = py - a * {dh};",
        f"  if (ty < 0 || ty % {sh} != 0 || ty / {sh} >= {h}) continue;",
        f"  const int iy = ty / {sh};",
        "  #pragma unroll",
        f"  for (int b = 0; b < {kw}; ++b) {{",
        f"    const int tx = px - b * {dw};",
        f"    if (tx < 0 || tx % {sw} != 0 || tx / {sw} >= {w}) continue;",
        f"    const int ix = tx / {sw};",
        f"    const {storage}* xp = in0 + {pixel};",
        f"    const {storage}* wp = weight + {tap};",
        "    #pragma unroll 4",
        f"    for (int k = 0; k < {cg}; ++k) acc += {product};",
        "  }",
        "}",
    ]
    if has_bias:
        body.append(f"acc += {C.load('bias[o]', dtype)};")
    body.append(f"out0[i] = {C.store('acc', dtype)};")
    params = [f"const {storage}* __restrict__ in0", f"const {storage}* __restrict__ weight"]
    if has_bias:
        params.append(f"const {storage}* __restrict__ bias")
    params.append(f"{storage}* __restrict__ out0")
    comment = (f"// rtxrt ConvTranspose kernel: {layout} X {_dims(x_shape)} W {list(w_shape)} ({weight_layout}) "
               f"group {group} -> {_dims(out)} strides {[sh, sw]} dilations {[dh, dw]} "
               f"pads {[int(p) for p in window.pads]} "
               f"{dtype.short}")
    return loop_kernel([comment, C.PRELUDE.strip()], params, grid_stride_loop(index, suffix, total), body)
