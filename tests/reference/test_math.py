"""Linear algebra, reductions, softmax, losses, sorting and scans: reference kernels and the
type inference rules that go with them. Each case runs one node through inference and the
reference executor, and checks that the inferred type fits the computed value."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from rtxrt.errors import ExecutionError, GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from tests.reference import one_node
from tests.reference.one_node import out_type

F32 = np.float32

build = partial(one_node.build, opset=18)
run = partial(one_node.run, opset=18)


# ---------------------------------------------------------------- linear algebra

def test_matmul_of_two_vectors_is_a_0d_dot_product():
    y = run("MatMul", np.array([1, 2, 3], F32), np.array([4, 5, 6], F32))
    assert y.shape == () and y == 32


def test_matmul_broadcasts_batch_dims_and_drops_the_dims_of_1d_operands():
    assert run("MatMul", np.ones((5, 1, 2, 3), F32), np.ones((4, 3, 2), F32)).shape == (5, 4, 2, 2)
    assert run("MatMul", np.ones((2, 3), F32), np.ones(3, F32)).tolist() == [3, 3]
    assert run("MatMul", np.ones(3, F32), np.ones((2, 3, 4), F32)).shape == (2, 4)


def test_matmul_infers_symbolic_shapes_and_rejects_mismatched_inner_dims():
    graph = Graph([Node("MatMul", ["a", "b"], ["y"])], ["a", "b"], ["y"],
                  {"a": TensorType(DType.FLOAT32, ("batch", "seq", 8)), "b": TensorType(DType.FLOAT32, (8, 16))})
    infer_types(Model(graph, {"": 18}))
    assert graph.types["y"] == TensorType(DType.FLOAT32, ("batch", "seq", 16))
    with pytest.raises(GraphError, match="inner dims differ"):
        build("MatMul", np.ones((2, 3), F32), np.ones((4, 5), F32))


def test_float16_matmul_accumulates_in_float32():
    # in float16, 2048 + 1 rounds back to 2048 (its spacing there is 2); float32 keeps 2050
    y = run("MatMul", np.array([[2048, 1, 1]], np.float16), np.ones((3, 1), np.float16))
    assert y.dtype == np.float16 and y[0, 0] == 2050


def test_gemm_transposes_scales_and_broadcasts_c():
    a = np.array([[1, 3], [2, 4]], F32)  # A' = [[1, 2], [3, 4]]
    b = np.eye(2, dtype=F32)
    y = run("Gemm", a, b, np.array([10, 20], F32), transA=1, alpha=2.0, beta=0.5)
    assert y.tolist() == [[7, 14], [11, 18]]
    assert run("Gemm", a, b).tolist() == a.tolist()


def test_gemm_rejects_a_c_that_does_not_broadcast_to_the_output():
    with pytest.raises(GraphError, match="does not broadcast"):
        build("Gemm", np.ones((2, 3), F32), np.ones((3, 4), F32), np.ones((3,), F32))


def test_einsum_in_implicit_mode_orders_output_labels_alphabetically():
    x = np.arange(6, dtype=F32).reshape(2, 3)
    assert run("Einsum", x, equation="ba").tolist() == x.T.tolist()
    assert run("Einsum", np.eye(3, dtype=F32), equation="ii").tolist() == 3  # a repeated label sums
    y = run("Einsum", np.ones((5, 2, 3), F32), np.ones((5, 3, 4), F32), equation="...ij, ...jk -> ...ik")
    assert y.shape == (5, 2, 4) and (y == 3).all()


def test_einsum_rejects_labels_with_different_sizes():
    with pytest.raises(GraphError, match="label 'j' has sizes 3 and 4"):
        build("Einsum", np.ones((2, 3), F32), np.ones((4, 5), F32), equation="ij,jk->ik")


def test_det_of_a_batch_of_matrices():
    x = np.array([[[1, 2], [3, 4]], [[2, 0], [0, 3]]], F32)
    np.testing.assert_allclose(run("Det", x), [-2, 6], rtol=1e-6)
    assert run("Det", x[0]).shape == ()


# ---------------------------------------------------------------- reductions

X = np.array([[1, 2, 3], [4, 5, 6]], F32)


def test_reduce_sum_takes_axes_as_an_input_since_opset_13():
    assert run("ReduceSum", X, np.array([1]), consts=(1,)).tolist() == [[6], [15]]
    assert run("ReduceSum", X, np.array([0]), consts=(1,), keepdims=0).tolist() == [5, 7, 9]


def test_other_reductions_took_axes_as_an_attribute_before_opset_18():
    assert run("ReduceMean", X, opset=17, axes=[1], keepdims=0).tolist() == [2, 5]
    assert run("ReduceMax", X, np.array([-1]), opset=18, consts=(1,), keepdims=0).tolist() == [3, 6]


def test_empty_axes_reduce_everything_unless_noop_with_empty_axes():
    y = run("ReduceSum", X, np.array([], np.int64), consts=(1,))
    assert y.shape == (1, 1) and y[0, 0] == 21
    assert run("ReduceProd", X, keepdims=0).shape == ()
    assert run("ReduceSum", X, np.array([], np.int64), consts=(1,), noop_with_empty_axes=1).tolist() == X.tolist()


def test_a_noop_reduction_still_applies_the_per_element_part():
    x = np.array([-2, 3], F32)
    assert run("ReduceSumSquare", x, noop_with_empty_axes=1).tolist() == [4, 9]
    assert run("ReduceL1", x, noop_with_empty_axes=1).tolist() == [2, 3]


def test_reducing_an_empty_set_gives_the_identity_element():
    empty = np.zeros((2, 0), F32)
    axis = np.array([1])
    assert run("ReduceSum", empty, axis, consts=(1,), keepdims=0).tolist() == [0, 0]
    assert run("ReduceProd", empty, axis, consts=(1,), keepdims=0).tolist() == [1, 1]
    assert run("ReduceMax", empty, axis, consts=(1,), keepdims=0).tolist() == [-np.inf] * 2
    assert run("ReduceMin", empty, axis, consts=(1,), keepdims=0).tolist() == [np.inf] * 2
    assert run("ReduceLogSum", empty, axis, consts=(1,), keepdims=0).tolist() == [-np.inf] * 2
    assert run("ReduceLogSumExp", empty, axis, consts=(1,), keepdims=0).tolist() == [-np.inf] * 2
    assert run("ReduceMax", np.zeros((0,), np.int32), keepdims=0) == np.iinfo(np.int32).min
    assert np.isnan(run("ReduceMean", empty, axis, consts=(1,), keepdims=0)).all()  # 0 / 0


def test_reductions_keep_the_input_dtype():
    assert run("ReduceSum", np.array([7, 8], np.int32)).dtype == np.int32
    assert run("ReduceMax", np.array([[True, False], [False, False]]), np.array([1]), consts=(1,), opset=20,
               keepdims=0).tolist() == [True, False]
    y = run("ReduceSum", np.array([2048, 1, 1], np.float16))  # accumulated in float32
    assert y.dtype == np.float16 and y.tolist() == [2050]


def test_reduce_log_sum_exp_is_stable_for_large_values():
    y = run("ReduceLogSumExp", np.array([1000, 1000], F32), keepdims=0)
    np.testing.assert_allclose(y, 1000 + np.log(2), rtol=1e-6)


def test_reduce_l2_and_log_sum():
    np.testing.assert_allclose(run("ReduceL2", np.array([3, 4], F32), keepdims=0), 5)
    np.testing.assert_allclose(run("ReduceLogSum", np.array([1, 2], F32), keepdims=0), np.log(3), rtol=1e-6)


def test_axes_known_only_at_run_time_leave_the_dims_unknown():
    model = build("ReduceSum", np.ones((1, 3), F32), np.array([1]))
    assert out_type(model).shape == (1, None)
    model = build("ReduceSum", np.ones((1, 3), F32), np.array([1]), keepdims=0)
    assert out_type(model).shape is None


def test_reduce_rejects_out_of_range_and_repeated_axes():
    with pytest.raises(GraphError, match="out of range"):
        build("ReduceSum", X, np.array([2]), consts=(1,))
    with pytest.raises(GraphError, match="repeat"):
        build("ReduceSum", X, np.array([1, -1]), consts=(1,))


def test_argmax_and_argmin_return_the_first_extreme_unless_select_last_index():
    x = np.array([[1, 5, 5], [0, 0, 2]], F32)
    assert run("ArgMax", x, axis=1).tolist() == [[1], [2]]
    assert run("ArgMax", x, axis=1, keepdims=0, select_last_index=1).tolist() == [2, 2]
    assert run("ArgMin", x, axis=1, keepdims=0).tolist() == [0, 0]
    assert run("ArgMin", x, axis=1, keepdims=0, select_last_index=1).tolist() == [0, 1]
    assert run("ArgMax", x).dtype == np.int64


# ---------------------------------------------------------------- softmax family and losses

def test_softmax_subtracts_the_max_so_large_inputs_do_not_overflow():
    y = run("Softmax", np.array([1000, 1000, -np.inf], F32))
    assert y.tolist() == [0.5, 0.5, 0]
    np.testing.assert_allclose(run("LogSoftmax", np.array([1000, 1000], F32)), [-np.log(2)] * 2, rtol=1e-6)


def test_softmax_works_along_one_axis_since_opset_13():
    x = np.zeros((2, 3), F32)
    np.testing.assert_allclose(run("Softmax", x, axis=0), np.full((2, 3), 0.5))
    np.testing.assert_allclose(run("Softmax", x), np.full((2, 3), 1 / 3))  # axis defaults to -1


def test_softmax_before_opset_13_coerces_the_input_to_2d_at_axis():
    x = np.zeros((2, 2, 2), F32)
    np.testing.assert_allclose(run("Softmax", x, opset=11), np.full((2, 2, 2), 1 / 4))  # axis 1: rows of 4
    np.testing.assert_allclose(run("Softmax", x, opset=11, axis=0), np.full((2, 2, 2), 1 / 8))
    y = run("Hardmax", np.arange(8, dtype=F32).reshape(2, 2, 2), opset=11)
    assert y.reshape(2, 4).tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]


def test_hardmax_marks_the_first_maximum():
    assert run("Hardmax", np.array([[3, 7, 7], [1, 0, 1]], F32)).tolist() == [[0, 1, 0], [1, 0, 0]]


LOG_P = np.array([[[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]], [[0.0, 1.0], [2.0, 2.0], [1.0, 2.0]]], F32)
TARGET = np.array([[2, 1], [0, 2]])
WEIGHT = np.array([0.2, 0.3, 0.1], F32)


def test_nll_loss_examples_of_the_spec():
    assert run("NegativeLogLikelihoodLoss", LOG_P, TARGET, reduction="none").tolist() == [[-3, -2], [-0, -2]]
    np.testing.assert_allclose(run("NegativeLogLikelihoodLoss", LOG_P, TARGET, WEIGHT, reduction="sum"), -1.1)
    y = run("NegativeLogLikelihoodLoss", LOG_P, TARGET, WEIGHT)
    assert y.shape == () and y.dtype == F32
    np.testing.assert_allclose(y, -1.1 / 0.7, rtol=1e-6)


def test_ignored_targets_count_neither_in_the_loss_nor_in_the_mean():
    y = run("NegativeLogLikelihoodLoss", LOG_P, TARGET, ignore_index=2)  # only -2 and -0 remain
    np.testing.assert_allclose(y, -1.0)
    y = run("NegativeLogLikelihoodLoss", LOG_P, TARGET, reduction="none", ignore_index=2)
    assert y.tolist() == [[0, -2], [0, 0]]


def test_a_target_outside_the_classes_is_an_error():
    with pytest.raises(ExecutionError, match="outside the 3 classes"):
        run("NegativeLogLikelihoodLoss", LOG_P, np.array([[3, 1], [0, 2]]))


def test_softmax_cross_entropy_is_nll_of_log_softmax_and_can_return_it():
    scores = np.array([[0, 0], [1000, 0]], F32)
    loss, log_prob = run("SoftmaxCrossEntropyLoss", scores, np.array([0, 1]), outputs=2, reduction="none")
    np.testing.assert_allclose(log_prob, [[-np.log(2), -np.log(2)], [0, -1000]], rtol=1e-6)
    np.testing.assert_allclose(loss, [np.log(2), 1000], rtol=1e-6)
    assert run("SoftmaxCrossEntropyLoss", scores, np.array([0, 1])).shape == ()


# ---------------------------------------------------------------- sorting and scans

def test_topk_breaks_ties_by_the_smaller_index():
    x = np.array([[1, 3, 3, 2, 1]], F32)
    values, indices = run("TopK", x, np.array([3]), outputs=2, consts=(1,))
    assert values.tolist() == [[3, 3, 2]] and indices.tolist() == [[1, 2, 3]]
    values, indices = run("TopK", x, np.array([2]), outputs=2, consts=(1,), largest=0)
    assert values.tolist() == [[1, 1]] and indices.tolist() == [[0, 4]]


def test_topk_along_another_axis_and_with_k_as_an_attribute_before_opset_10():
    x = np.array([[1, 9], [5, 2], [7, 7]], np.int32)
    values, indices = run("TopK", x, np.array([1]), outputs=2, consts=(1,), axis=0)
    assert values.tolist() == [[7, 9]] and indices.tolist() == [[2, 0]] and values.dtype == np.int32
    values, indices = run("TopK", x, opset=9, outputs=2, k=1)
    assert values.tolist() == [[9], [5], [7]] and indices.tolist() == [[1], [0], [0]]


def test_topk_infers_k_into_the_shape_and_rejects_too_large_k():
    assert out_type(build("TopK", np.ones((4, 6), F32), np.array([2]), outputs=2, consts=(1,)), 1) == \
        TensorType(DType.INT64, (4, 2))
    assert out_type(build("TopK", np.ones((4, 6), F32), np.array([2]), outputs=2)).shape == (4, None)
    with pytest.raises(GraphError, match="exceeds"):
        build("TopK", np.ones((4, 6), F32), np.array([7]), outputs=2, consts=(1,))


@pytest.mark.parametrize(
    "op, exclusive, reverse, expected",
    [
        ("CumSum", 0, 0, [1, 3, 6]),
        ("CumSum", 1, 0, [0, 1, 3]),
        ("CumSum", 0, 1, [6, 5, 3]),
        ("CumSum", 1, 1, [5, 3, 0]),
        ("CumProd", 0, 0, [1, 2, 6]),
        ("CumProd", 1, 0, [1, 1, 2]),
        ("CumProd", 0, 1, [6, 6, 3]),
        ("CumProd", 1, 1, [6, 3, 1]),
    ],
)
def test_scans_exclusive_and_reverse(op, exclusive, reverse, expected):
    y = run(op, np.array([1, 2, 3], np.int32), np.array(0, np.int32), opset=26, exclusive=exclusive, reverse=reverse)
    assert y.tolist() == expected and y.dtype == np.int32


def test_cumsum_along_the_last_axis_of_a_matrix():
    assert run("CumSum", X, np.array([-1])).tolist() == [[1, 3, 6], [4, 9, 15]]
