"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization,
GroupNormalization, RMSNormalization, LpNormalization, MeanVarianceNormalization, LRN."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import TensorType
from .infer_helpers import normalize_axis, same_as_input
from .facts import Layout, STATS
from .registry import InferenceContext, register


def _infer_batch_norm(ctx: InferenceContext) -> list[TensorType | None]:
    """Y is like X; training mode also returns the updated running mean and variance (and,
    before opset 9, the saved batch mean and variance)."""
    x = ctx.type(0)
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.fail(f"X must be (N, C, ...), got shape {tuple(x.shape)}")
    return [x, ctx.type(3), ctx.type(4), ctx.type(3), ctx.type(4)][: len(ctx.node.outputs)]


def _infer_layer_norm(ctx: InferenceContext) -> list[TensorType | None]:
    """Mean and InvStdDev keep the leading axes before ``axis`` and are 1 along the others,
    in the stash type."""
    x = ctx.type(0)
    stash = DType(int(ctx.attr("stash_type", DType.FLOAT32)))
    stats = None
    if x.shape is not None:
        axis = normalize_axis(ctx, int(ctx.attr("axis", -1)), len(x.shape))
        stats = (*x.shape[:axis], *[1] * (len(x.shape) - axis))
    return [x, TensorType(stash, stats), TensorType(stash, stats)][: len(ctx.node.outputs)]


def _infer_along_axis(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    if x.shape is not None:
        normalize_axis(ctx, int(ctx.attr("axis", -1)), len(x.shape))
    return [x]


def _infer_group_norm(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    groups = ctx.attr("num_groups")
    if groups is None or groups < 1:
        raise ctx.fail(f"num_groups must be a positive count, got {groups}")
    if x.shape is not None and isinstance(x.shape[1], int) and x.shape[1] % groups:
        raise ctx.fail(f"{x.shape[1]} channels do not split into {groups} groups")
    return [x]


register("BatchNormalization", _infer_batch_norm, inputs=5, outputs=(1, 5), facts=STATS.but(layout=Layout.SPATIAL))
register("InstanceNormalization", same_as_input(), inputs=3, facts=STATS.but(layout=Layout.SPATIAL))
register("LayerNormalization", _infer_layer_norm, inputs=(2, 3), outputs=(1, 3), facts=STATS)
register("GroupNormalization", _infer_group_norm, inputs=3, facts=STATS.but(layout=Layout.SPATIAL))
register("RMSNormalization", _infer_along_axis, inputs=2, facts=STATS)
register("LpNormalization", _infer_along_axis, facts=STATS)
register("MeanVarianceNormalization", same_as_input(), facts=STATS)
register("LRN", same_as_input(), facts=STATS.but(layout=Layout.SPATIAL))
