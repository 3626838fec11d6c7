"""Attention (opset 23+) and RotaryEmbedding."""
from __future__ import annotations

from ..graph import Dim, TensorType
from .infer_helpers import same_as_input
from .facts import GEMM, PLAIN
from .registry import InferenceContext, register


def _add(a: Dim, b: Dim) -> Dim:
    if b == 0:
        return a
    return a + b if isinstance(a, int) and isinstance(b, int) else None


def _heads_split(ctx: InferenceContext, hidden: Dim, heads: int, what: str) -> Dim:
    """Size of one head of a 3-D input whose last axis holds ``heads`` of them."""
    if not isinstance(hidden, int):
        return None
    if hidden % heads:
        raise ctx.fail(f"{what} hidden size {hidden} does not split into {heads} heads")
    return hidden // heads


def _infer_attention(ctx: InferenceContext) -> list[TensorType | None]:
    """Inputs are (batch, heads, seq, head_size), or (batch, seq, heads * head_size) with the
    head counts given as attributes. Outputs: Y like Q with V's head size, present key and
    value (past + new along the sequence axis), and the (batch, q_heads, q_seq, kv_seq) scores."""
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    for i, t in ((1, k), (2, v)):
        if t.dtype != q.dtype:
            raise ctx.fail(f"input {i} is {t.dtype.short} but Q is {q.dtype.short}")
    ranks = {t.rank for t in (q, k, v)} - {None}
    if len(ranks) > 1 or ranks - {3, 4}:
        raise ctx.fail(f"Q, K and V must all be 3-D or all 4-D, got ranks {[t.rank for t in (q, k, v)]}")
    if q.shape is None or k.shape is None or v.shape is None:
        return [TensorType(q.dtype, None) for _ in ctx.node.outputs]
    q_heads, kv_heads = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    if ranks == {3}:
        if not q_heads or not kv_heads:
            raise ctx.fail("3-D inputs need the q_num_heads and kv_num_heads attributes")
        batch, q_seq, kv_seq = q.shape[0], q.shape[1], k.shape[1]
        k_head = _heads_split(ctx, k.shape[2], kv_heads, "K")
        v_head = _heads_split(ctx, v.shape[2], kv_heads, "V")
        _heads_split(ctx, q.shape[2], q_heads, "Q")
        y_shape: tuple[Dim, ...] = (batch, q_seq, v_head * q_heads if isinstance(v_head, int) else None)
    else:
        batch, q_heads, q_seq = q.shape[:3]
        kv_heads, kv_seq, k_head = k.shape[1:]
        v_head = v.shape[3]
        y_shape = (batch, q_heads, q_seq, v_head)
    if isinstance(q_heads, int) and isinstance(kv_heads, int) and q_heads % kv_heads:
        raise ctx.fail(f"{q_heads} query heads do not group over {kv_heads} key/value heads")
    past: Dim = 0
    if ctx.has_input(4):
        past_key = ctx.type(4)
        past = past_key.shape[2] if past_key.shape is not None and len(past_key.shape) == 4 else None
    total = _add(kv_seq, past)
    outputs = [
        TensorType(q.dtype, y_shape),
        TensorType(q.dtype, (batch, kv_heads, total, k_head)),
        TensorType(q.dtype, (batch, kv_heads, total, v_head)),
        TensorType(q.dtype, (batch, q_heads, q_seq, total)),
    ]
    return outputs[: len(ctx.node.outputs)]


def _infer_rotary(ctx: InferenceContext) -> list[TensorType | None]:
    x = ctx.type(0)
    if x.rank not in (None, 3, 4):
        raise ctx.fail(f"X must be 3-D or 4-D, got shape {tuple(x.shape)}")
    if x.rank == 3 and not ctx.attr("num_heads"):
        raise ctx.fail("a 3-D X needs the num_heads attribute")
    return same_as_input()(ctx)


register("Attention", _infer_attention, inputs=(3, 7), outputs=(1, 4), facts=GEMM)
register("RotaryEmbedding", _infer_rotary, inputs=(3, 4), facts=PLAIN.but(function_body=True))
