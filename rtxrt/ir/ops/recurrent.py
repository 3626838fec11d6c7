"""Recurrent layers (RNN, GRU, LSTM) and the stateful sequence operators of recent opsets
(LinearAttention, CausalConvWithState)."""
from __future__ import annotations

from ..graph import Dim, TensorType
from .onnx_fallback import onnx_inference
from .facts import STATS
from .registry import InferenceContext, register

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _infer_recurrent(states: int):
    """Y is [seq, directions, batch, hidden] and each final state [directions, batch, hidden];
    layout 1 puts batch first in all of them."""

    def infer(ctx: InferenceContext) -> list[TensorType | None]:
        x, r = ctx.type(0), ctx.type(2)
        if x.rank not in (None, 3):
            raise ctx.fail(f"X must have rank 3, got {x}")
        direction = ctx.attr("direction", "forward")
        if direction not in _DIRECTIONS:
            raise ctx.fail(f"direction must be forward, reverse or bidirectional, got {direction!r}")
        directions = _DIRECTIONS[direction]
        hidden: Dim = ctx.attr("hidden_size")
        if hidden is None and r.shape is not None and len(r.shape) == 3:
            hidden = r.shape[2]
        batch_first = ctx.attr("layout", 0) == 1
        seq, batch = (None, None) if x.shape is None else x.shape[:2]
        if batch_first:
            seq, batch = batch, seq
            y, h = (batch, seq, directions, hidden), (batch, directions, hidden)
        else:
            y, h = (seq, directions, batch, hidden), (directions, batch, hidden)
        return [TensorType(x.dtype, y)] + [TensorType(x.dtype, h)] * states

    return infer


register("RNN", _infer_recurrent(1), inputs=(3, 6), outputs=(0, 2), facts=STATS)
register("GRU", _infer_recurrent(1), inputs=(3, 6), outputs=(0, 2), facts=STATS)
register("LSTM", _infer_recurrent(2), inputs=(3, 8), outputs=(0, 3), facts=STATS)
register("LinearAttention", onnx_inference, inputs=(3, 6), outputs=2, facts=STATS)
register("CausalConvWithState", onnx_inference, inputs=(2, 4), outputs=2, facts=STATS)
