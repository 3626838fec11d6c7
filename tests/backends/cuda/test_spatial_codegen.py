"""Generated InstanceNormalization/GroupNormalization, Resize and ConvTranspose kernels
(rtxrt/jit/codegen/normalization.py, resize.py, conv_transpose.py) without a GPU: every kernel
of ``CASES`` compiles with NVRTC for every supported arch and declares the buffers and output
shape the reference backend computes; Resize's sampling tables (nearest and linear) and tap
tables (cubic with either cubic_coeff_a and exclude_outside, linear and cubic antialias,
tf_crop_and_resize in every mode with rois partly outside and extrapolation_value), applied
in numpy, give the reference's results (nearest exactly); ConvTranspose's output shape and
weight packing agree with the reference; what the generators do not cover is a CodegenError
naming the node. tests/backends/cuda/test_fake_resize.py runs the Resize kernels themselves
on the fake device.

``CASES`` is the catalogue tests/backends/cuda/test_gpu_spatial.py runs on the device: the UNet's own
cases (InstanceNormalization on [1, 4, H*W] as torch exports GroupNorm, on [1, 16, 64, 64],
Resize nearest x2 and linear half_pixel x2, ConvTranspose k2 s2), odd sizes (7x9 pixels,
channel counts not a multiple of 32), both layouts and the three storage types; Resize cubic
and tf_crop_and_resize as the catalogue test lists them; ConvTranspose
also over 1 and 3 spatial axes (a 3-D UNet's up-step; groups, strides, dilations, pads,
output_padding, auto_pad and output_shape at once).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.ir.ops.resize import fit_sizes, scaled_dim
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen import ctypes_map as C
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.conv_transpose_source import (
    conv_transpose_kernel,
    conv_transpose_output_shape,
    pack_conv_transpose_weights,
)
from rtxrt.backends.cuda.ops.normalization_source import normalization_kernel
from rtxrt.backends.cuda.ops.resize_source import (
    CROP,
    ROUNDING,
    TRANSFORMS,
    AxisTaps,
    resize_axis_maps,
    resize_axis_taps,
    resize_kernel,
)

from .helpers import compile_for_every_arch

F32, F16, BF16 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16
INT64 = DType.INT64


@dataclass(frozen=True)
class Case:
    """One kernel to generate: ``node`` on logical ``inputs`` (float32 types; ``dtype`` is the
    storage type), X and Y stored in ``layout``."""

    id: str
    node: Node
    inputs: tuple[TensorType, ...]
    dtype: DType
    layout: str = "NCHW"
    opset: int = 21
    scales: tuple[float, ...] | None = None  # Resize: the constant scales input
    sizes: tuple[int, ...] | None = None  # Resize: the constant sizes input
    roi: tuple[float, ...] | None = None  # Resize: the constant roi input (tf_crop_and_resize)
    weight_layout: str = "NCHW"  # ConvTranspose

    @property
    def op(self) -> str:
        return self.node.op_type

    def output_shape(self) -> tuple[int, ...]:
        """The logical output shape, as shape inference gives it to the backend."""
        x, w = self.inputs[0].shape, self.inputs[1].shape if len(self.inputs) > 1 else None
        if self.op == "ConvTranspose":
            return conv_transpose_output_shape(self.node, x, w)
        if self.op != "Resize":
            return tuple(x)
        out = list(x)
        axes = self.node.attr("axes") or range(len(x))
        policy = self.node.attr("keep_aspect_ratio_policy", "stretch")
        fitted = self.sizes if self.scales else fit_sizes([x[a] for a in axes], list(self.sizes), policy)[0]
        for a, value in zip(axes, self.scales or fitted):
            out[a] = scaled_dim(x[a], value) if self.scales else value
        return tuple(out)

    def kernel(self) -> KernelSource:
        if self.op == "Resize":
            return resize_kernel(self.node, self.inputs, self.output_shape(), self.dtype, self.layout,
                                 scales=self.scales, sizes=self.sizes, roi=self.roi, opset=self.opset)
        if self.op == "ConvTranspose":
            return conv_transpose_kernel(self.node, self.inputs, self.dtype, self.layout, self.weight_layout)
        return normalization_kernel(self.node, self.inputs, self.dtype, self.layout, opset=self.opset)

    def tap_tables(self) -> tuple[AxisTaps, AxisTaps]:
        """Resize's row and column tap tables, as a tap kernel bakes them."""
        return resize_axis_taps(self.node, self.inputs[0].shape, self.output_shape(), scales=self.scales,
                                sizes=self.sizes, roi=self.roi, opset=self.opset)

    def reference_extras(self) -> list[np.ndarray | None]:
        """Resize's inputs after X, as the reference kernel takes them."""
        if self.op != "Resize":
            return []
        scales = None if self.scales is None else np.array(self.scales, np.float32)
        sizes = None if self.sizes is None else np.array(self.sizes, np.int64)
        roi = None if self.roi is None else np.array(self.roi, np.float32)
        return [scales] if self.opset < 11 else [roi, scales, sizes]


def norm(op: str, shape: tuple[int, ...], dtype: DType, layout: str = "NCHW", *, opset: int = 21,
         suffix: str = "", **attrs) -> Case:
    groups = attrs.get("num_groups", shape[1])
    params = (groups,) if op == "GroupNormalization" and opset < 21 else (shape[1],)
    name = "InstanceNorm" if op == "InstanceNormalization" else f"GroupNorm{opset}_g{groups}"
    node = Node(op, ["x", "scale", "bias"], ["y"], attrs, name=name.lower())
    return Case(f"{name}{suffix}-{'x'.join(map(str, shape))}-{layout}-{dtype.short}", node,
                (TensorType(F32, shape), TensorType(F32, params), TensorType(F32, params)), dtype, layout, opset)


