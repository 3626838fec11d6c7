"""Casts and quantization: reference kernels and their type inference rules. Each case runs one
node through inference and the reference executor and checks that the inferred type fits the
computed value."""
from __future__ import annotations

from functools import partial

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.reference.ops.cast import cast_to
from rtxrt.errors import GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType
from tests.reference import one_node

F32 = np.float32
NAN, INF = np.nan, np.inf

build = partial(one_node.build, opset=25)
run = partial(one_node.run, opset=25, shapes="exact")
infer = partial(one_node.infer, opset=25)


def floats(x: np.ndarray) -> list[float]:
    return np.asarray(x).astype(np.float64).tolist()


# ---------------------------------------------------------------- Cast

def test_cast_to_float8_saturates_by_default_and_makes_nan_without_saturation():
    x = np.array([1000, -1000, INF, -INF, NAN, 0.3], F32)
    y = run("Cast", x, to=int(DType.FLOAT8E4M3FN))
    assert y.dtype == ml_dtypes.float8_e4m3fn
    assert floats(y)[:4] == [448, -448, 448, -448] and np.isnan(floats(y)[4])
    assert floats(y)[5] == 0.3125  # nearest float8e4m3fn value
    unsaturated = floats(run("Cast", x, to=int(DType.FLOAT8E4M3FN), saturate=0))
    assert all(np.isnan(unsaturated[:5]))


def test_cast_to_float8e5m2_without_saturation_keeps_infinities():
    y = run("Cast", np.array([1e6, -INF, 57344], F32), to=int(DType.FLOAT8E5M2), saturate=0)
    assert floats(y) == [INF, -INF, 57344]


def test_cast_to_fnuz_types_drops_the_sign_of_zero():
    y = run("Cast", np.array([-0.0], F32), to=int(DType.FLOAT8E4M3FNUZ))
    assert y.view(np.uint8).tolist() == [0]


def test_cast_rounds_to_nearest_even_in_bfloat16():
    # bfloat16 keeps 8 significant bits: 257 lies halfway between 256 and 258
    assert floats(run("Cast", np.array([257, 259], F32), to=int(DType.BFLOAT16))) == [256, 260]


def test_cast_between_integers_keeps_the_low_bits_and_bool_is_nonzero():
    assert run("Cast", np.array([200, -129], np.int16), to=int(DType.INT8)).tolist() == [-56, 127]
    assert run("Cast", np.array([9, -9], np.int32), to=int(DType.INT4)).astype(int).tolist() == [-7, 7]
    assert run("Cast", np.array([0.0, -0.0, 0.5, NAN], F32), to=int(DType.BOOL)).tolist() == [False, False, True, True]
    assert run("Cast", np.array([True, False]), to=int(DType.FLOAT16)).tolist() == [1.0, 0.0]


def test_cast_float_to_int_truncates_toward_zero():
    assert run("Cast", np.array([2.7, -2.7], F32), to=int(DType.INT32)).tolist() == [2, -2]
    assert run("Cast", np.array([3.9, -3.9], F32), to=int(DType.INT4)).astype(int).tolist() == [3, -3]


def test_cast_to_float4_saturates_at_six():
    assert floats(run("Cast", np.array([1.25, 7, -100], F32), to=int(DType.FLOAT4E2M1))) == [1.0, 6.0, -6.0]


def test_cast_to_float8e8m0_rounds_as_asked():
    x = np.array([0.75, 1.5, 3.0, 4.0], F32)
    up = run("Cast", x, to=int(DType.FLOAT8E8M0))  # round_mode "up" by default
    assert floats(up) == [1, 2, 4, 4]
    assert floats(run("Cast", x, to=int(DType.FLOAT8E8M0), round_mode="down")) == [0.5, 1, 2, 4]
    saturated = run("Cast", np.array([INF, NAN], F32), to=int(DType.FLOAT8E8M0))
    assert saturated.view(np.uint8).tolist() == [0xFE, 0xFF]  # largest value, NaN


