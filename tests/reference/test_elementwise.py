"""Elementwise operators: reference kernels and their type inference rules. Each case runs one
node through inference and the reference executor and checks that the inferred type is the
type of the computed value."""
from __future__ import annotations

import math
from functools import partial

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.reference.ops.unary import erf
from rtxrt.errors import GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType
from tests.reference import one_node

F32, F16, BF16 = np.float32, np.float16, ml_dtypes.bfloat16
NAN, INF = np.nan, np.inf

run = partial(one_node.run, opset=24, shapes="exact")
infer = partial(one_node.infer, opset=24)


def floats(x: np.ndarray) -> list[float]:
    return np.asarray(x).astype(np.float64).tolist()


# ---------------------------------------------------------------- unary math

def test_round_takes_halves_to_the_even_neighbour():
    y = run("Round", np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6], F32))
    assert floats(y) == [0, 2, 2, -0, -2, 2, -3]


def test_bfloat16_math_is_computed_in_float32_and_rounded_once():
    y = run("Exp", np.array([0, 1, -1], BF16))
    assert y.dtype == BF16
    assert floats(y) == floats(np.array([1, math.e, 1 / math.e], F32).astype(BF16))


def test_erf_is_accurate_to_double_precision():
    x = np.array([0.0, 0.5, -2.0, 1.0, 3.7, -9.0, INF, NAN])
    want = [math.erf(v) for v in x[:-2]] + [1.0]
    np.testing.assert_allclose(erf(x)[:-1], want, rtol=1e-15, atol=1e-16)
    assert np.isnan(erf(x)[-1])
    assert run("Erf", np.array([[0.5]], F16)).dtype == F16


def test_sign_and_abs_keep_integer_types():
    assert run("Sign", np.array([-5, 0, 7], np.int16)).tolist() == [-1, 0, 1]
    assert run("Abs", np.array([-5, 0, 7], np.int64)).tolist() == [5, 0, 7]


def test_isinf_can_ignore_either_sign_and_isnan_gives_bool():
    x = np.array([INF, -INF, NAN, 1.0], F32)
    assert run("IsInf", x).tolist() == [True, True, False, False]
    assert run("IsInf", x, detect_negative=0).tolist() == [True, False, False, False]
    assert run("IsInf", x, detect_positive=0).tolist() == [False, True, False, False]
    assert run("IsNaN", x.astype(F16)).tolist() == [False, False, True, False]


def test_not_and_bitwise_not():
    assert run("Not", np.array([True, False])).tolist() == [False, True]
    assert run("BitwiseNot", np.array([0, 5], np.uint8)).tolist() == [255, 250]
    assert run("BitwiseNot", np.array([0, 5], np.int32)).tolist() == [-1, -6]


def test_a_0d_input_gives_a_0d_array():
    y = run("Sqrt", np.array(4.0, F32))
    assert y.shape == () and y.dtype == F32 and float(y) == 2.0


# ---------------------------------------------------------------- activations

def test_relu_family():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], F32)
    assert floats(run("Relu", x)) == [0, 0, 0, 0.5, 2]
    assert run("Relu", np.array([-3, 4], np.int8)).tolist() == [0, 4]
    assert floats(run("LeakyRelu", x)) == floats(np.array([-0.02, -0.005, 0, 0.5, 2], F32))
    assert floats(run("ThresholdedRelu", x, alpha=0.5)) == [0, 0, 0, 0, 2]
    assert floats(run("Shrink", x, lambd=0.5, bias=0.25)) == [-1.75, 0, 0, 0, 1.75]


def test_prelu_slope_broadcasts_to_x():
    x = np.array([[-1.0, -1.0, 2.0], [-4.0, 1.0, -1.0]], F32)
    y = run("PRelu", x, np.array([0.5, 0.25, 2.0], F32))
    assert floats(y) == [[-0.5, -0.25, 2.0], [-2.0, 1.0, -2.0]]


