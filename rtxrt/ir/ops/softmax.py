"""Softmax, LogSoftmax, Hardmax and the losses built on them: NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss."""
from __future__ import annotations

from ..graph import TensorType
from .infer_helpers import normalize_axis
from .facts import Layout, STATS, WIDE
from .registry import InferenceContext, register


def _infer_softmax(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is not None:  # opset 13 made the default axis -1 (it was 1)
        normalize_axis(ctx, ctx.attr("axis", -1 if ctx.opset >= 13 else 1), len(t.shape))
    return [t]


def _infer_loss(ctx: InferenceContext) -> list[TensorType | None]:
    """Scores (N, C, d1..dk) and targets (N, d1..dk) give a loss of the targets' shape, or a
    scalar once reduced; SoftmaxCrossEntropyLoss may also return the log-probabilities."""
    scores, target = ctx.type(0), ctx.type(1)
    if scores.shape is not None and len(scores.shape) < 2:
        raise ctx.fail(f"scores must be (N, C, ...), got shape {tuple(scores.shape)}")
    if scores.shape is not None and target.shape is not None and len(target.shape) != len(scores.shape) - 1:
        raise ctx.fail(f"targets of shape {tuple(target.shape)} do not fit scores of shape {tuple(scores.shape)}")
    if ctx.has_input(2) and ctx.type(2).dtype != scores.dtype:
        raise ctx.fail(f"weights must be {scores.dtype.short}, got {ctx.type(2).dtype.short}")
    reduction = ctx.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise ctx.fail(f"unknown reduction {reduction!r}")
    loss = TensorType(scores.dtype, target.shape if reduction == "none" else ())
    return [loss, scores]


register("Softmax", _infer_softmax, facts=STATS.but(layout=Layout.CHANNEL_AXIS))
register("LogSoftmax", _infer_softmax, facts=STATS.but(layout=Layout.CHANNEL_AXIS))
register("Hardmax", _infer_softmax, facts=STATS)
register("NegativeLogLikelihoodLoss", _infer_loss, inputs=(2, 3), facts=WIDE.but(function_body=True))
register("SoftmaxCrossEntropyLoss", _infer_loss, inputs=(2, 3), outputs=(1, 2), facts=WIDE.but(function_body=True))