def test_cast_parses_strings_like_onnx():
    text = np.array(["3.5", "1e-5", "1E8", "NaN", "INF", "+INF", "-inf", "-0.25"], dtype=object)
    y = cast_to(text, DType.FLOAT32)
    assert y.dtype == F32
    assert floats(y[[0, 1, 2, 4, 5, 6, 7]]) == floats(np.array([3.5, 1e-5, 1e8, INF, INF, -INF, -0.25], F32))
    assert np.isnan(y[3])
    # integers parse exactly, even past float64's 53 bits
    assert cast_to(np.array(["9007199254740993", "-7"], dtype=object), DType.INT64).tolist() == [9007199254740993, -7]
    assert cast_to(np.array(["1e3"], dtype=object), DType.INT32).tolist() == [1000]


def test_cast_to_strings_round_trips():
    x = np.array([1.5, -0.0, 1e-7, NAN, -INF], F32)
    text = cast_to(x, DType.STRING)
    assert text.dtype == object and all(isinstance(s, str) for s in text)
    assert text[[0, 3, 4]].tolist() == ["1.5", "NaN", "-INF"]
    back = cast_to(text, DType.FLOAT32)
    np.testing.assert_array_equal(back, x)
    assert cast_to(np.array([1.5], ml_dtypes.bfloat16), DType.STRING).tolist() == ["1.5"]


def test_cast_of_a_0d_tensor_is_a_0d_array():
    y = run("Cast", np.array(2.5, F32), to=int(DType.FLOAT8E4M3FN))
    assert y.shape == () and float(y) == 2.5


def test_castlike_takes_the_type_of_its_second_input():
    y = run("CastLike", np.array([1.7, 1000], F32), np.zeros(3, ml_dtypes.float8_e4m3fn))
    assert y.dtype == ml_dtypes.float8_e4m3fn and floats(y) == [1.75, 448]
    y = run("CastLike", np.array([1.7, 1000], F32), np.zeros(3, ml_dtypes.float8_e4m3fn), saturate=0)
    assert np.isnan(floats(y)[1])


def test_cast_inference_keeps_the_shape_and_rejects_unknown_types():
    x = TensorType(DType.FLOAT32, ("batch", 3))
    assert infer("Cast", x, to=int(DType.FLOAT16)) == TensorType(DType.FLOAT16, ("batch", 3))
    with pytest.raises(GraphError, match="element type code 99"):
        infer("Cast", x, to=99)
    with pytest.raises(GraphError, match="complex"):
        infer("Cast", x, to=int(DType.COMPLEX64))


# ---------------------------------------------------------------- BitCast

def test_bitcast_reinterprets_the_bits():
    assert run("BitCast", np.array([1.0, -2.0], F32), to=int(DType.INT32)).tolist() == [0x3F800000, -0x40000000]
    assert run("BitCast", np.array([-1, -8], ml_dtypes.int4), to=int(DType.UINT4)).astype(int).tolist() == [15, 8]
    assert run("BitCast", np.array([True, False]), to=int(DType.UINT8)).tolist() == [1, 0]


def test_bitcast_needs_types_of_equal_width():
    with pytest.raises(GraphError, match="32 bits.*16"):
        build("BitCast", np.ones(2, F32), to=int(DType.FLOAT16))
    with pytest.raises(GraphError, match="4 bits.*8"):
        build("BitCast", np.ones(2, ml_dtypes.int4), to=int(DType.INT8))


# ---------------------------------------------------------------- QuantizeLinear / DequantizeLinear

def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, 1000, -1000], F32)
    y = run("QuantizeLinear", x, F32(1.0), np.uint8(128))
    assert y.dtype == np.uint8 and y.tolist() == [128, 130, 130, 128, 255, 0]


def test_quantize_without_zero_point_gives_uint8_or_output_dtype():
    assert run("QuantizeLinear", np.array([3.0, -1.0], F32), F32(2.0)).tolist() == [2, 0]
    y = run("QuantizeLinear", np.array([3.0, -30.0, 30.0], F32), F32(2.0), output_dtype=int(DType.INT4))
    assert y.dtype == ml_dtypes.int4 and y.astype(int).tolist() == [2, -8, 7]


def test_quantize_per_axis_uses_one_scale_and_zero_point_per_slice():
    x = np.array([[10, 20], [10, 20]], F32)
    y = run("QuantizeLinear", x, np.array([10, 5], F32), np.array([0, -100], np.int8), axis=0)
    assert y.tolist() == [[1, 2], [-98, -96]]