def resize(label: str, shape: tuple[int, ...], dtype: DType, layout: str = "NCHW", *, scales=None, sizes=None,
           roi=None, opset: int = 21, **attrs) -> Case:
    if opset < 11:
        names = ["x", "scales"]
    else:
        names = ["x", "roi" if roi is not None else "", *(["scales"] if scales is not None else ["", "sizes"])]
    node = Node("Resize", names, ["y"], attrs, name=label)
    given = (TensorType(F32, (len(scales),)) if scales is not None else TensorType(INT64, (len(sizes),)))
    types = (TensorType(F32, shape), given)
    return Case(f"Resize-{label}-{'x'.join(map(str, shape))}-{layout}-{dtype.short}", node, types, dtype, layout,
                opset, None if scales is None else tuple(scales), None if sizes is None else tuple(sizes),
                None if roi is None else tuple(roi))


def convt(label: str, x: tuple[int, ...], w: tuple[int, ...], dtype: DType, layout: str = "NCHW",
          weight_layout: str = "NCHW", *, bias: bool = True, **attrs) -> Case:
    node = Node("ConvTranspose", ["x", "w", "b" if bias else ""], ["y"], attrs, name=label)
    types = [TensorType(F32, x), TensorType(F32, w)]
    if bias:
        types.append(TensorType(F32, (w[1] * attrs.get("group", 1),)))
    return Case(f"ConvTranspose-{label}-{layout}-w{weight_layout}-{dtype.short}", node, tuple(types), dtype, layout,
                weight_layout=weight_layout)


UNET_UP = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
NEAREST_X2 = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
LINEAR_X2 = {"mode": "linear", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "floor"}

