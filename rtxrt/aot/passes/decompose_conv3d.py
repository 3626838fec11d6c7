"""A 3-D Conv as one 2-D Conv, so that it runs on the GPU's tuned 2-D machinery (implicit
GEMM on tensor cores, cuBLAS, grouped and depthwise kernels) instead of a direct kernel.

For X (N, C, D, H, W) and W (OC, C/G, KD, KH, KW), output depth ``od`` reads input depths
``od * sd + kd * dd - pad`` for kd < KD. Padding the depth, then one strided Slice per kd
(all OD long: each ends ``(KD - 1 - kd) * dd`` before the end) and a Concat along the
channels gives, for every output depth, the KD depth taps side by side as channels:

    X' (N, KD·C, OD, H, W)  -Transpose->  (N, OD, KD·C, H, W)  -merge->  (N·OD, KD·C, H, W)
    Y' = Conv2D(X', W')     W' (OC, KD·C/G, KH, KW): W transposed to (OC, KD, C/G, KH, KW)
    Y' (N·OD, OC, OH, OW)   -split->  (N, OD, OC, OH, OW)  -Transpose->  Y (N, OC, OD, OH, OW)

With G groups the channels are ordered (group, kd, channel of the group) so that each group
of X' holds its own channels' taps: X is split to (N, G, C/G, D, H, W) first and the Concat
runs along the group's channels. The 2-D Conv's im2col then multiplies X' by KH·KW, which is
the 3-D im2col's KD·KH·KW, so the copies before it cost a fraction of the GEMM's traffic.

Left as they are: auto_pad SAME over a depth, height or width that is not static (the
padding is unknown), weights whose shape is not static, and opsets before 10 where a depth
stride is needed (Slice had no steps).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...ir.graph import Dim, Node
from ...ir.ops.conv import sliding_window
from ...ir.rewrite import GraphIndex
from .decompose_emitter import merge_dims, split_dims

if TYPE_CHECKING:
    from .decompose_emitter import Emitter

_SLICE_STEPS_SINCE = 10
_PAD_INPUTS_SINCE = 11
_TO_END = np.iinfo(np.int64).max


def conv_3d(e: "Emitter", index: GraphIndex, node: Node) -> str | None:
    t = e.type_of(node.inputs[0])
    weights = index.constant(node.inputs[1])
    w_type = e.type_of(node.inputs[1]) if weights is None else None
    w_shape = weights.shape if weights is not None else (w_type.shape if w_type is not None else None)
    if t is None or not t.dtype.is_float or t.rank != 5 or w_shape is None or len(w_shape) != 5 or \
            not all(isinstance(d, int) for d in w_shape):
        return None
    oc, cg, kd, kh, kw = (int(d) for d in w_shape)
    kernel_shape = node.attr("kernel_shape")
    if kernel_shape and [int(k) for k in kernel_shape] != [kd, kh, kw]:
        return None
    try:
        window = sliding_window(node.attrs, t.shape[2:], (kd, kh, kw))
    except ValueError:
        return None  # the checker's error is the user's, not this pass's
    if window.pads is None:
        return None
    (sd, sh, sw), (dd, dh, dw) = window.strides, window.dilations
    pd0, ph0, pw0, pd1, ph1, pw1 = window.pads
    group = int(node.attr("group", 1) or 1)
    n, c, depth, h, w = t.shape  # C is C/G · G, the weights say
    od = window.out[0]
    if sd > 1 and e.opset < _SLICE_STEPS_SINCE:
        return None

    x = node.inputs[0]
    if pd0 or pd1:
        x = _pad_depth(e, x, pd0, pd1)
    padded_depth = depth + pd0 + pd1 if isinstance(depth, int) else None
    taps = kd > 1 or sd > 1 or pd0 or pd1
    if taps:
        grouped = group > 1 and kd > 1
        shape = [n, c, padded_depth, h, w]
        if grouped:  # (N, G, C/G, D, H, W): the taps of a group's channels side by side
            x, shape = split_dims(e, x, shape, {1: [group, cg]})
        depth_axis = 3 if grouped else 2
        slices = [_slice(e, x, depth_axis, k * dd, (kd - 1 - k) * dd, sd) for k in range(kd)]
        x = e.op("Concat", slices, {"axis": depth_axis - 1}) if kd > 1 else slices[0]
        if grouped:
            merged = e.names(f"{e.prefix}/taps")
            merge_dims(e, x, [n, group, kd * cg, od, h, w], [[0], [1, 2], [3], [4], [5]], merged)
            x = merged
    x = e.op("Transpose", [x], {"perm": [0, 2, 1, 3, 4]})  # (N, OD, KD·C, H, W)
    batched = e.names(f"{e.prefix}/batched")
    merge_dims(e, x, [n, od, kd * cg * group, h, w], [[0, 1], [2], [3], [4]], batched)

    inputs = [batched, _weights_2d(e, node.inputs[1], weights, (oc, cg, kd, kh, kw))]
    if len(node.inputs) > 2 and node.inputs[2]:
        inputs.append(node.inputs[2])
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "dilations": [dh, dw], "pads": [ph0, pw0, ph1, pw1],
             "group": group}
    y = e.op("Conv", inputs, attrs, name=node.name)
    y = _unbatch(e, y, node.inputs[0], [n, od], [oc, *window.out[1:]])
    e.op("Transpose", [y], {"perm": [0, 2, 1, 3, 4]}, output=node.outputs[0])
    return "3-D Conv→2-D Conv over depth taps"


def _pad_depth(e: "Emitter", x: str, begin: int, end: int) -> str:
    pads = [0, 0, begin, 0, 0, 0, 0, end, 0, 0]
    if e.opset >= _PAD_INPUTS_SINCE:
        return e.op("Pad", [x, e.constant(np.array(pads, np.int64), "pads", shared=True)])
    return e.op("Pad", [x], {"pads": pads})


def _slice(e: "Emitter", x: str, axis: int, start: int, from_end: int, step: int) -> str:
    """Positions ``start, start + step, ...`` of ``axis`` that lie ``from_end`` or more before
    its end: every tap's slice is OD long without knowing the depth."""
    end = -from_end if from_end else _TO_END
    if e.opset < _SLICE_STEPS_SINCE:
        return e.op("Slice", [x], {"starts": [start], "ends": [end], "axes": [axis]})
    ints = [e.constant(np.array([v], np.int64), "slice", shared=True) for v in (start, end, axis, step)]
    return e.op("Slice", [x, *ints])