def test_prelu_slope_that_would_grow_x_is_an_error():
    with pytest.raises(GraphError, match="slope of shape \\(2, 3\\) does not broadcast"):
        infer("PRelu", TensorType(DType.FLOAT32, (1, 3)), TensorType(DType.FLOAT32, (2, 3)))


def test_exponential_units():
    x = np.array([-1.0, 0.0, 2.0])
    assert np.allclose(run("Elu", x, alpha=2.0), [2 * math.expm1(-1), 0, 2])
    assert np.allclose(run("Selu", x), [1.0507009873554805 * 1.6732632423543772 * math.expm1(-1), 0, 2.1014019747109609])
    assert np.allclose(run("Celu", x, alpha=2.0), [2 * math.expm1(-0.5), 0, 2])
    y = run("Celu", np.array([-3.0, 0.5], BF16), alpha=2.0)
    assert y.dtype == BF16 and floats(y) == floats(np.array([2 * math.expm1(-1.5), 0.5], F32).astype(BF16))


def test_sigmoid_shapes():
    x = np.array([-1000.0, -3.0, 0.0, 1.0, 3.0, 1000.0])
    assert np.allclose(run("Sigmoid", x), 1 / (1 + np.exp(-np.clip(x, -50, 50))))
    assert floats(run("HardSigmoid", x, alpha=0.25, beta=0.5)) == [0, 0, 0.5, 0.75, 1, 1]
    assert np.allclose(run("HardSwish", x), [0, 0, 0, 1 * (1 / 6 + 0.5), 3, 1000])
    assert np.allclose(run("Swish", x, alpha=2.0), x / (1 + np.exp(-2 * np.clip(x, -50, 50))))


def test_softplus_softsign_and_mish_do_not_overflow():
    x = np.array([-1000.0, 0.0, 1000.0], F32)
    assert floats(run("Softplus", x)) == floats(np.array([0, math.log(2), 1000], F32))
    assert floats(run("Softsign", np.array([-3.0, 1.0]))) == [-0.75, 0.5]
    assert np.allclose(run("Mish", x), [0, 0, 1000])


def test_gelu_exact_and_tanh_approximation():
    x = np.array([-1.0, 0.0, 1.5])
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    tanh = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(run("Gelu", x), exact, rtol=1e-14)
    np.testing.assert_allclose(run("Gelu", x, approximate="tanh"), tanh, rtol=1e-14)


def test_clip_bounds_are_optional_inputs():
    x = np.array([-3.0, 0.0, 3.0, NAN], F32)
    assert floats(run("Clip", x, np.array(-1.0, F32), np.array(1.0, F32)))[:3] == [-1, 0, 1]
    assert floats(run("Clip", x, None, np.array(1.0, F32)))[:3] == [-3, 0, 1]
    assert np.isnan(run("Clip", x, np.array(-1.0, F32))[3])
    assert run("Clip", np.array([-100, 5, 100], np.int8), np.array(-10, np.int8), np.array(10, np.int8)).tolist() == [-10, 5, 10]


def test_clip_with_min_above_max_gives_max_everywhere():
    assert floats(run("Clip", np.array([-3.0, 3.0], F32), np.array(2.0, F32), np.array(1.0, F32))) == [1, 1]


def test_clip_bounds_were_attributes_before_opset_11():
    assert floats(run("Clip", np.array([-3.0, 0.5, 3.0], F32), opset=6, min=-1.0, max=1.0)) == [-1, 0.5, 1]


def test_clip_bound_must_be_a_scalar():
    f32 = TensorType(DType.FLOAT32, (4,))
    with pytest.raises(GraphError, match="bound 1 must be a scalar"):
        infer("Clip", f32, TensorType(DType.FLOAT32, (2,)))


# ---------------------------------------------------------------- binary