CASES: list[Case] = [
    # InstanceNormalization: the UNet's GroupNorm(4, C) exports as InstanceNormalization on [1, 4, C/4*H*W]
    norm("InstanceNormalization", (1, 4, 16384), F32, suffix="-unet", epsilon=1e-5),
    norm("InstanceNormalization", (1, 4, 4096), F16, suffix="-unet", epsilon=1e-5),
    norm("InstanceNormalization", (1, 4, 8192), BF16, suffix="-unet", epsilon=1e-5),
    norm("InstanceNormalization", (1, 16, 64, 64), F32),
    norm("InstanceNormalization", (1, 16, 64, 64), F16, "NHWC"),
    norm("InstanceNormalization", (1, 16, 64, 64), BF16, "NHWC"),
    norm("InstanceNormalization", (2, 37, 7, 9), F32, "NHWC", epsilon=1e-3),
    norm("InstanceNormalization", (2, 37, 7, 9), BF16),
    norm("InstanceNormalization", (2, 3, 4, 5, 6), F16),
    # GroupNormalization: per-channel (21) and per-group (18) scale; NHWC tiles of whole groups
    norm("GroupNormalization", (2, 64, 9, 7), F32, num_groups=4),
    norm("GroupNormalization", (1, 64, 16, 16), F16, "NHWC", opset=18, num_groups=4),
    norm("GroupNormalization", (2, 40, 7, 9), BF16, "NHWC", num_groups=8),  # 6 groups a tile, then 2
    norm("GroupNormalization", (1, 96, 5, 7), F32, "NHWC", num_groups=1),  # 96 channels x 2 rows of threads
    norm("GroupNormalization", (1, 300, 2, 2), F32, "NHWC", num_groups=1),  # more channels than threads
    norm("GroupNormalization", (2, 32, 33, 31), F16, opset=18, num_groups=8, epsilon=1e-3),
    norm("GroupNormalization", (2, 6, 50), BF16, num_groups=3),
    # Resize: the UNet's nearest and bilinear x2, then each transform and rounding mode
    resize("nearest_x2", (1, 32, 16, 16), F32, scales=(1, 1, 2, 2), **NEAREST_X2),
    resize("nearest_x2", (1, 32, 16, 16), F16, "NHWC", scales=(1, 1, 2, 2), **NEAREST_X2),
    resize("linear_half_pixel_x2", (1, 32, 32, 32), F32, scales=(1, 1, 2, 2), **LINEAR_X2),
    resize("linear_half_pixel_x2", (1, 32, 32, 32), BF16, "NHWC", scales=(1, 1, 2, 2), **LINEAR_X2),
    resize("linear_align_corners_sizes", (2, 5, 7, 9), F16, sizes=(2, 5, 12, 20), mode="linear",
           coordinate_transformation_mode="align_corners"),
    resize("linear_pytorch_half_pixel_to_1", (1, 3, 9, 7), F32, "NHWC", sizes=(1, 3, 4, 1), mode="linear",
           coordinate_transformation_mode="pytorch_half_pixel"),
    resize("linear_asymmetric", (1, 3, 7, 9), F32, scales=(1, 1, 1.5, 0.75), mode="linear",
           coordinate_transformation_mode="asymmetric"),
    resize("linear_half_pixel_down", (2, 3, 9, 7), BF16, scales=(1, 1, 0.5, 0.5), mode="linear"),
    resize("nearest_half_pixel_round_prefer_ceil", (1, 33, 7, 9), F32, "NHWC", scales=(1, 1, 0.5, 3),
           nearest_mode="round_prefer_ceil"),
    resize("nearest_align_corners_sizes", (1, 2, 7, 9), BF16, sizes=(1, 2, 13, 4),
           coordinate_transformation_mode="align_corners"),
    resize("nearest_pytorch_half_pixel_ceil_rows_only", (1, 35, 6, 5), F16, "NHWC", scales=(1, 1, 2.5, 1),
           coordinate_transformation_mode="pytorch_half_pixel", nearest_mode="ceil"),
    resize("nearest_asymmetric_two_thirds", (1, 2, 9, 9), F32, scales=(1, 1, 2 / 3, 2 / 3),
           coordinate_transformation_mode="asymmetric"),
    resize("opset10_nearest", (1, 2, 5, 5), F32, scales=(1, 1, 2, 3), opset=10),
    resize("axes_half_pixel_symmetric", (1, 4, 5, 7), F16, "NHWC", scales=(1.7, 0.6), opset=19, axes=[2, 3],
           mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
    # Resize cubic: up and down, a = -0.75 (ONNX) and -0.5 (TF), exclude_outside, each transform
    resize("cubic_half_pixel_x2", (1, 3, 8, 8), F32, scales=(1, 1, 2, 2), mode="cubic"),
    resize("cubic_half_pixel_x2", (1, 5, 8, 8), F16, "NHWC", scales=(1, 1, 2, 2), mode="cubic"),
    resize("cubic_A_n0p5_exclude_outside_down", (1, 3, 9, 7), BF16, scales=(1, 1, 0.6, 0.5), mode="cubic",
           cubic_coeff_a=-0.5, exclude_outside=1),
    resize("cubic_A_n0p5_exclude_outside_up", (2, 3, 5, 4), F32, "NHWC", scales=(1, 1, 2.5, 3), mode="cubic",
           cubic_coeff_a=-0.5, exclude_outside=1),
    resize("cubic_align_corners_sizes", (2, 3, 7, 9), F16, "NHWC", sizes=(2, 3, 12, 5), mode="cubic",
           coordinate_transformation_mode="align_corners"),
    resize("cubic_asymmetric_exclude_outside", (1, 3, 7, 9), F32, scales=(1, 1, 1.5, 0.75), mode="cubic",
           coordinate_transformation_mode="asymmetric", exclude_outside=1),
    resize("cubic_pytorch_half_pixel_to_1", (1, 3, 9, 7), F32, "NHWC", sizes=(1, 3, 4, 1), mode="cubic",
           coordinate_transformation_mode="pytorch_half_pixel"),
    resize("cubic_axes_half_pixel_symmetric", (1, 4, 5, 7), F16, scales=(1.7, 0.6), opset=19, axes=[2, 3],
           mode="cubic", coordinate_transformation_mode="half_pixel_symmetric"),
    resize("cubic_rows_only", (1, 6, 5, 6), BF16, "NHWC", scales=(1, 1, 2.5, 1), mode="cubic"),
    # antialias (opset 18) widens the filter by 1/scale when downsampling
    resize("cubic_antialias_down", (1, 4, 16, 12), F32, "NHWC", scales=(1, 1, 0.5, 0.3), mode="cubic", antialias=1),
    resize("linear_antialias_down_sizes", (1, 3, 13, 11), F16, sizes=(1, 3, 5, 4), mode="linear", antialias=1),
    # keep_aspect_ratio_policy (opset 18): the listed axes share the scale that fits the sizes
    resize("cubic_not_smaller", (1, 3, 6, 9), F32, sizes=(12, 4), opset=18, axes=[2, 3], mode="cubic",
           keep_aspect_ratio_policy="not_smaller"),
    resize("nearest_not_larger", (1, 2, 6, 9), F16, "NHWC", sizes=(20, 5), opset=18, axes=[3, 2],
           keep_aspect_ratio_policy="not_larger"),
    # tf_crop_and_resize: rois partly outside the image, extrapolation_value, each mode
    resize("crop_linear_extrapolate", (1, 3, 8, 10), F32, sizes=(1, 3, 6, 7), roi=(0, 0, -0.2, 0.1, 1, 1, 0.7, 1.3),
           mode="linear", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0),
    resize("crop_cubic_tf", (2, 5, 9, 8), F16, "NHWC", sizes=(2, 5, 7, 11), roi=(0, 0, 0.1, -0.25, 1, 1, 1.2, 0.9),
           mode="cubic", cubic_coeff_a=-0.5, coordinate_transformation_mode="tf_crop_and_resize",
           extrapolation_value=-0.5),
    resize("crop_cubic_exclude_outside_scales", (1, 3, 7, 9), F32, "NHWC", scales=(1, 1, 1.5, 0.8),
           roi=(0, 0, -0.3, 0.2, 1, 1, 0.9, 1.1), mode="cubic", exclude_outside=1,
           coordinate_transformation_mode="tf_crop_and_resize"),
    resize("crop_nearest_axes", (1, 3, 7, 9), BF16, sizes=(8, 5), roi=(-0.1, 0.2, 1.15, 0.6), opset=18, axes=[3, 2],
           nearest_mode="round_prefer_ceil", coordinate_transformation_mode="tf_crop_and_resize",
           extrapolation_value=2.5),
    resize("crop_linear_to_1", (1, 2, 6, 6), F16, "NHWC", sizes=(1, 2, 1, 3), roi=(0, 0, 0.2, -0.5, 1, 1, 0.6, 0.5),
           mode="linear", coordinate_transformation_mode="tf_crop_and_resize"),
    # ConvTranspose: the UNet's up-step, then strides, pads, dilations, output_padding, groups
    convt("unet_k2s2", (1, 64, 16, 16), (64, 32, 2, 2), F32, **UNET_UP),
    convt("unet_k2s2", (1, 64, 16, 16), (64, 32, 2, 2), F16, "NHWC", "NHWC", **UNET_UP),
    convt("unet_k2s2", (1, 64, 16, 16), (64, 32, 2, 2), BF16, "NHWC", "NCHW", **UNET_UP),
    convt("odd_s2x3_pads_outpad_dil", (2, 5, 7, 9), (5, 3, 3, 3), F32, "NHWC", "NHWC", bias=False,
          strides=[2, 3], pads=[1, 0, 2, 1], output_padding=[1, 2], dilations=[2, 1]),
    convt("depthwise_k3s2p1_outpad", (1, 33, 7, 9), (33, 1, 3, 3), F16, group=33, strides=[2, 2],
          pads=[1, 1, 1, 1], output_padding=[1, 1]),
    convt("depthwise_k4s2p1", (2, 24, 5, 6), (24, 1, 4, 4), BF16, "NHWC", "NHWC", group=24, strides=[2, 2],
          pads=[1, 1, 1, 1]),
    convt("same_upper_s2", (1, 6, 5, 4), (6, 4, 3, 3), F32, auto_pad="SAME_UPPER", strides=[2, 2]),
    convt("same_lower_s3_dil", (1, 4, 5, 5), (4, 3, 4, 4), F32, "NHWC", auto_pad="SAME_LOWER", strides=[3, 3],
          dilations=[1, 2]),
    convt("output_shape_past_full", (1, 3, 4, 4), (3, 2, 3, 3), F32, "NHWC", "NHWC", strides=[2, 2],
          output_shape=[10, 11]),
    convt("group2", (1, 6, 5, 5), (6, 2, 3, 3), F16, "NCHW", "NHWC", group=2, pads=[1, 0, 0, 1]),
    # ConvTranspose over 3 spatial axes (a 3-D UNet's up-step, then every attribute at once) and over 1
    convt("unet3d_k2s2", (1, 16, 4, 6, 6), (16, 8, 2, 2, 2), F32, "NCHW", "NHWC", strides=[2, 2, 2]),
    convt("3d_group3_s213_dil_pads_outpad", (2, 6, 3, 5, 4), (6, 2, 3, 2, 3), F32, "NCHW", "NHWC", group=3,
          strides=[2, 1, 3], dilations=[1, 2, 1], pads=[1, 0, 2, 0, 1, 1], output_padding=[1, 0, 2]),
    convt("3d_group3_s213_dil_pads_outpad", (2, 6, 3, 5, 4), (6, 2, 3, 2, 3), F16, "NCHW", "NHWC", group=3,
          strides=[2, 1, 3], dilations=[1, 2, 1], pads=[1, 0, 2, 0, 1, 1], output_padding=[1, 0, 2]),
    convt("3d_same_upper_s2", (1, 5, 3, 4, 5), (5, 3, 3, 3, 2), BF16, "NCHW", "NCHW", auto_pad="SAME_UPPER",
          strides=[2, 2, 2]),
    convt("3d_output_shape_channels_last", (1, 3, 2, 3, 3), (3, 4, 2, 3, 3), F16, "NHWC", "NHWC", bias=False,
          strides=[2, 2, 1], output_shape=[5, 8, 6]),
    convt("1d_s2_pads_outpad_dil", (2, 5, 9), (5, 3, 3), F32, "NCHW", "NHWC", strides=[2], pads=[1, 0],
          output_padding=[1], dilations=[2]),
    convt("1d_group5", (1, 5, 7), (5, 2, 4), F16, "NHWC", "NCHW", group=5, strides=[3], pads=[2, 1]),
]


def test_the_catalogue_covers_each_op_layout_and_storage_type():
    assert len({c.id for c in CASES}) == len(CASES)
    for op in ("InstanceNormalization", "GroupNormalization", "Resize", "ConvTranspose"):
        assert {(c.layout, c.dtype) for c in CASES if c.op == op} >= {("NCHW", F32), ("NHWC", F16)}, op
        assert {c.dtype for c in CASES if c.op == op} == {F32, F16, BF16}, op
    assert {c.weight_layout for c in CASES if c.op == "ConvTranspose"} == {"NCHW", "NHWC"}
    assert {len(c.inputs[0].shape) - 2 for c in CASES if c.op == "ConvTranspose"} == {1, 2, 3}
    resized = [c.node for c in CASES if c.op == "Resize"]
    assert {n.attr("coordinate_transformation_mode", "half_pixel") for n in resized} == set(TRANSFORMS)
    assert {n.attr("nearest_mode", "round_prefer_floor") for n in resized if n.attr("mode", "nearest") == "nearest"} \
        == set(ROUNDING)


def test_the_catalogue_covers_cubic_and_tf_crop_and_resize_as_the_brief_lists():
    cubic = [c for c in CASES if c.op == "Resize" and c.node.attr("mode") == "cubic"]
    assert {c.node.attr("coordinate_transformation_mode", "half_pixel") for c in cubic} == set(TRANSFORMS)
    assert {(c.layout, c.dtype) for c in cubic} >= {("NCHW", F32), ("NHWC", F16)}
    assert {c.dtype for c in cubic} == {F32, F16, BF16}
    assert {c.node.attr("cubic_coeff_a", -0.75) for c in cubic} == {-0.75, -0.5}
    assert {c.node.attr("exclude_outside", 0) for c in cubic} == {0, 1}
    assert {c.node.attr("antialias", 0) for c in cubic} == {0, 1}
    ratios = [c.output_shape()[2] / c.inputs[0].shape[2] for c in cubic]
    assert min(ratios) < 1 < max(ratios), "cubic up and down"
    cropped = [c for c in CASES if c.op == "Resize" and c.node.attr("coordinate_transformation_mode") == CROP]
    assert {c.node.attr("mode", "nearest") for c in cropped} == {"nearest", "linear", "cubic"}
    assert {c.layout for c in cropped} == {"NCHW", "NHWC"} and {c.dtype for c in cropped} == {F32, F16, BF16}
    for c in cropped:  # every roi reaches outside the image, so extrapolation_value shows
        rows, cols = c.tap_tables()
        assert rows.outside.any() or cols.outside.any(), c.id
    assert {c.node.attr("extrapolation_value", 0.0) for c in cropped} >= {0.0, 10.0, -0.5}


def test_every_kernel_compiles_for_every_supported_arch():
    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    report = [f"{arch}: {s:.1f} s" for arch, _, s in compile_for_every_arch(kernels, 512)]
    print(f"\n{len(CASES)} cases -> {len(kernels)} kernels; " + "; ".join(report))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_buffers_are_the_physical_shapes_the_reference_computes(case: Case):
    kernel = case.kernel()
    x = np.random.default_rng(0).uniform(-1, 1, case.inputs[0].shape).astype(np.float32)
    others = [np.ones(t.shape, np.float32) for t in case.inputs[1:] if case.op != "Resize"]
    want = find_kernel(case.op)(case.node, case.opset, None).run(x, *others, *case.reference_extras())
    assert case.output_shape() == want.shape

    def physical(shape):
        return tuple(shape) if case.layout == "NCHW" else (shape[0], *shape[2:], shape[1])

    assert [(a.role, a.index) for a in kernel.args] == (
        [(BufferRole.IN, i) for i in range(len(case.inputs) if case.op != "Resize" else 1)] + [(BufferRole.OUT, 0)])
    assert kernel.inputs[0].shape == physical(case.inputs[0].shape)
    assert kernel.outputs[0].shape == physical(want.shape)
    assert all(a.dtype == case.dtype for a in kernel.args)
    if case.op == "ConvTranspose":
        w = case.inputs[1].shape
        assert kernel.inputs[1].shape == (w if case.weight_layout == "NCHW" else (w[0], *w[2:], w[1]))
    elif case.op != "Resize":
        assert [a.shape for a in kernel.inputs[1:]] == [tuple(t.shape) for t in case.inputs[1:]]
    assert "#include" not in kernel.source and kernel.name in kernel.source
    assert kernel.launch.grid() > 0


def test_normalization_blocks_cover_groups_nchw_and_tiles_of_whole_groups_nhwc():
    def find(prefix):
        return next(c for c in CASES if c.id.startswith(prefix)).kernel().launch

    unet = find("InstanceNorm-unet-1x4x16384")
    assert (unet.grid(), unet.block) == (4, 1024)  # one block per (sample, channel); long rows get 1024 threads
    assert find("InstanceNorm-2x37x7x9-NHWC").grid() == 2 * 2  # 32 channels, then 5
    assert find("GroupNorm21_g8-2x40x7x9-NHWC").grid() == 2 * 2  # 6 groups of 5 channels, then 2 groups
    assert find("GroupNorm21_g4-2x64x9x7-NCHW").grid() == 2 * 4


# ---------------------------------------------------------------- Resize tables


def emulate(x: np.ndarray, node: Node, out: tuple[int, ...], scales, opset: int = 21) -> np.ndarray:
    """What the generated kernel computes, in numpy: the tables applied as the kernel applies them."""
    rows, cols = resize_axis_maps(node, x.shape, out, scales=scales, opset=opset)
    if node.attr("mode", "nearest") == "nearest":
        return x[:, :, rows.lo][:, :, :, cols.lo]
    wide = x.astype(np.float64)
    fy, fx = rows.frac.astype(np.float64)[:, None], cols.frac.astype(np.float64)
    top = wide[:, :, rows.lo][:, :, :, cols.lo] * (1 - fx) + wide[:, :, rows.lo][:, :, :, cols.hi] * fx
    bottom = wide[:, :, rows.hi][:, :, :, cols.lo] * (1 - fx) + wide[:, :, rows.hi][:, :, :, cols.hi] * fx
    return top * (1 - fy) + bottom * fy


RESIZES = [("scales", (1, 1, 2, 2)), ("scales", (1, 1, 0.5, 1.5)), ("scales", (1, 1, 2 / 3, 3)),
           ("scales", (1, 1, 1, 0.3)), ("sizes", (1, 2, 11, 4)), ("sizes", (1, 2, 1, 9))]
POSITIONS = [t for t in TRANSFORMS if t != CROP]  # the transforms of the output position alone
TABLE_CASES = [{"mode": "nearest", "coordinate_transformation_mode": t, "nearest_mode": r}
               for t in POSITIONS for r in ROUNDING]
TABLE_CASES += [{"mode": "linear", "coordinate_transformation_mode": t} for t in POSITIONS]


@pytest.mark.parametrize("attrs", TABLE_CASES, ids=lambda a: "-".join(a.values()))
@pytest.mark.parametrize("given, value", RESIZES, ids=lambda v: str(v))
def test_resize_tables_reproduce_the_reference(attrs, given, value):
    x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 7, 9)).astype(np.float32)
    node = Node("Resize", ["x", "", "scales" if given == "scales" else "", "sizes" if given == "sizes" else ""],
                ["y"], attrs, name="r")
    scales = np.array(value, np.float32) if given == "scales" else None
    sizes = np.array(value, np.int64) if given == "sizes" else None
    want = find_kernel("Resize")(node, 21, None).run(x, None, scales, sizes)
    got = emulate(x, node, want.shape, None if scales is None else [float(s) for s in value])
    if attrs["mode"] == "nearest":
        np.testing.assert_array_equal(got, want)
    else:  # the kernel's weights are float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def emulate_taps(x: np.ndarray, rows: AxisTaps, cols: AxisTaps, extrapolation: float) -> np.ndarray:
    """What the tap kernel computes, in numpy: each output sums its rows' and columns' runs
    of taps by their float32 weights; outside the input (tf_crop_and_resize), extrapolation."""
    ys = rows.start[:, None] + np.arange(rows.width)
    xs = cols.start[:, None] + np.arange(cols.width)
    taps = x.astype(np.float64)[:, :, ys][:, :, :, :, xs]  # (N, C, OH, KY, OW, KX)
    got = np.einsum("ncykxl,yk,xl->ncyx", taps, rows.weights.astype(np.float64), cols.weights.astype(np.float64))
    return np.where(rows.outside[:, None] | cols.outside[None, :], extrapolation, got)


