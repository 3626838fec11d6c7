"""Attention (opset 23+) and RotaryEmbedding."""
from __future__ import annotations

import numpy as np

from ....ir.dtypes import DType
from ..kernel import OpRun
from .reduce import widened


def _split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    batch, seq, hidden = x.shape
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} does not split into {heads} heads")
    return x.reshape(batch, seq, heads, hidden // heads).transpose(0, 2, 1, 3)


class Attention(OpRun):
    """softmax(softcap(Q K^T * scale) + bias) V over (batch, heads, seq, head_size) tensors.

    The bias adds the attention mask (boolean: False is -inf; float: added as is; padded with
    -inf up to the key length) and -inf where the causal rule, the sliding window or the
    non-padded key count forbid a key. Those three place query i at absolute position
    i + offset, the keys before it: past_key's length, or nonpad_kv_seqlen - q_len per batch.
    Keys and values are shared by q_heads / kv_heads consecutive query heads (GQA). A query
    row with no allowed key gives zeros, not NaN.
    """

    def run(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        attn_mask: np.ndarray | None = None,
        past_key: np.ndarray | None = None,
        past_value: np.ndarray | None = None,
        nonpad_kv_seqlen: np.ndarray | None = None,
    ) -> tuple[np.ndarray, ...]:
        if (past_key is None) != (past_value is None):
            raise ValueError("past_key and past_value come together")
        if nonpad_kv_seqlen is not None and past_key is not None:
            raise ValueError("nonpad_kv_seqlen cannot be combined with past_key/past_value")
        dtype = q.dtype
        three_d = q.ndim == 3
        if three_d:
            q_heads, kv_heads = self.attr("q_num_heads"), self.attr("kv_num_heads")
            if not q_heads or not kv_heads:
                raise ValueError("3-D inputs need q_num_heads and kv_num_heads")
            q, k, v = _split_heads(q, q_heads), _split_heads(k, kv_heads), _split_heads(v, kv_heads)
        present_key = k if past_key is None else np.concatenate((past_key, k), axis=2)
        present_value = v if past_value is None else np.concatenate((past_value, v), axis=2)
        batch, q_heads, q_len = q.shape[:3]
        kv_heads, kv_len = present_key.shape[1:3]
        if q_heads % kv_heads:
            raise ValueError(f"{q_heads} query heads do not group over {kv_heads} key/value heads")

        # Everything is computed in T, as the spec's function body does (the softmax in
        # softmax_precision when given). Q and K are each scaled by sqrt(scale) against overflow.
        root = dtype.type(np.sqrt(self.attr("scale", 1 / np.sqrt(q.shape[3]))))
        keys = np.repeat(present_key * root, q_heads // kv_heads, axis=1)
        values = np.repeat(present_value, q_heads // kv_heads, axis=1)
        raw = _matmul(q * root, keys.swapaxes(-1, -2))
        softcap = self.attr("softcap", 0.0)
        capped = softcap * np.tanh(raw / dtype.type(softcap)) if softcap > 0 else raw
        if past_key is not None:
            offset: int | np.ndarray = past_key.shape[2]
        elif nonpad_kv_seqlen is not None:
            offset = nonpad_kv_seqlen.reshape(-1, 1, 1, 1) - q_len
        else:
            offset = 0
        bias = self._bias(attn_mask, q_len, kv_len, offset, nonpad_kv_seqlen, dtype)
        biased = capped + bias
        precision = self.attr("softmax_precision")
        probs = _softmax(biased.astype(DType(precision).numpy) if precision else biased)
        probs = np.where(np.isneginf(bias.max(axis=-1, keepdims=True)), 0, probs).astype(dtype)  # no allowed key
        y = _matmul(probs, values)
        if three_d:
            y = y.transpose(0, 2, 1, 3).reshape(batch, q_len, -1)
        scores = {0: raw, 1: capped, 2: biased, 3: probs}[int(self.attr("qk_matmul_output_mode", 0))]
        outputs = (y.astype(dtype), present_key, present_value, np.ascontiguousarray(scores.astype(dtype)))
        return outputs[: len(self.node.outputs)]

    def _bias(
        self,
        attn_mask: np.ndarray | None,
        q_len: int,
        kv_len: int,
        offset: int | np.ndarray,
        nonpad_kv_seqlen: np.ndarray | None,
        dtype: np.dtype,
    ) -> np.ndarray:
        """The additive bias, broadcastable to (batch, heads, q_len, kv_len)."""
        bias = np.zeros((q_len, kv_len), dtype)
        if attn_mask is not None:
            mask = np.where(attn_mask, 0, -np.inf) if attn_mask.dtype == np.bool_ else attn_mask
            short = kv_len - mask.shape[-1]
            if short > 0:
                mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, short)], constant_values=-np.inf)
            bias = bias + mask.astype(dtype, copy=False)
        query = np.arange(q_len)[:, None] + offset  # absolute position of each query
        key = np.arange(kv_len)
        allowed = np.ones((q_len, kv_len), bool)
        if self.attr("is_causal", 0):
            allowed = allowed & (key <= query)
        left, right = self.attr("left_window_size", -1), self.attr("right_window_size", -1)
        if left >= 0:
            allowed = allowed & (key >= query - left)
        if right >= 0:
            allowed = allowed & (key <= query + right)
        if nonpad_kv_seqlen is not None:
            allowed = allowed & (key < nonpad_kv_seqlen.reshape(-1, 1, 1, 1))
        return bias + np.where(allowed, 0, -np.inf).astype(dtype)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b).astype(a.dtype, copy=False)  # numpy may widen bfloat16


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax along the last axis; rows of -inf give NaN here and are zeroed by the caller."""
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


class RotaryEmbedding(OpRun):
    """Rotates pairs of features of each head by position-dependent angles: the two halves of
    the first rotary_embedding_dim features, or (interleaved) even and odd features. X is
    (batch, heads, seq, head_size) or (batch, seq, heads * head_size)."""

    def run(
        self, x: np.ndarray, cos_cache: np.ndarray, sin_cache: np.ndarray, position_ids: np.ndarray | None = None
    ) -> np.ndarray:
        if x.ndim == 4:
            heads = x.transpose(0, 2, 1, 3)  # (batch, seq, heads, head_size)
        else:
            num_heads = self.attr("num_heads")
            if not num_heads:
                raise ValueError("a 3-D input needs num_heads")
            heads = x.reshape(*x.shape[:2], num_heads, -1)
        dim = int(self.attr("rotary_embedding_dim", 0)) or heads.shape[-1]
        if position_ids is not None:
            cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
        if cos_cache.shape[-1] != dim // 2 or sin_cache.shape[-1] != dim // 2:
            raise ValueError(f"cos/sin caches of width {cos_cache.shape[-1]} do not fit rotary dim {dim}")
        cos, sin = widened(cos_cache)[..., None, :], widened(sin_cache)[..., None, :]
        rotated = widened(heads[..., :dim])
        interleaved = bool(self.attr("interleaved", 0))
        first, second = (rotated[..., 0::2], rotated[..., 1::2]) if interleaved else np.split(rotated, 2, axis=-1)
        real, imag = cos * first - sin * second, sin * first + cos * second
        if interleaved:
            rotated = np.stack((real, imag), axis=-1).reshape(rotated.shape)
        else:
            rotated = np.concatenate((real, imag), axis=-1)
        y = np.concatenate((rotated.astype(x.dtype), heads[..., dim:]), axis=-1)
        return y.transpose(0, 2, 1, 3).copy() if x.ndim == 4 else y.reshape(x.shape)