def test_integer_division_truncates_toward_zero():
    y = run("Div", np.array([-7, 7, -7, 7, 6], np.int32), np.array([2, -2, -2, 2, 3], np.int32))
    assert y.tolist() == [-3, -3, 3, 3, 2]
    assert run("Div", np.array([200], np.uint8), np.array([7], np.uint8)).tolist() == [28]


def test_mod_takes_the_divisor_sign_unless_fmod():
    a, b = np.array([-7, 7, -7, 7], np.int64), np.array([2, -2, -2, 2], np.int64)
    assert run("Mod", a, b).tolist() == [1, -1, -1, 1]
    assert run("Mod", a, b, fmod=1).tolist() == [-1, 1, -1, 1]
    x = np.array([-4.5, 4.5, -0.0], F32)
    assert floats(run("Mod", x, np.array([2.0, -2.0, 2.0], F32))) == [1.5, -1.5, 0.0]
    assert floats(run("Mod", x, np.array([2.0, -2.0, 2.0], F32), fmod=1)) == [-0.5, 0.5, -0.0]


def test_integer_arithmetic_wraps_around():
    assert run("Add", np.array([250], np.uint8), np.array([10], np.uint8)).tolist() == [4]
    assert run("Mul", np.array([100], np.int8), np.array([2], np.int8)).tolist() == [-56]


def test_pow_result_has_the_base_type():
    y = run("Pow", np.array([2, 3], np.int32), np.array([2.5, 2.0], F32))
    assert y.dtype == np.int32 and y.tolist() == [5, 9]
    y = run("Pow", np.array([2.0, 4.0], F32), np.array([3, -1], np.int64))
    assert y.dtype == F32 and floats(y) == [8, 0.25]
    assert run("Pow", np.array([2, 1, -1], np.int64), np.array([-1, -2, -3], np.int64)).tolist() == [0, 1, -1]


def test_bitshift_of_signed_values_and_out_of_range_amounts():
    x = np.array([-16, 64, 1, -1], np.int8)
    assert run("BitShift", x, np.array([2, 1, 7, 8], np.int8), direction="LEFT").tolist() == [-64, -128, -128, 0]
    y = run("BitShift", x, np.array([2, 9, -1, 8], np.int8), direction="RIGHT")
    assert y.tolist() == [-4, 0, 0, -1]  # arithmetic shift; only the sign fill once out of range
    assert run("BitShift", np.array([255], np.uint8), np.array([4], np.uint8), direction="RIGHT").tolist() == [15]


def test_bitwise_and_logical_ops():
    a, b = np.array([12, 10], np.uint16), np.array([10], np.uint16)
    assert run("BitwiseAnd", a, b).tolist() == [8, 10]
    assert run("BitwiseOr", a, b).tolist() == [14, 10]
    assert run("BitwiseXor", a, b).tolist() == [6, 0]
    p, q = np.array([[True], [False]]), np.array([True, False])
    assert run("And", p, q).tolist() == [[True, False], [False, False]]
    assert run("Or", p, q).tolist() == [[True, True], [True, False]]
    assert run("Xor", p, q).tolist() == [[False, True], [True, False]]


def test_comparisons_broadcast_and_give_bool():
    a, b = np.array([[1.0], [2.0]], F16), np.array([1.0, 2.0, 3.0], F16)
    assert run("Equal", a, b).tolist() == [[True, False, False], [False, True, False]]
    assert run("Less", a, b).tolist() == [[False, True, True], [False, False, True]]
    assert run("GreaterOrEqual", a, b).tolist() == [[True, False, False], [True, True, False]]
    assert run("Greater", np.array([3], np.uint64), np.array([2], np.uint64)).tolist() == [True]
    assert run("LessOrEqual", np.array([NAN], F32), np.array([NAN], F32)).tolist() == [False]
    assert run("Equal", np.array(["a", "b"], object), np.array(["a", "c"], object)).tolist() == [True, False]