ROI = (0, 0, -0.2, 0.1, 1, 1, 0.8, 1.3)  # rows from before the image, columns past it
FILTERS = [{}, {"cubic_coeff_a": -0.5, "exclude_outside": 1}, {"antialias": 1}]
TAP_CASES = [{"mode": m, "coordinate_transformation_mode": t, **f} for m in ("linear", "cubic") for t in TRANSFORMS
             for f in FILTERS]
TAP_CASES += [{"mode": "nearest", "coordinate_transformation_mode": CROP, "nearest_mode": r} for r in ROUNDING]


@pytest.mark.parametrize("attrs", TAP_CASES, ids=lambda a: "-".join(str(v) for v in a.values()))
@pytest.mark.parametrize("given, value", RESIZES, ids=lambda v: str(v))
def test_resize_tap_tables_reproduce_the_reference(attrs, given, value):
    """Cubic, linear's antialias and exclude_outside, and tf_crop_and_resize (rois partly
    outside, extrapolation_value) in every mode: the tap tables give the reference's values,
    nearest exactly; the others within float32 weights (each within 2^-24 of the reference's
    float64 weight; their magnitudes sum to less than 2 along an axis)."""
    x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 7, 9)).astype(np.float32)
    attrs = {**attrs, "extrapolation_value": 2.5}
    node = Node("Resize", ["x", "roi", "scales" if given == "scales" else "", "sizes" if given == "sizes" else ""],
                ["y"], attrs, name="r")
    scales = np.array(value, np.float32) if given == "scales" else None
    sizes = np.array(value, np.int64) if given == "sizes" else None
    roi = np.array(ROI, np.float32) if attrs["coordinate_transformation_mode"] == CROP else None
    want = find_kernel("Resize")(node, 21, None).run(x, roi, scales, sizes)
    rows, cols = resize_axis_taps(node, x.shape, want.shape, scales=None if scales is None else list(scales),
                                  sizes=None if sizes is None else list(sizes), roi=None if roi is None else list(roi))
    got = emulate_taps(x, rows, cols, 2.5)
    if attrs["mode"] == "nearest":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_tap_tables_are_one_run_of_taps_per_output_inside_the_input():
    """Upsampling cubic reads 4 taps a row; clamping at the edges folds taps onto the edge
    pixel, so the run never leaves the input; antialias at scale 0.3 widens the filter
    (Keys' support 2 stretched by 1/0.3 on either side)."""
    node = Node("Resize", ["x", "", "scales"], ["y"], {"mode": "cubic"}, name="r")
    rows, cols = resize_axis_taps(node, (1, 1, 7, 20), (1, 1, 14, 6), scales=[1, 1, 2, 0.3])
    assert rows.width == 4 and (rows.start >= 0).all() and (rows.start + rows.width <= 7).all()
    np.testing.assert_allclose(rows.weights.sum(axis=1), 1, rtol=1e-6)  # Keys' kernel sums to 1
    assert not rows.outside.any()
    wide, _ = resize_axis_taps(_node(node, antialias=1), (1, 1, 20, 20), (1, 1, 6, 6), scales=[1, 1, 0.3, 0.3])
    assert wide.width > 12 and (wide.start + wide.width <= 20).all()


