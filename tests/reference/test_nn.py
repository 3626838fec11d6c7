"""Neural-network layers: convolutions, pooling, normalizations, attention and rotary
embeddings. Each case runs one node through type inference and the reference executor and
checks that the inferred type fits the computed value."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from rtxrt.errors import GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType
from tests.reference import one_node

F32 = np.float32

build = partial(one_node.build, opset=22)
run = partial(one_node.run, opset=22, shapes="ranked")
infer = partial(one_node.infer, opset=22)


def row(*values, dtype=F32) -> np.ndarray:
    """A (1, 1, len) tensor: one batch, one channel, one spatial axis."""
    return np.array(values, dtype).reshape(1, 1, -1)


# ---------------------------------------------------------------- convolution

def test_conv_with_padding_sums_each_3x3_window():
    x = np.arange(25, dtype=F32).reshape(1, 1, 5, 5)
    y = run("Conv", x, np.ones((1, 1, 3, 3), F32), pads=[1, 1, 1, 1])
    assert y[0, 0, 0].tolist() == [12, 21, 27, 33, 24]
    assert y[0, 0, 2, 2] == 108  # 12 * 9, the full window around the centre


def test_conv_one_implementation_serves_1d_and_3d():
    y = run("Conv", row(1, 2, 3, 4), row(1, 0, -1), np.array([10], F32), pads=[1, 1])
    assert y.tolist() == [[[8, 8, 8, 13]]]  # x[i-1] - x[i+1] + 10
    x3 = np.ones((1, 2, 3, 3, 3), F32)
    y3 = run("Conv", x3, np.ones((4, 2, 2, 2, 2), F32), strides=[1, 1, 2])
    assert y3.shape == (1, 4, 2, 2, 1) and (y3 == 16).all()


def test_conv_groups_apply_each_filter_to_its_own_channels():
    x = np.stack([np.full((2, 2), 1, F32), np.full((2, 2), 10, F32)])[None]
    w = np.array([2, 3], F32).reshape(2, 1, 1, 1)  # depthwise: one filter per channel
    assert run("Conv", x, w, group=2)[0, :, 0, 0].tolist() == [2, 30]


def test_conv_strides_and_dilations_pick_the_window_taps():
    x = row(*range(8))
    assert run("Conv", x, row(1, 1), dilations=[3]).tolist() == [[[3, 5, 7, 9, 11]]]
    assert run("Conv", x, row(1, 1), strides=[3]).tolist() == [[[1, 7, 13]]]


def test_conv_same_padding_puts_the_odd_pad_at_the_end_or_the_begin():
    x = row(0, 1, 2, 3, 4)
    assert run("Conv", x, row(1, 1), auto_pad="SAME_UPPER").tolist() == [[[1, 3, 5, 7, 4]]]
    assert run("Conv", x, row(1, 1), auto_pad="SAME_LOWER").tolist() == [[[0, 1, 3, 5, 7]]]
    assert run("Conv", x, row(1, 1), auto_pad="VALID").shape == (1, 1, 4)


def test_conv_matches_a_direct_sum_on_random_data():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 6, 5)).astype(F32), rng.standard_normal((6, 2, 3, 2)).astype(F32)
    y = run("Conv", x, w, group=2, strides=[2, 1], pads=[1, 0, 1, 1], dilations=[1, 2])
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (0, 1)])
    expected = np.zeros(y.shape, np.float64)
    for m in range(6):
        g = m // 3
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                patch = xp[:, 2 * g:2 * g + 2, 2 * i:2 * i + 3, j:j + 3:2]
                expected[:, m, i, j] = (patch * w[m]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_float16_conv_accumulates_in_float32():
    # in float16, 2048 + 1 rounds back to 2048; float32 keeps 2050
    y = run("Conv", row(2048, 1, 1, dtype=np.float16), row(1, 1, 1, dtype=np.float16))
    assert y.dtype == np.float16 and y.item() == 2050


def test_conv_inference_keeps_symbols_where_the_size_cannot_change():
    x = TensorType(DType.FLOAT32, ("batch", 3, "h", "w"))
    w = TensorType(DType.FLOAT32, (8, 3, 3, 3))
    assert infer("Conv", x, w, pads=[1, 1, 1, 1]).shape == ("batch", 8, "h", "w")
    assert infer("Conv", x, w, auto_pad="SAME_UPPER").shape == ("batch", 8, "h", "w")
    assert infer("Conv", x, w, strides=[2, 2]).shape == ("batch", 8, None, None)


def test_conv_inference_rejects_channels_that_do_not_fit_the_filters():
    with pytest.raises(GraphError, match="channels"):
        build("Conv", np.ones((1, 4, 5, 5), F32), np.ones((2, 3, 3, 3), F32))
    with pytest.raises(GraphError, match="pads"):
        build("Conv", np.ones((1, 1, 5, 5), F32), np.ones((1, 1, 3, 3), F32), pads=[1, 1])


def test_conv_transpose_spreads_each_input_over_a_strided_window():
    x, w = row(1, 2, 3), row(1, 1, 1)
    assert run("ConvTranspose", x, w, strides=[2]).tolist() == [[[1, 1, 3, 2, 5, 3, 3]]]
    assert run("ConvTranspose", x, w, strides=[2], pads=[1, 1]).tolist() == [[[1, 3, 2, 5, 3]]]
    assert run("ConvTranspose", x, w, strides=[2], output_padding=[1]).tolist() == [[[1, 1, 3, 2, 5, 3, 3, 0]]]
    assert run("ConvTranspose", x, w, strides=[2], auto_pad="SAME_UPPER").tolist() == [[[1, 1, 3, 2, 5, 3]]]


def test_conv_transpose_output_shape_overrides_pads_and_groups_split_channels():
    x, w = row(1, 2, 3), row(1, 1, 1)
    assert run("ConvTranspose", x, w, strides=[2], output_shape=[6]).tolist() == [[[1, 3, 2, 5, 3, 3]]]
    assert run("ConvTranspose", x, w, strides=[2], output_shape=[9]).tolist() == [[[1, 1, 3, 2, 5, 3, 3, 0, 0]]]
    y = run("ConvTranspose", np.ones((1, 2, 2, 2), F32), np.ones((2, 3, 1, 1), F32), np.arange(6, dtype=F32), group=2)
    assert y.shape == (1, 6, 2, 2) and y[0, :, 0, 0].tolist() == [1, 2, 3, 4, 5, 6]


def test_deform_conv_samples_at_fractional_offsets():
    x = np.arange(4, dtype=F32).reshape(1, 1, 1, 4)
    w = np.ones((1, 1, 1, 1), F32)
    offset = np.zeros((1, 2, 1, 4), F32)
    assert run("DeformConv", x, w, offset).tolist() == x.tolist()  # no offset: a plain conv
    offset[0, 1] = 0.5  # half a pixel right: the mean of neighbours, zero past the edge
    assert run("DeformConv", x, w, offset).tolist() == [[[[0.5, 1.5, 2.5, 1.5]]]]
    mask = np.full((1, 1, 1, 4), 2, F32)
    assert run("DeformConv", x, w, offset, None, mask)[0, 0, 0, 0] == 1.0


# ---------------------------------------------------------------- pooling

def test_max_pool_returns_flat_indices_in_row_or_column_major_order():
    x = np.array([[1, 9, 2, 3], [4, 5, 8, 6]], F32).reshape(1, 1, 2, 4)
    y, i = run("MaxPool", x, outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    assert y.tolist() == [[[[9, 8]]]] and i.tolist() == [[[[1, 6]]]]
    _, i = run("MaxPool", x, outputs=2, kernel_shape=[2, 2], strides=[2, 2], storage_order=1)
    assert i.tolist() == [[[[2, 5]]]]  # (row 0, col 1) and (row 1, col 2) with 2 rows
    assert i.dtype == np.int64


def test_max_pool_padding_never_wins_and_ceil_mode_adds_a_last_window():
    x = row(-5, -3, -4, -1, -2)
    assert run("MaxPool", x, kernel_shape=[2], strides=[2], pads=[1, 1]).tolist() == [[[-5, -3, -1]]]
    assert run("MaxPool", x, kernel_shape=[2], strides=[2]).tolist() == [[[-3, -1]]]
    assert run("MaxPool", x, kernel_shape=[2], strides=[2], ceil_mode=1).tolist() == [[[-3, -1, -2]]]
    assert run("MaxPool", row(1, 2, 3, 4, 5, dtype=np.uint8), kernel_shape=[3], dilations=[2]).tolist() == [[[5]]]


def test_average_pool_counts_padding_only_when_asked():
    x = np.ones((1, 1, 3, 3), F32)
    plain = run("AveragePool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    counted = run("AveragePool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    assert (plain == 1).all()
    assert counted[0, 0, 0, 0] == pytest.approx(4 / 9) and counted[0, 0, 1, 1] == 1


def test_average_pool_never_counts_the_extra_padding_of_ceil_mode():
    x = row(1, 2, 3, 4, 5)
    y = run("AveragePool", x, kernel_shape=[2], strides=[2], ceil_mode=1, count_include_pad=1)
    assert y.tolist() == [[[1.5, 3.5, 5]]]


def test_lp_pool_and_the_global_pools():
    assert run("LpPool", row(3, 4, 0), kernel_shape=[2], p=2).tolist() == [[[5, 4]]]
    x = np.array([[[[1, -2], [3, 4]]]], F32)
    assert run("GlobalMaxPool", x).tolist() == [[[[4]]]]
    assert run("GlobalAveragePool", x).tolist() == [[[[1.5]]]]
    assert run("GlobalLpPool", x, p=1).tolist() == [[[[10]]]]


def test_max_unpool_puts_values_back_where_max_pool_found_them():
    x = np.array([[1, 9, 2, 3], [4, 5, 8, 6]], F32).reshape(1, 1, 2, 4)
    y, i = run("MaxPool", x, outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    restored = run("MaxUnpool", y, i, kernel_shape=[2, 2], strides=[2, 2])
    assert restored.tolist() == [[[[0, 9, 0, 0], [0, 0, 8, 0]]]]
    padded = run("MaxUnpool", y, i, np.array([1, 1, 3, 4]), kernel_shape=[2, 2], strides=[2, 2])
    assert padded.shape == (1, 1, 3, 4) and padded[0, 0, 2].tolist() == [0, 0, 0, 0]


def test_pool_inference_needs_a_kernel_and_gives_int64_indices():
    x = TensorType(DType.FLOAT16, ("n", 3, 5, 5))
    y, i = infer("MaxPool", x, outputs=2, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    assert y == TensorType(DType.FLOAT16, ("n", 3, 3, 3)) and i.dtype == DType.INT64
    assert infer("GlobalAveragePool", x).shape == ("n", 3, 1, 1)
    with pytest.raises(GraphError, match="kernel_shape"):
        infer("AveragePool", x)


# ---------------------------------------------------------------- normalization

def test_batch_normalization_uses_the_given_statistics_in_inference_mode():
    x = np.array([[[1, 3]], [[5, 7]]], F32).reshape(1, 2, 2)
    ones, zeros = np.ones(2, F32), np.zeros(2, F32)
    y = run("BatchNormalization", x, np.array([2, 1], F32), np.array([0, 10], F32),
            np.array([1, 5], F32), np.array([4, 1], F32), epsilon=0.0)
    assert y.tolist() == [[[0, 2], [10, 12]]]  # (x - mean) / sqrt(var) * scale + bias
    y, running_mean, running_var = run("BatchNormalization", x, ones, zeros, zeros, ones, outputs=3,
                                       training_mode=1, momentum=0.5, epsilon=0.0)
    assert y.tolist() == [[[-1, 1], [-1, 1]]]  # with the batch's own mean and variance
    assert running_mean.tolist() == [1, 3] and running_var.tolist() == [1, 1]


def test_instance_and_group_normalization_standardize_per_sample_and_channel_group():
    x = np.array([1, 3, 10, 30], F32).reshape(1, 2, 2)
    y = run("InstanceNormalization", x, np.array([1, 2], F32), np.array([0, 1], F32), epsilon=0.0)
    assert y.tolist() == [[[-1, 1], [-1, 3]]]
    x = np.array([1, 3, 5, 7], F32).reshape(1, 4, 1)  # two groups of two channels
    scale, bias = np.array([1, 1, 2, 2], F32), np.zeros(4, F32)
    y = run("GroupNormalization", x, scale, bias, num_groups=2, epsilon=0.0, opset=21)
    assert y.ravel().tolist() == [-1, 1, -2, 2]
    per_group = run("GroupNormalization", x, np.array([1, 2], F32), np.zeros(2, F32), num_groups=2, epsilon=0.0, opset=18)
    assert per_group.ravel().tolist() == [-1, 1, -2, 2]  # before opset 21, one scale per group


def test_layer_normalization_returns_mean_and_inverse_std_in_the_stash_type():
    x = np.array([[1, 3], [0, 4]], np.float16)
    y, mean, inv_std = run("LayerNormalization", x, np.array([2, 2], np.float16), np.array([1, 1], np.float16),
                           outputs=3, epsilon=0.0, opset=17)
    assert y.dtype == np.float16 and y.tolist() == [[-1, 3], [-1, 3]]
    assert mean.dtype == np.float32 and mean.tolist() == [[2], [2]] and inv_std.tolist() == [[1], [0.5]]
    stats = infer("LayerNormalization", TensorType(DType.FLOAT16, ("b", "s", 8)), TensorType(DType.FLOAT16, (8,)),
                  outputs=3, axis=1)[1]
    assert stats == TensorType(DType.FLOAT32, ("b", 1, 1))


def test_rms_lp_and_mean_variance_normalization():
    rms = run("RMSNormalization", np.array([[3, 4]], F32), np.array([1, 2], F32), epsilon=0.0, opset=23)
    assert rms.ravel() == pytest.approx(np.array([3, 8]) / np.sqrt(12.5))  # sqrt(mean(9, 16))
    assert run("LpNormalization", np.array([[3, 4], [0, 0]], F32), p=2).ravel() == pytest.approx([0.6, 0.8, 0, 0])
    assert run("LpNormalization", np.array([[1, 3]], F32), p=1).tolist() == [[0.25, 0.75]]
    y = run("MeanVarianceNormalization", np.array([1, 3, 5, 7], F32).reshape(1, 1, 2, 2), axes=[2, 3])
    assert y.ravel() == pytest.approx(np.array([-3, -1, 1, 3]) / np.sqrt(5))


def test_lrn_divides_by_the_sum_of_squares_of_neighbouring_channels():
    x = np.array([1, 2, 3], F32).reshape(1, 3, 1)
    y = run("LRN", x, size=3, alpha=3.0, beta=1.0, bias=1.0)  # x / (1 + sum of squares)
    assert y.ravel().tolist() == pytest.approx([1 / 6, 2 / 15, 3 / 14])


# ---------------------------------------------------------------- attention

def _attention(q, k, v, mask=None):
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]) + (0 if mask is None else mask)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def test_attention_4d_is_scaled_dot_product_attention():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 4, 8)).astype(F32) for _ in range(3))
    np.testing.assert_allclose(run("Attention", q, k, v, opset=23), _attention(q, k, v), rtol=1e-5, atol=1e-6)


def test_attention_3d_splits_heads_and_shares_key_value_heads():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((1, 3, 8)).astype(F32), rng.standard_normal((1, 5, 4)).astype(F32), rng.standard_normal((1, 5, 4)).astype(F32)
    y = run("Attention", q, k, v, q_num_heads=2, kv_num_heads=1, opset=23)
    heads = [_attention(q[0, :, h * 4:(h + 1) * 4], k[0], v[0]) for h in range(2)]  # both use the one kv head
    np.testing.assert_allclose(y[0], np.concatenate(heads, axis=-1), rtol=1e-5, atol=1e-6)


def test_attention_causal_mask_counts_the_past_keys_before_the_queries():
    q = np.zeros((1, 1, 2, 2), F32)  # equal scores: a mean over the allowed values
    past = np.zeros((1, 1, 1, 2), F32)
    k = np.zeros((1, 1, 2, 2), F32)
    v = np.array([[[[10, 10], [20, 20]]]], F32)
    past_v = np.array([[[[4, 4]]]], F32)
    y, present_k, present_v = run("Attention", q, k, v, None, past, past_v, outputs=3, is_causal=1, opset=23)
    assert y[0, 0, :, 0].tolist() == [7, pytest.approx(34 / 3)]  # query 0 sees past + key 0
    assert present_k.shape == (1, 1, 3, 2) and present_v[0, 0, :, 0].tolist() == [4, 10, 20]


def test_attention_masks_and_a_fully_masked_row_gives_zeros():
    q, k = np.zeros((1, 1, 2, 2), F32), np.zeros((1, 1, 2, 2), F32)
    v = np.array([[[[1, 1], [3, 3]]]], F32)
    mask = np.array([[True, False], [False, False]])
    y = run("Attention", q, k, v, mask, opset=23)
    assert y[0, 0].tolist() == [[1, 1], [0, 0]]
    biased = run("Attention", q, k, v, np.array([[0, -np.inf], [0, 0]], F32), opset=23)
    assert biased[0, 0].tolist() == [[1, 1], [2, 2]]


def test_attention_softcap_and_the_scores_output():
    q = np.array([[[[3.0]]]], F32)
    k = np.array([[[[1.0], [-1.0]]]], F32)
    v = np.array([[[[0.0], [1.0]]]], F32)
    _, _, _, raw = run("Attention", q, k, v, outputs=4, scale=1.0, opset=23)
    _, _, _, capped = run("Attention", q, k, v, outputs=4, scale=1.0, softcap=2.0, qk_matmul_output_mode=1, opset=23)
    assert raw.ravel().tolist() == [3, -3]
    assert capped.ravel().tolist() == pytest.approx([2 * np.tanh(1.5), -2 * np.tanh(1.5)])


def test_attention_ignores_keys_past_the_nonpadded_length():
    q, k = np.zeros((2, 1, 1, 2), F32), np.zeros((2, 1, 3, 2), F32)
    v = np.arange(6, dtype=F32).reshape(1, 1, 3, 2).repeat(2, axis=0)
    y = run("Attention", q, k, v, None, None, None, np.array([1, 3]), opset=24)
    assert y[:, 0, 0, 0].tolist() == [0, 2]  # batch 0 sees key 0 only; batch 1 the mean of all


def test_attention_inference_gives_present_and_score_shapes():
    f = lambda *shape: TensorType(DType.FLOAT32, shape)  # noqa: E731
    q, k, v = f("b", 8, "s", 64), f("b", 2, "s", 64), f("b", 2, "s", 32)
    mask, past_k, past_v = TensorType(DType.BOOL, ("s", 10)), f("b", 2, 6, 64), f("b", 2, 6, 32)
    y, pk, pv, qk = infer("Attention", q, k, v, mask, past_k, past_v, outputs=4, opset=23)
    assert y.shape == ("b", 8, "s", 32) and pv.shape == ("b", 2, None, 32) and qk.shape == ("b", 8, "s", None)
    with pytest.raises(GraphError, match="heads"):
        infer("Attention", f(1, 3, 4, 8), f(1, 2, 4, 8), f(1, 2, 4, 8), opset=23)


def test_rotary_embedding_rotates_feature_pairs_by_position():
    x = np.array([1, 2, 3, 4], F32).reshape(1, 1, 1, 4)  # (batch, heads, seq, head_size)
    cos, sin = np.array([[1, 1], [0, 0]], F32), np.array([[0, 0], [1, 1]], F32)
    at = lambda p: np.array([[p]])  # noqa: E731
    assert run("RotaryEmbedding", x, cos, sin, at(0), opset=23).ravel().tolist() == [1, 2, 3, 4]
    assert run("RotaryEmbedding", x, cos, sin, at(1), opset=23).ravel().tolist() == [-3, -4, 1, 2]  # halves
    assert run("RotaryEmbedding", x, cos, sin, at(1), interleaved=1, opset=23).ravel().tolist() == [-2, 1, -4, 3]
    part = run("RotaryEmbedding", x, cos[:, :1], sin[:, :1], at(1), rotary_embedding_dim=2, opset=23)
    assert part.ravel().tolist() == [-2, 1, 3, 4]