def test_float16_add_rounds_like_float16():
    y = run("Add", np.array([2048.0], F16), np.array([1.0], F16))
    assert y.dtype == F16 and floats(y) == [2048.0]  # 2049 is not a float16


# ---------------------------------------------------------------- variadic and Where

def test_variadic_ops_broadcast_every_input():
    a, b, c = np.array([[1.0], [6.0]], F32), np.array([4.0, 2.0], F32), np.array(3.0, F32)
    assert floats(run("Max", a, b, c)) == [[4, 3], [6, 6]]
    assert floats(run("Min", a, b, c)) == [[1, 1], [3, 2]]
    assert floats(run("Sum", a, b, c)) == [[8, 6], [13, 11]]
    assert np.allclose(run("Mean", a, b, c), [[8 / 3, 2], [13 / 3, 11 / 3]])
    assert floats(run("Sum", np.array([1.5], F32))) == [1.5]


def test_max_and_min_keep_integer_types():
    y = run("Max", np.array([-5, 200], np.int64), np.array([3, 100], np.int64))
    assert y.dtype == np.int64 and y.tolist() == [3, 200]


def test_where_broadcasts_condition_and_branches():
    cond = np.array([[True], [False]])
    y = run("Where", cond, np.array([1, 2, 3], np.int64), np.array(0, np.int64))
    assert y.tolist() == [[1, 2, 3], [0, 0, 0]]


# ---------------------------------------------------------------- type inference

def test_inference_broadcasts_symbolic_dims_and_comparisons_give_bool():
    x = TensorType(DType.FLOAT32, ("batch", 1, 8))
    assert infer("Less", x, TensorType(DType.FLOAT32, (5, 1))) == TensorType(DType.BOOL, ("batch", 5, 8))
    cond = TensorType(DType.BOOL, ("batch", "seq", 1))
    assert infer("Where", cond, x, TensorType(DType.FLOAT32, ())) == TensorType(DType.FLOAT32, ("batch", "seq", 8))
    assert infer("Pow", TensorType(DType.INT32, (3,)), TensorType(DType.FLOAT32, ())) == TensorType(DType.INT32, (3,))


def test_inputs_of_different_element_types_are_an_error():
    with pytest.raises(GraphError, match="Add node 'n': inputs must share one element type, got float32, int64"):
        infer("Add", TensorType(DType.FLOAT32, (2,)), TensorType(DType.INT64, (2,)))


def test_shapes_that_cannot_broadcast_are_an_error():
    with pytest.raises(GraphError, match="cannot broadcast"):
        infer("Mul", TensorType(DType.FLOAT32, (3,)), TensorType(DType.FLOAT32, (4,)))


def test_ops_reject_element_types_outside_their_kind():
    with pytest.raises(GraphError, match="Exp node 'n': accepts only float tensors, got int32"):
        infer("Exp", TensorType(DType.INT32, (2,)))
    with pytest.raises(GraphError, match="accepts only bool tensors, got float32"):
        infer("And", TensorType(DType.FLOAT32, (2,)), TensorType(DType.FLOAT32, (2,)))
    with pytest.raises(GraphError, match="accepts only integer tensors"):
        infer("BitwiseAnd", TensorType(DType.FLOAT32, (2,)), TensorType(DType.FLOAT32, (2,)))
    with pytest.raises(GraphError, match="condition must be bool"):
        infer("Where", TensorType(DType.INT64, (2,)), TensorType(DType.FLOAT32, (2,)), TensorType(DType.FLOAT32, (2,)))


def test_string_attributes_must_name_a_known_variant():
    f32 = TensorType(DType.FLOAT32, (2,))
    with pytest.raises(GraphError, match="Gelu node 'n': approximate must be one of none, tanh, got 'erf'"):
        infer("Gelu", f32, approximate="erf")
    u8 = TensorType(DType.UINT8, (2,))
    with pytest.raises(GraphError, match="BitShift node 'n': attribute 'direction' is required"):
        infer("BitShift", u8, u8)