def test_nearest_ignores_antialias_and_exclude_outside_as_the_reference_does():
    x = TensorType(F32, (1, 2, 7, 9))
    plain = Node("Resize", ["x", "", "scales"], ["y"], {"mode": "nearest"}, name="r")
    kernel = resize_kernel(plain, [x], (1, 2, 3, 4), F32, scales=[1, 1, 0.5, 0.5])
    assert "rtx_wy" not in kernel.source
    for attrs in ({"antialias": 1}, {"exclude_outside": 1}):
        assert resize_kernel(_node(plain, **attrs), [x], (1, 2, 3, 4), F32, scales=[1, 1, 0.5, 0.5]).source \
            == kernel.source


def test_linear_without_antialias_exclude_outside_or_crop_keeps_its_two_tap_kernel():
    """Linear keeps its kernel (and its cache key) where it needs no tap tables."""
    node = Node("Resize", ["x", "", "scales"], ["y"], {"mode": "linear"}, name="r")
    kernel = resize_kernel(node, [TensorType(F32, (1, 2, 7, 9))], (1, 2, 14, 18), F32, scales=[1, 1, 2, 2])
    assert "rtx_fy" in kernel.source and "rtx_wy" not in kernel.source
    renormalised = resize_kernel(_node(node, exclude_outside=1), [TensorType(F32, (1, 2, 7, 9))], (1, 2, 14, 18), F32,
                                 scales=[1, 1, 2, 2])
    assert "rtx_wy" in renormalised.source and "exclude_outside=1" in renormalised.source


