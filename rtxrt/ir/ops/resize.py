"""Image resampling operators: Resize, Upsample (its deprecated predecessor) and Col2Im."""
from __future__ import annotations

import numpy as np

from ..graph import Dim, TensorType
from .infer_helpers import int_values, normalize_axis
from .facts import Layout, PLAIN
from .registry import InferenceContext, register
from .tensor import dim_div, dims_product

# Resize-10 takes (X, scales); from opset 11 it takes (X, roi, scales, sizes).
ROI_INPUT_SINCE = 11
# Upsample's scales became an input in opset 9.
UPSAMPLE_SCALES_INPUT_SINCE = 9


def scaled_dim(dim: Dim, scale: float) -> Dim:
    """floor(dim * scale), computed in float32 as ONNX's shape inference and runtimes do."""
    if isinstance(dim, int):
        return int(np.floor(np.float32(dim) * np.float32(scale)))
    return dim if scale == 1 else None


def fit_sizes(dims: list[int], sizes: list[int], policy: str) -> tuple[list[int], float | None]:
    """Output sizes of the resized axes under keep_aspect_ratio_policy, and the one scale they
    share (None for "stretch", where each axis has its own)."""
    if policy == "stretch":
        return list(sizes), None
    ratios = [s / d for s, d in zip(sizes, dims)]
    if policy == "not_larger":
        scale = min(ratios)
    elif policy == "not_smaller":
        scale = max(ratios)
    else:
        raise ValueError(f"unknown keep_aspect_ratio_policy {policy!r}")
    return [int(scale * d + 0.5) for d in dims], scale  # round half up


def resize_input_positions(opset: int) -> tuple[int, int | None]:
    """Positions of the scales and sizes inputs of Resize at this opset."""
    return (1, None) if opset < ROI_INPUT_SINCE else (2, 3)


def _given(ctx: InferenceContext, i: int | None) -> tuple[bool, list | None]:
    """(present, value): an empty tensor stands for an omitted scales or sizes input."""
    if i is None or not ctx.has_input(i):
        return False, None
    value = ctx.constant(i)
    if value is None:
        t = ctx.type(i)
        return t.shape != (0,), None
    return value.size > 0, value.reshape(-1).tolist()


def _resized_shape(ctx: InferenceContext, scales_at: int, sizes_at: int | None) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    rank = len(t.shape)
    axes = [normalize_axis(ctx, a, rank) for a in ctx.attr("axes", range(rank))]
    has_scales, scales = _given(ctx, scales_at)
    has_sizes, sizes = _given(ctx, sizes_at)
    if has_scales == has_sizes:
        raise ctx.fail("exactly one of scales and sizes must be given")
    given = scales if has_scales else sizes
    if given is not None and len(given) != len(axes):
        raise ctx.fail(f"{'scales' if has_scales else 'sizes'} {given} must have one entry per axis {axes}")
    out = list(t.shape)
    if given is None:
        for a in axes:
            out[a] = None
    elif has_scales:
        for a, s in zip(axes, scales):
            if s <= 0:
                raise ctx.fail(f"scales {scales} must be positive")
            out[a] = scaled_dim(t.shape[a], s)
    else:
        dims = [t.shape[a] for a in axes]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch" and not all(isinstance(d, int) for d in dims):
            fitted = [None] * len(axes)
        else:
            try:
                fitted = fit_sizes(dims, [int(s) for s in sizes], policy)[0]
            except ValueError as exc:
                raise ctx.fail(str(exc)) from None
        for a, d in zip(axes, fitted):
            out[a] = d
    return [TensorType(t.dtype, tuple(out))]


def _infer_resize(ctx: InferenceContext) -> list[TensorType | None]:
    return _resized_shape(ctx, *resize_input_positions(ctx.opset))


def _infer_upsample(ctx: InferenceContext) -> list[TensorType | None]:
    if ctx.opset < UPSAMPLE_SCALES_INPUT_SINCE:
        t = ctx.type(0)
        scales = ctx.attr("scales")
        if t.shape is None or scales is None:
            return [TensorType(t.dtype, None if t.shape is None else (None,) * len(t.shape))]
        return [TensorType(t.dtype, tuple(scaled_dim(d, s) for d, s in zip(t.shape, scales)))]
    return _resized_shape(ctx, 1, None)


def _infer_col2im(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    image, block = int_values(ctx, 1), int_values(ctx, 2)
    if t.shape is not None and len(t.shape) != 3:
        raise ctx.fail(f"input must be 3-D (N, C * prod(block_shape), L), got {t}")
    if image is not None and block is not None and len(image) != len(block):
        raise ctx.fail(f"image_shape {image} and block_shape {block} differ in length")
    n, columns = (None, None) if t.shape is None else t.shape[:2]
    channels = None if block is None else dim_div(columns, int(dims_product(block)))
    if image is None:
        count = ctx.type(1).shape
        spatial = None if count is None or not isinstance(count[0], int) else (None,) * count[0]
        return [TensorType(t.dtype, None if spatial is None else (n, channels, *spatial))]
    return [TensorType(t.dtype, (n, channels, *image))]


register("Resize", _infer_resize, inputs=(1, 4), facts=PLAIN.but(layout=Layout.PIXELS, exact_inputs=(1, 2)))
register("Upsample", _infer_upsample, inputs=(1, 2), facts=PLAIN.but(exact_inputs=(1,)))
register("Col2Im", _infer_col2im, inputs=3, facts=PLAIN)


def source_coordinates(transform: str, out_len: int, in_len: int, scale: float, length: float,
                       box: tuple[float, float] | None = None) -> np.ndarray:
    """Where each output position of one resized axis samples the input (float64), as ONNX's
    coordinate_transformation_mode says. ``length`` is the output length before flooring
    (in_len * scale), which the transforms use; ``box`` is the axis's roi (start, end), which
    only tf_crop_and_resize reads. Shared by the reference backend and the CUDA codegen."""
    x = np.arange(out_len, dtype=np.float64)
    if transform == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if transform == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / length)
        return offset + (x + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if length > 1 else np.zeros_like(x)
    if transform == "align_corners":
        return x * (in_len - 1) / (length - 1) if length > 1 else np.zeros_like(x)
    if transform == "asymmetric":
        return x / scale
    if transform == "tf_crop_and_resize" and box is not None:
        start, end = box
        if length > 1:
            return start * (in_len - 1) + x * (end - start) * (in_len - 1) / (length - 1)
        return np.full_like(x, 0.5 * (start + end) * (in_len - 1))
    raise ValueError(f"unknown coordinate_transformation_mode {transform!r}")