def test_quantize_blocked_shares_scales_within_blocks_and_a_short_last_block():
    x = np.array([[2, 4, 6, 8, 10]], F32)
    scale = np.array([[2, 1, 0.5]], F32)  # blocks [0:2], [2:4], [4:5]
    y = run("QuantizeLinear", x, scale, axis=1, block_size=2, output_dtype=int(DType.INT16))
    assert y.dtype == np.int16 and y.tolist() == [[1, 2, 6, 8, 20]]


def test_quantize_to_float8_saturates_unless_told_not_to():
    zero = np.zeros(1, ml_dtypes.float8_e4m3fn)
    assert floats(run("QuantizeLinear", np.array([1.0, 1e5], F32), F32(2.0), zero)) == [0.5, 448]
    y = run("QuantizeLinear", np.array([1.0, 1e5], F32), F32(2.0), zero, saturate=0)
    assert np.isnan(floats(y)[1])


def test_quantize_inference_checks_zero_point_type_and_scale_shape():
    with pytest.raises(GraphError, match="output_dtype int8 differs"):
        build("QuantizeLinear", np.ones(3, F32), F32(1), np.uint8(0), output_dtype=int(DType.INT8))
    with pytest.raises(GraphError, match="does not fit"):
        build("QuantizeLinear", np.ones((2, 3), F32), np.ones(4, F32), axis=1)
    with pytest.raises(GraphError, match="does not fit"):
        build("QuantizeLinear", np.ones((2, 5), F32), np.ones((2, 2), F32), axis=1, block_size=2)
    with pytest.raises(GraphError, match="cannot quantize to int32"):
        build("QuantizeLinear", np.ones(3, F32), F32(1), output_dtype=int(DType.INT32))


def test_dequantize_subtracts_the_zero_point_and_scales():
    y = run("DequantizeLinear", np.array([0, 3, 128, 255], np.uint8), F32(2), np.uint8(128))
    assert y.dtype == F32 and y.tolist() == [-256, -250, 0, 254]
    y = run("DequantizeLinear", np.array([[1, 2], [1, 2]], np.int8), np.array([1, 10], F32), axis=0)
    assert y.tolist() == [[1, 2], [10, 20]]


def test_dequantize_blocked_with_output_dtype_and_power_of_two_scales():
    x = np.array([[1, 1, 1, 1]], ml_dtypes.int4)
    scale = np.array([[0.25, 8]], ml_dtypes.float8_e8m0fnu)
    y = run("DequantizeLinear", x, scale, axis=1, block_size=2, output_dtype=int(DType.FLOAT16))
    assert y.dtype == np.float16 and y.tolist() == [[0.25, 0.25, 8, 8]]


def test_dequantize_inference_rules():
    x, scale = TensorType(DType.INT8, ("n", 16)), TensorType(DType.FLOAT16, ())
    assert infer("DequantizeLinear", x, scale) == TensorType(DType.FLOAT16, ("n", 16))
    with pytest.raises(GraphError, match="zero point is uint8 but the input is int8"):
        build("DequantizeLinear", np.ones(2, np.int8), F32(1), np.uint8(0))
    with pytest.raises(GraphError, match="set output_dtype"):
        build("DequantizeLinear", np.ones(2, np.int8), np.ones((), ml_dtypes.float8_e8m0fnu))


def test_dynamic_quantize_linear_fits_the_range_including_zero():
    x = np.array([0, 2, -3, -2.5, 1.34, 0.5], F32)
    y, scale, zero_point = run("DynamicQuantizeLinear", x, outputs=3)
    assert scale.shape == () and scale == F32(5) / F32(255)
    assert zero_point.dtype == np.uint8 and zero_point == 153
    assert y.tolist() == [153, 255, 0, 26, 221, 179]


# ---------------------------------------------------------------- integer matmul and conv

def test_matmul_integer_subtracts_per_row_and_per_column_zero_points():
    a = np.array([[1, 2], [3, 4]], np.uint8)
    b = np.array([[1, 0], [0, 1]], np.int8)
    y = run("MatMulInteger", a, b, np.array([1, 3], np.uint8), np.array([0, -1], np.int8))
    # centered: a = [[0, 1], [0, 1]], b = [[1, 1], [0, 2]]
    assert y.dtype == np.int32 and y.tolist() == [[0, 2], [0, 2]]