def test_extrapolation_value_is_stored_rounded_once_to_the_storage_type():
    node = Node("Resize", ["x", "roi", "", "sizes"], ["y"], {"mode": "linear", "coordinate_transformation_mode": CROP,
                                                             "extrapolation_value": 0.1}, name="r")
    x = TensorType(F32, (1, 1, 4, 4))
    for dtype, stored in ((F32, C.literal(np.float32(0.1), F32)), (F16, "0x2e66u"), (BF16, "0x3dcdu")):
        source = resize_kernel(node, [x], (1, 1, 3, 3), dtype, roi=[0, 0, -0.5, 0, 1, 1, 1, 1]).source
        assert f"{stored}; continue;" in source, (dtype, stored)


def test_empty_scales_mean_the_sizes_gave_the_output_shape():
    node = Node("Resize", ["x", "", "scales", "sizes"], ["y"], {"mode": "linear"}, name="r")
    x = TensorType(F32, (1, 2, 7, 9))
    assert resize_kernel(node, [x], (1, 2, 11, 4), F32, scales=[]).name == \
        resize_kernel(node, [x], (1, 2, 11, 4), F32).name


def test_resize_10_samples_asymmetrically_rounding_down():
    x = np.random.default_rng(2).uniform(-1, 1, (1, 1, 5, 5)).astype(np.float32)
    node = Node("Resize", ["x", "scales"], ["y"], {"mode": "nearest"}, name="r10")
    want = find_kernel("Resize")(node, 10, None).run(x, np.array([1, 1, 2.5, 3], np.float32))
    np.testing.assert_array_equal(emulate(x, node, want.shape, [1, 1, 2.5, 3], opset=10), want)