def _weights_2d(e: "Emitter", name: str, weights: np.ndarray | None, shape: tuple[int, ...]) -> str:
    """W (OC, C/G, KD, KH, KW) as (OC, KD·C/G, KH, KW), taps ordered as X' has them."""
    oc, cg, kd, kh, kw = shape
    if weights is not None:
        return e.constant(np.transpose(weights, (0, 2, 1, 3, 4)).reshape(oc, kd * cg, kh, kw), "weights")
    return e.reshape(e.op("Transpose", [name], {"perm": [0, 2, 1, 3, 4]}), [oc, kd * cg, kh, kw])


def _unbatch(e: "Emitter", y: str, x_name: str, batch: list[Dim], rest: list[Dim]) -> str:
    """Y' (N·OD, OC, OH, OW) as (N, OD, OC, OH, OW); ``batch`` is [N, OD], ``rest`` [OC, OH, OW]."""
    known = [d if isinstance(d, int) else None for d in batch]
    if known.count(None) <= 1:
        return split_dims(e, y, [None, *rest], {0: known})[0]
    # Both vary: N from X's shape (computed when the plan is made), OD inferred, the rest copied
    # (Y' gains a placeholder axis so that 0 copies them at their index).
    batch = e.op("Gather", [e.op("Shape", [x_name]), e.constant(np.array([0], np.int64), "indices", shared=True)],
                 {"axis": 0})
    spec = e.op("Concat", [batch, e.constant(np.array([-1, 0, 0, 0], np.int64), "shape", shared=True)], {"axis": 0})
    return e.op("Reshape", [e.unsqueeze(y, [1]), spec])
