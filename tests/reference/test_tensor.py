"""Shape and data-movement operators: reference kernels and their type inference rules.

``run`` builds a one-node model whose first input is a graph input and whose other inputs are
constants (initializers), as shape-like inputs usually are; it checks that the inferred type of
every output fits the computed value. ``infer`` checks rules on symbolic shapes alone."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.errors import ExecutionError, GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from tests.reference import one_node

F32, I64 = np.float32, np.int64
INT64_MAX = np.iinfo(np.int64).max


def i64(*values) -> np.ndarray:
    return np.array(values, I64)


build = partial(one_node.build, opset=21, consts=slice(1, None))
run = partial(one_node.run, opset=21, consts=slice(1, None))
infer = partial(one_node.infer, opset=21, consts=slice(1, None))


def shape_of(op, x_shape, *constants, **attrs):
    """The inferred output shape of one node over a float32 input of the given (symbolic) shape."""
    return infer(op, TensorType(DType.FLOAT32, x_shape), *constants, **attrs).shape


X = np.arange(24, dtype=F32).reshape(2, 3, 4)


# ---------------------------------------------------------------- constants and pass-through

def test_constant_returns_its_value():
    value = np.array([[1, 2]], I64)
    model = Model(Graph([Node("Constant", [], ["y"], {"value": value})], [], ["y"]), {"": 21})
    infer_types(model)
    assert model.graph.types["y"] == TensorType(DType.INT64, (1, 2))
    assert ReferenceExecutor(model).run({})["y"].tolist() == [[1, 2]]


def test_constant_of_shape_fills_with_the_value_attribute():
    y = run("ConstantOfShape", i64(2, 3), value=np.array([7], np.int32))
    assert y.dtype == np.int32 and y.tolist() == [[7, 7, 7]] * 2
    assert run("ConstantOfShape", np.zeros(0, I64)).shape == ()  # empty shape: a scalar 0.0


def test_identity_and_inference_mode_dropout_pass_the_input_through():
    assert run("Identity", X).tolist() == X.tolist()
    y, mask = run("Dropout", X, np.array(0.5, F32), outputs=2)
    assert y.tolist() == X.tolist() and mask.dtype == np.bool_ and mask.all()


def test_dropout_in_training_mode_is_refused_but_a_zero_ratio_is_identity():
    with pytest.raises(ExecutionError, match="training_mode"):
        run("Dropout", X, np.array(0.5, F32), np.array(True))
    assert run("Dropout", X, np.array(0.0, F32), np.array(True)).tolist() == X.tolist()


def test_shape_slices_with_start_and_end_and_size_counts_elements():
    assert run("Shape", X).tolist() == [2, 3, 4]
    assert run("Shape", X, start=-2).tolist() == [3, 4]
    assert run("Shape", X, start=1, end=-1).tolist() == [3]
    assert run("Shape", X, start=5).tolist() == []  # clamped
    assert run("Size", X).tolist() == 24
    assert infer("Shape", TensorType(DType.FLOAT32, ("b", "s")), start=1) == TensorType(DType.INT64, (1,))


# ---------------------------------------------------------------- reshaping

def test_reshape_copies_zero_dims_and_infers_minus_one():
    assert run("Reshape", X, i64(0, -1)).shape == (2, 12)
    assert run("Reshape", X, i64(-1, 0, 2)).shape == (4, 3, 2)


def test_reshape_with_allowzero_makes_a_zero_dim():
    assert run("Reshape", np.zeros((0, 3), F32), i64(3, 0), allowzero=1).shape == (3, 0)


def test_reshape_inference_cancels_symbols():
    assert shape_of("Reshape", ("b", "s", 768), i64(0, 0, 12, 64)) == ("b", "s", 12, 64)
    assert shape_of("Reshape", ("b", "s", 12, 64), i64(0, 0, -1)) == ("b", "s", 768)
    assert shape_of("Reshape", ("b", "s", 768), i64(-1, 768)) == (None, 768)  # b*s is no single dim
    assert shape_of("Reshape", ("b", 4), i64(2, -1)) == (2, None)


def test_reshape_rejects_a_bad_target():
    with pytest.raises(GraphError, match="at most one -1"):
        build("Reshape", X, i64(-1, -1))
    with pytest.raises(GraphError, match="cannot reshape"):
        build("Reshape", X, i64(5, -1))


def test_flatten_splits_the_dims_at_axis():
    assert run("Flatten", X, axis=0).shape == (1, 24)
    assert run("Flatten", X, axis=-1).shape == (6, 4)
    assert run("Flatten", X, axis=3).shape == (24, 1)
    assert shape_of("Flatten", ("b", 3, 4), axis=1) == ("b", 12)
    assert shape_of("Flatten", ("b", 3, 4), axis=2) == (None, 4)


def test_squeeze_and_unsqueeze_take_axes_as_attribute_before_opset_13():
    x = np.zeros((1, 3, 1), F32)
    assert run("Squeeze", x).shape == (3,)
    assert run("Squeeze", x, i64(-1)).shape == (1, 3)
    assert run("Squeeze", x, opset=11, axes=[0]).shape == (3, 1)
    assert run("Unsqueeze", x, i64(0, -1)).shape == (1, 1, 3, 1, 1)
    assert run("Unsqueeze", x, opset=11, axes=[1]).shape == (1, 1, 3, 1)
    assert shape_of("Unsqueeze", ("b", "s"), i64(1)) == ("b", 1, "s")
    assert shape_of("Squeeze", ("b", 1, "s"), i64(1)) == ("b", "s")


def test_squeezing_a_dim_other_than_one_is_an_error():
    with pytest.raises(GraphError, match="cannot squeeze axis 1 of size 3"):
        build("Squeeze", X, i64(1))


def test_transpose_reverses_by_default():
    assert run("Transpose", X).shape == (4, 3, 2)
    assert run("Transpose", X, perm=[1, 0, 2])[1, 0].tolist() == X[0, 1].tolist()
    assert shape_of("Transpose", ("b", "s", 8), perm=[0, 2, 1]) == ("b", 8, "s")
    with pytest.raises(GraphError, match="not a permutation"):
        build("Transpose", X, perm=[0, 0, 1])


def test_depth_to_space_and_space_to_depth_are_inverses_in_both_modes():
    x = np.arange(2 * 8 * 2 * 3, dtype=F32).reshape(2, 8, 2, 3)
    for mode in ("DCR", "CRD"):
        y = run("DepthToSpace", x, blocksize=2, mode=mode)
        assert y.shape == (2, 2, 4, 6)
        assert run("SpaceToDepth", y, blocksize=2, mode=mode).tolist() == x.tolist()
    # DCR: output pixel (0, 1) of channel 0 comes from input channel 1 (depth, column, row)
    assert run("DepthToSpace", x, blocksize=2)[0, 0, 0, 1] == x[0, 2, 0, 0]
    assert shape_of("DepthToSpace", ("n", 8, "h", 3), blocksize=2) == ("n", 2, None, 6)


# ---------------------------------------------------------------- joining and splitting

def test_concat_adds_dims_along_axis_and_keeps_symbols_elsewhere():
    y = run("Concat", X, X[:, :1], axis=1)
    assert y.shape == (2, 4, 4) and y[:, 3].tolist() == X[:, 0].tolist()
    types = {"a": TensorType(DType.FLOAT32, ("b", 3)), "c": TensorType(DType.FLOAT32, ("b", 5))}
    graph = Graph([Node("Concat", ["a", "c"], ["y"], {"axis": -1})], ["a", "c"], ["y"], dict(types))
    infer_types(Model(graph, {"": 21}))
    assert graph.types["y"].shape == ("b", 8)


def test_split_into_equal_parts_and_an_uneven_last_part():
    parts = run("Split", np.arange(7, dtype=F32), outputs=3, num_outputs=3, opset=18)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    parts = run("Split", X, i64(1, 0, 2), axis=1, outputs=3)
    assert [p.shape for p in parts] == [(2, 1, 4), (2, 0, 4), (2, 2, 4)]
    assert [p.shape for p in run("Split", X, opset=11, axis=2, split=[3, 1], outputs=2)] == [(2, 3, 3), (2, 3, 1)]
    assert [t.shape for t in infer("Split", TensorType(DType.FLOAT32, ("b", 8)), axis=1, outputs=2)] == [("b", 4), ("b", 4)]


def test_split_sizes_must_add_up():
    with pytest.raises(GraphError, match="add up"):
        build("Split", X, i64(1, 1), axis=1, outputs=2)


def test_slice_clamps_counts_from_the_end_and_steps_backwards():
    v = np.arange(6, dtype=F32)
    assert run("Slice", v, i64(1), i64(INT64_MAX)).tolist() == [1, 2, 3, 4, 5]
    assert run("Slice", v, i64(-2), i64(100)).tolist() == [4, 5]
    assert run("Slice", v, i64(-1), i64(-INT64_MAX), i64(0), i64(-2)).tolist() == [5, 3, 1]
    assert run("Slice", v, i64(10), i64(-10), i64(0), i64(-1)).tolist() == [5, 4, 3, 2, 1, 0]
    assert run("Slice", X, i64(1, 0), i64(3, 1), i64(-1, 0)).shape == (1, 3, 2)
    assert run("Slice", X, opset=9, starts=[1], ends=[3], axes=[2]).shape == (2, 3, 2)


def test_slice_inference_keeps_symbols_for_whole_slices():
    assert shape_of("Slice", ("b", "s", 8), i64(0, 2), i64(INT64_MAX, 6), i64(1, 2)) == ("b", "s", 4)
    assert shape_of("Slice", ("b", "s"), i64(1), i64(INT64_MAX), i64(1)) == ("b", None)
    assert shape_of("Slice", ("b", "s"), i64(-1), i64(-INT64_MAX), i64(0), i64(-1)) == ("b", "s")


def test_slice_with_a_zero_step_is_an_error():
    with pytest.raises(GraphError, match="steps"):
        build("Slice", X, i64(0), i64(1), i64(0), i64(0))


# ---------------------------------------------------------------- padding and broadcasting

def test_pad_modes():
    v = np.array([[1, 2, 3]], F32)
    pads = i64(0, 2, 0, 1)
    assert run("Pad", v, pads, np.array(9, F32)).tolist() == [[9, 9, 1, 2, 3, 9]]
    assert run("Pad", v, pads, mode="reflect").tolist() == [[3, 2, 1, 2, 3, 2]]
    assert run("Pad", v, pads, mode="edge").tolist() == [[1, 1, 1, 2, 3, 3]]
    assert run("Pad", v, pads, mode="wrap").tolist() == [[2, 3, 1, 2, 3, 1]]


def test_pad_with_axes_and_negative_pads_crops():
    v = np.array([[1, 2, 3, 4]], F32)
    assert run("Pad", v, i64(-1, 1), None, i64(-1)).tolist() == [[2, 3, 4, 0]]
    assert run("Pad", v, opset=10, pads=[1, 0, 0, 0], value=5.0).tolist() == [[5, 5, 5, 5], [1, 2, 3, 4]]
    assert shape_of("Pad", ("b", 4), i64(0, 1, 0, 2)) == ("b", 7)


def test_center_crop_pad_centers_rounding_the_crop_window_down():
    v = np.arange(5, dtype=F32)
    assert run("CenterCropPad", v, i64(2)).tolist() == [1, 2]
    assert run("CenterCropPad", v, i64(8)).tolist() == [0, 0, 1, 2, 3, 4, 0, 0]  # odd extra pad at the end
    assert run("CenterCropPad", X, i64(1, 6), axes=[0, -1]).shape == (1, 3, 6)


def test_expand_broadcasts_both_ways():
    y = run("Expand", np.array([[1], [2]], F32), i64(3, 1, 4))
    assert y.shape == (3, 2, 4) and y[2, 1].tolist() == [2] * 4
    assert shape_of("Expand", ("b", 1), i64(1, 5)) == ("b", 5)


def test_tile_repeats_each_axis():
    assert run("Tile", np.array([[1, 2]], F32), i64(2, 2)).tolist() == [[1, 2, 1, 2], [1, 2, 1, 2]]
    assert shape_of("Tile", ("b", 3), i64(1, 2)) == ("b", 6)


# ---------------------------------------------------------------- generating

def test_range_counts_ceil_of_span_over_delta():
    assert run("Range", np.array(10, np.int32), np.array(4, np.int32), np.array(-3, np.int32)).tolist() == [10, 7]
    y = run("Range", np.array(0.5, F32), np.array(2.0, F32), np.array(0.5, F32))
    assert y.dtype == F32 and y.tolist() == [0.5, 1.0, 1.5]
    assert run("Range", np.array(3, I64), np.array(3, I64), np.array(1, I64)).shape == (0,)


def test_trilu_keeps_a_triangle_shifted_by_k():
    m = np.ones((3, 3), F32)
    assert run("Trilu", m).tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1]]
    assert run("Trilu", m, np.array(-1, I64), upper=0).tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_eye_like_puts_ones_on_diagonal_k_in_the_given_dtype():
    y = run("EyeLike", np.zeros((2, 3), F32), k=1, dtype=int(DType.INT32))
    assert y.dtype == np.int32 and y.tolist() == [[0, 1, 0], [0, 0, 1]]


def test_one_hot_counts_negative_indices_from_depth_and_ignores_out_of_range():
    y = run("OneHot", i64(0, -1, 5), np.array(3, I64), np.array([0, 9], np.int32))
    assert y.dtype == np.int32 and y.tolist() == [[9, 0, 0], [0, 0, 9], [0, 0, 0]]
    y = run("OneHot", i64(1, 2), np.array(3, I64), np.array([0, 1], F32), axis=0)
    assert y.tolist() == [[0, 0], [1, 0], [0, 1]]


# ---------------------------------------------------------------- indexing

def test_gather_takes_along_axis_with_negative_indices():
    assert run("Gather", X, i64(-1, 0), axis=1)[0].tolist() == [X[0, 2].tolist(), X[0, 0].tolist()]
    assert run("Gather", X, np.array(1, I64), axis=2).shape == (2, 3)
    assert shape_of("Gather", ("b", "s", 8), np.zeros((4, 5), I64), axis=1) == ("b", 4, 5, 8)


def test_gather_elements_picks_per_position():
    d = np.array([[1, 2], [3, 4]], F32)
    assert run("GatherElements", d, np.array([[0, 0], [1, -2]]), axis=1).tolist() == [[1, 1], [4, 3]]


def test_gather_nd_with_batch_dims():
    d = np.arange(8, dtype=F32).reshape(2, 2, 2)
    assert run("GatherND", d, np.array([[0, 1], [1, 0]], I64)).tolist() == [[2, 3], [4, 5]]
    assert run("GatherND", d, np.array([[1], [0]], I64), batch_dims=1).tolist() == [[2, 3], [4, 5]]
    assert shape_of("GatherND", ("b", 5, 6), np.zeros((3, 1), I64)) == (3, 5, 6)


def test_scatter_elements_reductions_combine_duplicate_indices():
    d = np.zeros((1, 3), F32)
    idx, upd = np.array([[1, 1, -1]], I64), np.array([[2, 3, 4]], F32)
    assert run("ScatterElements", d, idx, upd, axis=1, reduction="add").tolist() == [[0, 5, 4]]
    assert run("ScatterElements", d + 1, idx, upd, axis=1, reduction="mul").tolist() == [[1, 6, 4]]
    assert run("ScatterElements", d, idx, upd, axis=1, reduction="max").tolist() == [[0, 3, 4]]
    assert run("Scatter", d, np.array([[2]], I64), np.array([[7]], F32), axis=1).tolist() == [[0, 0, 7]]


def test_scatter_nd_writes_slices_and_reduces():
    d = np.ones((3, 2), F32)
    rows = run("ScatterND", d, np.array([[2], [0]], I64), np.array([[5, 6], [7, 8]], F32))
    assert rows.tolist() == [[7, 8], [1, 1], [5, 6]]
    twice = run("ScatterND", d, np.array([[0, 1], [0, 1]], I64), np.array([3, 4], F32), reduction="mul")
    assert twice.tolist() == [[1, 12], [1, 1], [1, 1]]


def test_tensor_scatter_writes_each_batch_item_at_its_index_wrapping_in_circular_mode():
    cache = np.zeros((2, 4, 1), F32)
    update = np.array([[[1], [2]], [[3], [4]]], F32)
    y = run("TensorScatter", cache, update, i64(1, 3), axis=1, mode="circular", opset=24)
    assert y[..., 0].tolist() == [[0, 1, 2, 0], [4, 0, 0, 3]]
    with pytest.raises(ExecutionError, match="overflows"):
        run("TensorScatter", cache, update, i64(1, 3), axis=1, opset=24)


def test_non_zero_lists_coordinates_per_axis():
    y = run("NonZero", np.array([[0, 1], [2, 0]], F32))
    assert y.dtype == I64 and y.tolist() == [[0, 1], [1, 0]]


def test_compress_keeps_selected_slices_or_flat_elements():
    assert run("Compress", X, np.array([False, True]), axis=0).shape == (1, 3, 4)
    assert run("Compress", np.array([[1, 2], [3, 4]], F32), np.array([0, 1, 1], bool)).tolist() == [2, 3]


def test_unique_in_order_of_first_occurrence_with_all_outputs():
    x = np.array([2, 1, 1, 3, 2], F32)
    y, first, inverse, counts = run("Unique", x, sorted=0, outputs=4)
    assert y.tolist() == [2, 1, 3] and first.tolist() == [0, 1, 3]
    assert inverse.tolist() == [0, 1, 1, 2, 0] and counts.tolist() == [2, 2, 1]
    assert run("Unique", x, outputs=4)[0].tolist() == [1, 2, 3]
    rows = run("Unique", np.array([[1, 0], [0, 1], [1, 0]], F32), axis=0, outputs=3)
    assert rows[0].tolist() == [[0, 1], [1, 0]] and rows[2].tolist() == [1, 0, 1]


def test_reverse_sequence_reverses_each_batch_item_up_to_its_length():
    x = np.arange(8, dtype=F32).reshape(2, 4)  # batch on axis 0, time on axis 1
    y = run("ReverseSequence", x, i64(3, 1), batch_axis=0, time_axis=1)
    assert y.tolist() == [[2, 1, 0, 3], [4, 5, 6, 7]]


# ---------------------------------------------------------------- resampling

IMG = np.array([[[[1, 2], [3, 4]]]], F32)


def test_resize_nearest_with_asymmetric_coordinates_repeats_pixels():
    scales = np.array([1, 1, 2, 2], F32)
    y = run("Resize", IMG, None, scales, coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    assert y[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_resize_linear_half_pixel_and_align_corners():
    scales = np.array([1, 1, 1, 2], F32)
    row = IMG[:, :, :1]
    assert run("Resize", row, None, scales, mode="linear")[0, 0, 0].tolist() == [1, 1.25, 1.75, 2]
    sizes = i64(1, 1, 1, 3)
    y = run("Resize", row, None, None, sizes, mode="linear", coordinate_transformation_mode="align_corners")
    assert y[0, 0, 0].tolist() == [1, 1.5, 2]


def test_resize_cubic_interpolates_exactly_at_input_pixels():
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4) ** 2
    y = run("Resize", x, None, None, i64(1, 1, 7, 7), mode="cubic", coordinate_transformation_mode="align_corners")
    assert np.allclose(y[0, 0, ::2, ::2], x[0, 0])


def test_resize_antialias_averages_when_downsampling():
    x = np.array([[1, 3, 5, 7]], F32)
    plain = run("Resize", x, None, np.array([1, 0.5], F32), mode="linear")
    smooth = run("Resize", x, None, np.array([1, 0.5], F32), mode="linear", antialias=1)
    assert plain.tolist() == [[2, 6]]
    # a triangle filter twice as wide: weights 1/8, 3/8, 3/8, 1/8 over pixels -1..2 (edge-padded)
    assert smooth.tolist() == [[2.25, 5.75]]


def test_resize_tf_crop_and_resize_fills_outside_with_the_extrapolation_value():
    roi = np.array([0, 0, 0, 0.5, 1, 1, 1, 1.5], F32)
    y = run("Resize", IMG, roi, None, i64(1, 1, 2, 3), mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-1.0)
    assert y[0, 0].tolist() == [[1.5, 2, -1], [3.5, 4, -1]]


def test_resize_sizes_with_axes_and_keep_aspect_ratio():
    x = np.zeros((1, 4, 6), F32)

    def resized(sizes, axes, policy="stretch"):
        return run("Resize", x, None, None, i64(*sizes), axes=axes, keep_aspect_ratio_policy=policy).shape

    # one scale for all listed axes: the smallest (not_larger) or largest (not_smaller) ratio
    assert resized((2, 6), [1, 2], "not_larger") == (1, 2, 3)
    assert resized((2, 2), [2, 1], "not_smaller") == (1, 2, 3)
    assert resized((2, 2), [1, 2]) == (1, 2, 2)


def test_resize_of_integers_rounds_and_saturates():
    x = np.array([[0, 255]], np.uint8)
    y = run("Resize", x, None, np.array([1, 2], F32), mode="cubic")  # in float: -26.9, 57.8, 197.2, 281.9
    assert y.dtype == np.uint8 and y.tolist() == [[0, 58, 197, 255]]


def test_resize_inference_keeps_symbols_of_unscaled_axes():
    assert shape_of("Resize", ("n", 3, 10, 10), None, np.array([1, 1, 1.5, 0.33], F32)) == ("n", 3, 15, 3)
    assert shape_of("Resize", ("n", 3, "h", "w"), None, None, i64(1, 3, 8, 8)) == (1, 3, 8, 8)
    with pytest.raises(GraphError, match="exactly one of scales and sizes"):
        build("Resize", IMG, None, np.array([1, 1, 2, 2], F32), i64(1, 1, 4, 4))


def test_upsample_repeats_nearest_pixels():
    y = run("Upsample", IMG, np.array([1, 1, 2, 3], F32), opset=9)
    assert y.shape == (1, 1, 4, 6) and y[0, 0, 3].tolist() == [3, 3, 3, 4, 4, 4]


def test_col2im_sums_overlapping_blocks():
    # a 1x4 image, 1x2 blocks with stride 1: three block positions, columns [top-left, top-right]
    cols = np.array([[[1, 2, 3], [10, 20, 30]]], F32)
    y = run("Col2Im", cols, i64(1, 4), i64(1, 2))
    assert y.tolist() == [[[[1, 12, 23, 30]]]]
    assert run("Col2Im", cols, i64(1, 2), i64(1, 2), pads=[0, 1, 0, 1]).tolist() == [[[[12, 23]]]]