# ---------------------------------------------------------------- ConvTranspose geometry


@pytest.mark.parametrize("x, w, attrs", [
    ((1, 64, 16, 16), (64, 32, 2, 2), UNET_UP),
    ((2, 5, 7, 9), (5, 3, 3, 3), {"strides": [2, 3], "pads": [1, 0, 2, 1], "output_padding": [1, 2],
                                  "dilations": [2, 1]}),
    ((1, 6, 5, 4), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 6, 5, 4), (6, 4, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2], "output_padding": [1, 1]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 11]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [1, 2, 8, 7]}),  # with N and C
    ((1, 6, 5, 5), (6, 2, 3, 3), {"group": 3}),
    ((2, 4, 9), (4, 5, 3), {"strides": [2], "pads": [1, 2]}),  # 1-D: the helper is rank-generic
    ((1, 2, 3, 4, 5), (2, 2, 2, 3, 2), {"strides": [1, 2, 3], "output_padding": [0, 1, 1]}),
])
def test_conv_transpose_output_shape_is_the_reference_result_shape(x, w, attrs):
    node = Node("ConvTranspose", ["x", "w"], ["y"], attrs, name="up")
    rng = np.random.default_rng(3)
    want = find_kernel("ConvTranspose")(node, 21, None).run(rng.uniform(-1, 1, x), rng.uniform(-1, 1, w))
    assert conv_transpose_output_shape(node, x, w) == want.shape


def test_packed_weights_put_the_output_channels_last():
    w = np.arange(5 * 3 * 2 * 4, dtype=np.float32).reshape(5, 3, 2, 4)
    packed = pack_conv_transpose_weights(w)
    assert packed.shape == (5, 2, 4, 3) and packed.flags.c_contiguous
    for ic, o, a, b in np.ndindex(*w.shape):
        assert packed[ic, a, b, o] == w[ic, o, a, b]


# ---------------------------------------------------------------- what is not covered


def _types(*shapes, dtype=F32):
    return [TensorType(dtype, s) for s in shapes]


X4, C8 = (1, 8, 6, 6), (8,)
NORM = Node("InstanceNormalization", ["x", "s", "b"], ["y"], name="bad")
GROUP = Node("GroupNormalization", ["x", "s", "b"], ["y"], {"num_groups": 3}, name="bad")
NEAREST = Node("Resize", ["x", "", "scales"], ["y"], name="bad")
CROP_NODE = Node("Resize", ["x", "roi", "scales"], ["y"], {"mode": "cubic", "coordinate_transformation_mode": CROP},
                 name="bad")
UP = Node("ConvTranspose", ["x", "w", "b"], ["y"], {"strides": [2, 2]}, name="bad")


def _node(base: Node, **attrs) -> Node:
    return Node(base.op_type, list(base.inputs), list(base.outputs), {**base.attrs, **attrs}, name=base.name)