def test_matmul_integer_infers_broadcast_batch_dims():
    a, b = TensorType(DType.UINT8, ("batch", 1, "m", 8)), TensorType(DType.INT8, (3, 8, 4))
    assert infer("MatMulInteger", a, b) == TensorType(DType.INT32, ("batch", 3, "m", 4))


def test_qlinear_matmul_requantizes_with_rounding_half_to_even():
    a = np.array([[1, 2], [3, 4]], np.uint8)  # zero point 1 -> [[0, 1], [2, 3]]
    b = np.array([[3, 1], [1, 3]], np.uint8)  # zero point 1 -> [[2, 0], [0, 2]]
    # a @ b = [[0, 2], [4, 6]]; times 0.5 * 2 / 4 = [0, 0.5, 1, 1.5]; + 10
    y = run("QLinearMatMul", a, F32(0.5), np.uint8(1), b, F32(2), np.uint8(1), F32(4), np.uint8(10))
    assert y.dtype == np.uint8 and y.tolist() == [[10, 10], [11, 12]]
    # per-row scales of a: rows are multiplied by 0.25 and 0.5
    y = run("QLinearMatMul", a, np.array([0.5, 1], F32), np.array([1, 1], np.uint8), b, F32(2), np.uint8(1),
            F32(4), np.uint8(10))
    assert y.tolist() == [[10, 10], [12, 13]]


def test_conv_integer_pads_with_the_zero_point():
    x = np.arange(2, 11, dtype=np.uint8).reshape(1, 1, 3, 3)  # minus zero point 1: 1..9
    w = np.ones((2, 1, 2, 2), np.uint8)
    y = run("ConvInteger", x, w, np.uint8(1), np.array([0, 1], np.uint8), pads=[1, 1, 1, 1])
    assert y.dtype == np.int32 and y.shape == (1, 2, 4, 4)
    assert y[0, 0].tolist() == [[1, 3, 5, 3], [5, 12, 16, 9], [11, 24, 28, 15], [7, 15, 17, 9]]
    assert not y[0, 1].any()  # weights 1 minus zero point 1


def test_conv_integer_with_groups_and_strides():
    x = np.arange(18, dtype=np.int8).reshape(1, 2, 3, 3)
    w = np.array([2, 3], np.int8).reshape(2, 1, 1, 1)
    y = run("ConvInteger", x, w, group=2, strides=[2, 2])
    assert y.shape == (1, 2, 2, 2)
    assert y[0, 0].tolist() == [[0, 4], [12, 16]]  # 2 * x[0, 0, ::2, ::2]
    assert y[0, 1].tolist() == [[27, 33], [45, 51]]  # 3 * x[0, 1, ::2, ::2]


def test_conv_integer_infers_same_padding_with_a_symbolic_batch():
    x, w = TensorType(DType.UINT8, ("n", 3, 7, 7)), TensorType(DType.UINT8, (8, 3, 3, 3))
    out = infer("ConvInteger", x, w, auto_pad="SAME_UPPER", strides=[2, 2])
    assert out == TensorType(DType.INT32, ("n", 8, 4, 4))
    with pytest.raises(GraphError, match="channels"):
        build("ConvInteger", np.ones((1, 4, 3, 3), np.uint8), np.ones((2, 3, 1, 1), np.uint8))


def test_qlinear_conv_adds_bias_and_uses_per_channel_weight_scales():
    x = np.array([[10, 20], [30, 40]], np.uint8).reshape(1, 1, 2, 2)  # minus 10: [[0, 10], [20, 30]]
    w = np.array([1, 2], np.int8).reshape(2, 1, 1, 1)
    y = run("QLinearConv", x, F32(0.5), np.uint8(10), w, np.array([1, 0.25], F32), np.zeros(2, np.int8),
            F32(1), np.uint8(5), np.array([2, -4], np.int32))
    # channel 0: ([0, 10, 20, 30] + 2) * 0.5 + 5; channel 1: ([0, 20, 40, 60] - 4) * 0.125 + 5
    assert y.dtype == np.uint8 and y.tolist() == [[[[6, 11], [16, 21]], [[5, 7], [9, 12]]]]