@pytest.mark.parametrize("make, message", [
    (lambda: normalization_kernel(Node("Relu", ["x"], ["y"], name="bad"), _types(X4), F32), "not Instance"),
    (lambda: normalization_kernel(NORM, _types(X4, C8, C8), DType.FLOAT64), "not float64"),
    (lambda: normalization_kernel(NORM, _types(X4, C8, C8), F32, "NCWH"), "layout"),
    (lambda: normalization_kernel(NORM, _types(("n", 8, 6, 6), C8, C8), F32), "static"),
    (lambda: normalization_kernel(NORM, _types(X4, C8), F32), "static X, scale and bias"),
    (lambda: normalization_kernel(NORM, _types((4, 8), C8, C8), F32), "must be"),
    (lambda: normalization_kernel(NORM, _types((1, 8, 36), C8, C8), F32, "NHWC"), "NHWC normalization is 4-D"),
    (lambda: normalization_kernel(NORM, _types(X4, (4,), C8), F32), r"scale must have shape \[8\]"),
    (lambda: normalization_kernel(GROUP, _types(X4, C8, C8), F32), "does not divide"),
    (lambda: normalization_kernel(_node(GROUP, num_groups=4, stash_type=10), _types(X4, C8, C8), F16), "stash"),
    (lambda: normalization_kernel(_node(GROUP, num_groups=4), _types(X4, C8, C8), F32, opset=18),
     r"scale must have shape \[4\]"),
    (lambda: resize_kernel(NORM, _types(X4), X4, F32), "is not a Resize"),
    (lambda: resize_kernel(NEAREST, _types(X4), X4, DType.INT8, scales=(1, 1, 1, 1)), "not int8"),
    (lambda: resize_kernel(NEAREST, _types(X4), X4, F32, "CHWN", scales=(1, 1, 1, 1)), "layout"),
    (lambda: resize_kernel(NEAREST, _types((1, 8, 6)), (1, 8, 12), F32, scales=(1, 1, 2)), "4-D"),
    (lambda: resize_kernel(NEAREST, _types(("n", 8, 6, 6)), X4, F32, scales=(1, 1, 1, 1)), "static"),
    (lambda: resize_kernel(_node(NEAREST, mode="area"), _types(X4), (1, 8, 12, 12), F32, scales=(1, 1, 2, 2)),
     "mode 'area'"),
    (lambda: resize_kernel(_node(NEAREST, coordinate_transformation_mode="tf_half_pixel_for_nn"), _types(X4),
                           (1, 8, 12, 12), F32, scales=(1, 1, 2, 2)), "tf_half_pixel_for_nn"),
    (lambda: resize_kernel(_node(NEAREST, keep_aspect_ratio_policy="not_larger"), _types(X4), (1, 8, 12, 12), F32),
     "needs constant sizes"),
    (lambda: resize_kernel(_node(NEAREST, keep_aspect_ratio_policy="fill"), _types(X4), (1, 8, 12, 12), F32,
                           sizes=(1, 8, 12, 12)), "unknown keep_aspect_ratio_policy"),
    (lambda: resize_kernel(_node(NEAREST, keep_aspect_ratio_policy="not_smaller", axes=[2, 3]), _types(X4),
                           (1, 8, 12, 13), F32, sizes=(12, 24)), "does not follow from sizes"),
    (lambda: resize_kernel(_node(CROP_NODE), _types(X4), (1, 8, 12, 12), F32, scales=(1, 1, 2, 2)),
     "needs a constant roi of 8 values"),
    (lambda: resize_kernel(_node(CROP_NODE, axes=[2, 3]), _types(X4), (1, 8, 12, 12), F32, scales=(2, 2),
                           roi=(0, 0, 1, 1, 1, 1)), "needs a constant roi of 4 values"),
    (lambda: resize_kernel(CROP_NODE, _types(X4), (1, 8, 12, 12), F32, scales=(1, 1, 2, 2),
                           roi=(0, 0.5, 0, 0, 1, 1, 1, 1)), "axis 1"),  # crops the channels
    (lambda: resize_kernel(_node(NEAREST, axes=[2, 6]), _types(X4), (1, 8, 12, 12), F32, scales=(2, 2)),
     "do not fit a 4-D input"),
    (lambda: resize_axis_maps(_node(NEAREST, mode="cubic"), X4, (1, 8, 12, 12), scales=(1, 1, 2, 2)), "tap tables"),
    (lambda: resize_kernel(NEAREST, _types(X4), (1, 16, 12, 12), F32, scales=(1, 2, 2, 2)), "axis 1"),
    (lambda: resize_kernel(NEAREST, _types(X4), (2, 8, 6, 6), F32), "axis 0"),
    (lambda: resize_kernel(NEAREST, _types(X4), (1, 8, 12, 11), F32, scales=(1, 1, 2, 2)), "does not follow"),
    (lambda: resize_kernel(NEAREST, _types(X4), (1, 8, 12, 12), F32, scales=(2, 2)), "do not fit axes"),
    (lambda: conv_transpose_kernel(NORM, _types(X4, (8, 4, 2, 2)), F32), "is not a ConvTranspose"),
    (lambda: conv_transpose_kernel(UP, _types(X4, (8, 4, 2, 2), (4,)), DType.FLOAT64), "not float64"),
    (lambda: conv_transpose_kernel(UP, _types(X4, (8, 4, 2, 2), (4,)), F32, "NHWC", "OIHW"), "weight_layout"),
    (lambda: conv_transpose_kernel(UP, _types(("n", 8, 6, 6), (8, 4, 2, 2), (4,)), F32), "static"),
    (lambda: conv_transpose_kernel(UP, _types(X4, (8, 4, 2, 2)), F32), "static"),  # B named, no type
    (lambda: conv_transpose_kernel(UP, _types((1, 8, 6), (8, 4, 2, 2), (4,)), F32), "same rank"),
    (lambda: conv_transpose_kernel(UP, _types((1, 8), (8, 4), (4,)), F32), "same rank"),
    (lambda: conv_transpose_kernel(UP, _types(X4, (6, 4, 2, 2), (4,)), F32), "does not fit"),
    (lambda: conv_transpose_kernel(_node(UP, group=3), _types(X4, (8, 4, 2, 2), (12,)), F32), "does not fit"),
    (lambda: conv_transpose_kernel(_node(UP, kernel_shape=[3, 3]), _types(X4, (8, 4, 2, 2), (4,)), F32),
     "kernel_shape"),
    (lambda: conv_transpose_kernel(UP, _types(X4, (8, 4, 2, 2), (8,)), F32), r"B must have shape \[4\]"),
    (lambda: conv_transpose_kernel(_node(UP, pads=[9, 9, 9, 9]), _types(X4, (8, 4, 2, 2), (4,)), F32),
     "negative output size"),
    (lambda: conv_transpose_kernel(_node(UP, dilations=[0, 1]), _types(X4, (8, 4, 2, 2), (4,)), F32),
     "dilations must be positive"),
])
def test_what_is_not_covered_is_a_codegen_error_naming_the_node(make, message):
    with pytest.raises(CodegenError, match=message) as error:
        make()
    assert re.search(r"node 'bad'", str(error.value)), str(error.value)


def test_an_empty_batch_has_nothing_to_launch():
    assert norm("InstanceNormalization", (0, 4, 8, 8), F32).kernel().launch.grid() == 0
    assert resize("empty", (0, 4, 8, 8), F32, scales=(1, 1, 2, 2), **NEAREST_X2).kernel().launch.grid() == 0
    assert convt("empty", (0, 4, 8, 8), (4, 2, 2, 2), F32, **UNET_UP).kernel().launch.grid() == 0
    assert math.prod(norm("InstanceNormalization", (0, 4, 8, 8), F32, "NHWC").kernel().outputs[0].shape) == 0
