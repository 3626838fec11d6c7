"""Control flow, recurrent layers, signal processing and the other long-tail operators:
reference kernels and their type inference rules. Most cases run one node through inference
and the reference executor and check that the inferred type fits the computed value."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from rtxrt.errors import GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from tests.reference import one_node
from tests.reference.one_node import execute, out_type

F32 = np.float32
I64 = np.int64

build = partial(one_node.build, opset=22)
run = partial(one_node.run, opset=22)


def t(dtype, *shape) -> TensorType:
    return TensorType(DType.from_numpy(dtype), tuple(shape))


# ---------------------------------------------------------------- control flow

def if_model(then_out: TensorType, else_out: TensorType) -> Model:
    """y = If(cond) then a else b, both branches returning a value of the enclosing graph."""
    then_branch = Graph([], [], ["a"], name="then")
    else_branch = Graph([], [], ["b"], name="else")
    node = Node("If", ["cond"], ["y"], {"then_branch": then_branch, "else_branch": else_branch}, name="if")
    types = {"cond": t(np.bool_), "a": then_out, "b": else_out}
    return infer_types(Model(Graph([node], ["cond", "a", "b"], ["y"], types), {"": 21}))


def test_if_runs_the_branch_its_condition_picks_and_branches_see_the_enclosing_scope():
    model = if_model(t(F32, 2), t(F32, 2))
    a, b = np.array([1, 2], F32), np.array([3, 4], F32)
    assert execute(model, {"cond": np.array(True), "a": a, "b": b})[0].tolist() == [1, 2]
    assert execute(model, {"cond": np.array(False), "a": a, "b": b})[0].tolist() == [3, 4]


def test_a_branch_may_return_an_enclosing_value_whose_last_node_reader_ran_before_the_if():
    # r is read by Neg before the If; the then branch returns r itself, with no node reading it.
    then_branch = Graph([], [], ["r"], name="then")
    else_branch = Graph([], [], ["n"], name="else")
    nodes = [Node("Relu", ["x"], ["r"], name="relu"), Node("Neg", ["r"], ["n"], name="neg"),
             Node("If", ["cond"], ["y"], {"then_branch": then_branch, "else_branch": else_branch}, name="if")]
    model = infer_types(Model(Graph(nodes, ["cond", "x"], ["y"], {"cond": t(np.bool_), "x": t(F32, 2)}), {"": 21}))
    x = np.array([-1, 2], F32)
    assert execute(model, {"cond": np.array(True), "x": x})[0].tolist() == [0, 2]
    assert execute(model, {"cond": np.array(False), "x": x})[0].tolist() == [-0.0, -2]


def test_if_output_type_keeps_what_both_branches_agree_on():
    assert out_type(if_model(t(F32, 2, "n"), t(F32, 2, "n"))) == t(F32, 2, "n")
    assert out_type(if_model(t(F32, 2, 3), t(F32, 2, 5))) == t(F32, 2, None)
    assert out_type(if_model(t(F32, 2), t(F32, 2, 1))) == TensorType(DType.FLOAT32, None)


def test_if_branches_of_different_element_types_are_an_error():
    with pytest.raises(GraphError, match="If node 'if'.*branches disagree"):
        if_model(t(F32, 2), t(I64, 2))


def counting_loop(trip_count=None, cond=None, limit=None) -> tuple[Model, dict]:
    """acc += 2 each iteration, scanning out acc; with ``limit`` the body continues while
    acc < limit, else it passes its condition through. The trip count is a constant."""
    nodes = [Node("Add", ["acc", "step"], ["acc_next"], name="add")]
    body_cond = "cond_in"
    if limit is not None:
        nodes.append(Node("Less", ["acc_next", "limit"], ["going"], name="less"))
        body_cond = "going"
    body = Graph(nodes, ["i", "cond_in", "acc"], [body_cond, "acc_next", "acc_next"], name="body",
                 types={"i": t(I64), "cond_in": t(np.bool_), "acc": t(F32)})
    loop = Node("Loop", ["M" if trip_count is not None else "", "cond" if cond is not None else "", "acc0"],
                ["final", "history"], {"body": body}, name="loop")
    feeds = {"acc0": np.array(0, F32), "step": np.array(2, F32), "limit": limit, "cond": cond}
    feeds = {k: np.asarray(v) for k, v in feeds.items() if v is not None}
    constants = {} if trip_count is None else {"M": np.array(trip_count, I64)}
    graph = Graph([loop], list(feeds), ["final", "history"], {k: TensorType.of(v) for k, v in feeds.items()}, constants)
    return infer_types(Model(graph, {"": 21})), feeds


def test_loop_with_a_trip_count_stacks_its_scan_outputs():
    model, feeds = counting_loop(3)
    final, history = execute(model, feeds)
    assert final == 6 and history.tolist() == [2, 4, 6]
    assert out_type(model, 1) == t(F32, 3)  # constant trip count, condition passed through


def test_loop_stops_when_its_body_condition_turns_false():
    model, feeds = counting_loop(cond=True, limit=np.array(7, F32))
    final, history = execute(model, feeds)
    assert final == 8 and history.tolist() == [2, 4, 6, 8]
    assert out_type(model, 1) == t(F32, None)


def test_loop_that_never_runs_returns_its_initial_values_and_empty_scans():
    model, feeds = counting_loop(0)
    final, history = execute(model, feeds)
    assert final == 0 and history.shape == (0,) and history.dtype == F32


def shift_scan(**attrs) -> Model:
    """A scan whose state is the previous element: it scans out x shifted by one step."""
    body = Graph([], ["prev", "x_t"], ["x_t", "prev"], name="body", types={"prev": t(F32, 2), "x_t": t(F32, 2)})
    node = Node("Scan", ["init", "x"], ["last", "shifted"], {"body": body, "num_scan_inputs": 1, **attrs}, name="scan")
    graph = Graph([node], ["init", "x"], ["last", "shifted"], {"init": t(F32, 2), "x": t(F32, 3, 2)})
    return infer_types(Model(graph, {"": 21}))


def test_scan_carries_state_across_the_scan_axis():
    x = np.array([[1, 2], [3, 4], [5, 6]], F32)
    last, shifted = execute(shift_scan(), {"init": np.zeros(2, F32), "x": x})
    assert last.tolist() == [5, 6] and shifted.tolist() == [[0, 0], [1, 2], [3, 4]]


def test_scan_directions_and_axes():
    x = np.array([[1, 2], [3, 4], [5, 6]], F32)
    model = shift_scan(scan_input_directions=[1], scan_output_axes=[1], scan_output_directions=[1])
    last, shifted = execute(model, {"init": np.zeros(2, F32), "x": x})
    # visits rows 5,6 then 3,4 then 1,2; outputs are reversed back and laid out along axis 1
    assert last.tolist() == [1, 2] and shifted.tolist() == [[3, 5, 0], [4, 6, 0]]
    assert out_type(model, 1) == t(F32, 2, 3)


# ---------------------------------------------------------------- recurrent layers

def test_rnn_applies_tanh_to_input_plus_recurrence():
    x = np.array([[[0.5]], [[1.0]]], F32)  # [seq 2, batch 1, input 1]
    w, r = np.full((1, 1, 1), 2, F32), np.full((1, 1, 1), 0.5, F32)
    b = np.array([[0.1, 0.2]], F32)
    y, h = run("RNN", x, w, r, b, outputs=2, hidden_size=1)
    h1 = np.tanh(2 * 0.5 + 0.3)
    h2 = np.tanh(2 * 1.0 + 0.5 * h1 + 0.3)
    np.testing.assert_allclose(y.reshape(-1), [h1, h2], rtol=1e-6)
    np.testing.assert_allclose(h.reshape(-1), [h2], rtol=1e-6)


def test_sequence_lengths_zero_the_outputs_past_each_sequence_and_keep_its_last_state():
    x = np.ones((3, 2, 1), F32)
    w, r = np.ones((1, 1, 1), F32), np.zeros((1, 1, 1), F32)
    y, h = run("RNN", x, w, r, None, np.array([3, 1], np.int32), outputs=2, hidden_size=1, activations=["Relu"])
    assert y[:, 0, :, 0].tolist() == [[1, 1], [1, 0], [1, 0]]
    assert h[0, :, 0].tolist() == [1, 1]


def test_gru_reset_gate_applies_before_or_after_the_recurrence():
    x = np.array([[[1.0]]], F32)
    w = np.array([[[0.0], [0.0], [1.0]]], F32)  # z, r, h gates
    r = np.array([[[0.0], [0.0], [1.0]]], F32)
    b = np.array([[0, 0, 0, 0, 0, 2]], F32)  # recurrence bias of the h gate
    h0 = np.array([[[1.0]]], F32)
    z = reset = 0.5  # sigmoid(0)
    for linear_before_reset, candidate in ((0, np.tanh(1 + reset * 1 + 2)), (1, np.tanh(1 + reset * (1 + 2)))):
        _, h = run("GRU", x, w, r, b, None, h0, outputs=2, hidden_size=1, linear_before_reset=linear_before_reset)
        np.testing.assert_allclose(h.item(), (1 - z) * candidate + z * 1.0, rtol=1e-6)


def test_lstm_peepholes_see_the_cell_state():
    x = np.array([[[0.0]]], F32)
    w, r = np.zeros((1, 4, 1), F32), np.zeros((1, 4, 1), F32)
    b = np.array([[0, 0, 0, 1, 0, 0, 0, 0]], F32)  # cell gate input 1 (i, o, f, c order)
    p = np.array([[1.0, 2.0, 3.0]], F32)  # input, output, forget peepholes
    c0 = np.array([[[0.5]]], F32)
    y, h, c = run("LSTM", x, w, r, b, None, None, c0, p, outputs=3, hidden_size=1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    cell = sig(3 * 0.5) * 0.5 + sig(1 * 0.5) * np.tanh(1)
    np.testing.assert_allclose(c.item(), cell, rtol=1e-6)
    np.testing.assert_allclose(h.item(), sig(2 * cell) * np.tanh(cell), rtol=1e-6)


def test_batch_first_layout_transposes_inputs_and_outputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2)).astype(F32)
    w, r = rng.standard_normal((2, 8, 2)).astype(F32), rng.standard_normal((2, 8, 2)).astype(F32)
    y0, h0, c0 = run("LSTM", x, w, r, outputs=3, hidden_size=2, direction="bidirectional")
    y1, h1, c1 = run("LSTM", x.transpose(1, 0, 2), w, r, outputs=3, hidden_size=2, direction="bidirectional", layout=1)
    np.testing.assert_allclose(y1, y0.transpose(2, 0, 1, 3), rtol=1e-6)
    np.testing.assert_allclose(h1, h0.transpose(1, 0, 2), rtol=1e-6)
    np.testing.assert_allclose(c1, c0.transpose(1, 0, 2), rtol=1e-6)


def test_recurrent_output_types():
    x, w, r = np.zeros((5, 3, 2), F32), np.zeros((2, 12, 2), F32), np.zeros((2, 12, 4), F32)
    model = build("GRU", x, w, r, outputs=2, direction="bidirectional")
    assert out_type(model, 0) == t(F32, 5, 2, 3, 4) and out_type(model, 1) == t(F32, 2, 3, 4)
    model = build("GRU", x, w, r, outputs=2, direction="bidirectional", layout=1)
    assert out_type(model, 0) == t(F32, 5, 3, 2, 4) and out_type(model, 1) == t(F32, 5, 2, 4)
    with pytest.raises(GraphError, match="direction must be"):
        build("RNN", x, w[:, :4], r[:, :4], direction="sideways")


def test_linear_attention_accumulates_outer_products_of_keys_and_values():
    q = np.array([[[1.0, 0.0], [0.0, 1.0]]], F32)  # [batch 1, steps 2, 1 head x d_k 2]
    k = np.array([[[1.0, 0.0], [0.0, 2.0]]], F32)
    v = np.array([[[3.0], [5.0]]], F32)  # d_v 1
    out, state = run("LinearAttention", q, k, v, opset=27, outputs=2, q_num_heads=1, kv_num_heads=1,
                     update_rule="linear", scale=1.0)
    assert out.reshape(-1).tolist() == [3, 10]
    assert state.reshape(-1).tolist() == [3, 10]


def test_causal_conv_pads_with_the_past_state_and_returns_the_new_one():
    x = np.array([[[1, 2, 3]]], F32)
    w = np.array([[[1, 10]]], F32)  # y[t] = x[t - 1] + 10 x[t]
    y, state = run("CausalConvWithState", x, w, None, np.array([[[5]]], F32), opset=27, outputs=2)
    assert y.tolist() == [[[15, 21, 32]]] and state.tolist() == [[[3]]]


# ---------------------------------------------------------------- signal processing

def test_dft_of_an_impulse_is_flat_and_the_inverse_restores_it():
    x = np.array([1, 0, 0, 0], F32).reshape(1, 4, 1)
    y = run("DFT", x, opset=17, axis=1)
    assert y.shape == (1, 4, 2) and y[..., 0].tolist() == [[1, 1, 1, 1]] and not y[..., 1].any()
    back = run("DFT", y, None, np.array(-2, I64), consts=(2,), opset=20, inverse=1)
    np.testing.assert_allclose(back[..., 0], x[..., 0], atol=1e-7)


def test_one_sided_dft_keeps_half_the_spectrum_and_irfft_recovers_the_signal():
    x = np.arange(6, dtype=F32).reshape(1, 6, 1)
    model = build("DFT", x, None, np.array(1, I64), consts=(2,), onesided=1)
    assert out_type(model) == t(F32, 1, 4, 2)
    half = run("DFT", x, None, np.array(1, I64), consts=(2,), onesided=1)
    np.testing.assert_allclose(half[0, :, 0] + 1j * half[0, :, 1], np.fft.rfft(np.arange(6)), atol=1e-5)
    signal = run("DFT", half, None, np.array(1, I64), consts=(2,), onesided=1, inverse=1)
    np.testing.assert_allclose(signal, x, atol=1e-5)


def test_stft_frames_the_signal_and_transforms_each_frame():
    signal = np.arange(10, dtype=F32).reshape(1, 10, 1)
    y = run("STFT", signal, np.array(3, I64), None, np.array(4, I64), opset=17)
    assert y.shape == (1, 3, 3, 2)  # frames 1 + (10 - 4) // 3, bins 4 // 2 + 1
    assert y[0, :, 0, 0].tolist() == [6, 18, 30]  # DC bin = sum of each frame


def test_stft_of_a_batch_by_length_signal_takes_it_as_real():
    """torch's exporter writes [batch, length]; onnxruntime takes it as a real signal."""
    signal = np.arange(10, dtype=F32)
    flat = run("STFT", signal.reshape(1, 10), np.array(3, I64), None, np.array(4, I64), opset=17)
    np.testing.assert_array_equal(flat, run("STFT", signal.reshape(1, 10, 1), np.array(3, I64), None,
                                            np.array(4, I64), opset=17))


def test_windows():
    assert run("HannWindow", np.array(4, I64), opset=17).tolist() == pytest.approx([0, 0.5, 1, 0.5], abs=1e-7)
    symmetric = run("HannWindow", np.array(5, I64), opset=17, periodic=0, output_datatype=int(DType.FLOAT64))
    assert symmetric.dtype == np.float64 and symmetric.tolist() == pytest.approx([0, 0.5, 1, 0.5, 0], abs=1e-12)
    assert run("HammingWindow", np.array(2, I64), opset=17).tolist() == pytest.approx([4 / 46, 1], abs=1e-7)
    assert run("BlackmanWindow", np.array(3, I64), opset=17, periodic=0).tolist() == pytest.approx([0, 1, 0], abs=1e-6)


def test_mel_weight_matrix_has_triangular_filters_peaking_at_one():
    m = run("MelWeightMatrix", np.array(4, I64), np.array(32, I64), np.array(8000, I64),
            np.array(0, F32), np.array(4000, F32), opset=17)
    assert m.shape == (17, 4) and m.dtype == F32
    assert (m.max(axis=0) == 1).all() and (m >= 0).all()


# ---------------------------------------------------------------- sampling

def test_grid_sample_at_pixel_centers_reproduces_the_input():
    x = np.arange(6, dtype=F32).reshape(1, 1, 2, 3)
    ys, xs = np.meshgrid(np.linspace(-1, 1, 2), np.linspace(-1, 1, 3), indexing="ij")
    grid = np.stack([xs, ys], -1)[None].astype(F32)  # last component indexes the first axis
    for mode in ("linear", "nearest", "cubic"):
        np.testing.assert_allclose(run("GridSample", x, grid, mode=mode, align_corners=1), x, atol=1e-6)
    model = build("GridSample", x, grid[:, :1])
    assert out_type(model) == t(F32, 1, 1, 1, 3)


def test_grid_sample_padding_modes_outside_the_image():
    x = np.array([[[[1.0, 2.0]]]], F32)  # [1, 1, 1, 2]
    grid = np.array([[[[3.0, 0.0]]]], F32)  # far right of the image
    assert run("GridSample", x, grid, padding_mode="zeros").item() == 0
    assert run("GridSample", x, grid, padding_mode="border").item() == 2
    # x = 3 is pixel 3.5; mirrored at the borders 1.5 and -0.5 it lands on -0.5, the left edge
    assert run("GridSample", x, grid, padding_mode="reflection").item() == 1
    assert run("GridSample", x, np.array([[[[0.0, 0.0]]]], F32), mode="bilinear", opset=16).item() == 1.5


def test_affine_grid_of_the_identity_is_the_normalized_base_grid():
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], F32)
    grid = run("AffineGrid", theta, np.array([1, 1, 2, 2], I64), opset=20)
    assert grid.tolist() == [[[[-0.5, -0.5], [0.5, -0.5]], [[-0.5, 0.5], [0.5, 0.5]]]]
    grid = run("AffineGrid", theta, np.array([1, 1, 2, 2], I64), opset=20, align_corners=1)
    assert grid[0, 1, 0].tolist() == [-1, 1]


def test_roi_align_averages_bilinear_samples_of_each_bin():
    x = np.tile(np.arange(4, dtype=F32), (4, 1)).reshape(1, 1, 4, 4)  # value = column
    rois = np.array([[0, 0, 4, 4], [1, 1, 3, 3]], F32)
    y = run("RoiAlign", x, rois, np.array([0, 0], I64), opset=16, output_height=1, output_width=2, sampling_ratio=2)
    # half-pixel boxes [-0.5, 3.5] and [0.5, 2.5], two bins each, two samples per bin:
    # columns (0, 1 | 2, 3) and (0.75, 1.25 | 1.75, 2.25)
    np.testing.assert_allclose(y[:, 0, 0], [[0.5, 2.5], [1.0, 2.0]], rtol=1e-6)
    assert out_type(build("RoiAlign", x, rois, np.array([0, 0], I64), output_height=3, output_width=5)) == t(F32, 2, 1, 3, 5)


def test_non_max_suppression_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3], [0, 2.05, 1, 3.05]]], F32)
    scores = np.array([[[0.9, 0.95, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4]]], F32)
    selected = run("NonMaxSuppression", boxes, scores, np.array([2], I64), np.array([0.5], F32), np.array([0.25], F32))
    assert selected.tolist() == [[0, 0, 1], [0, 0, 2], [0, 1, 3]]
    assert out_type(build("NonMaxSuppression", boxes, scores)) == t(I64, None, 3)


def test_tfidf_counts_pool_ngrams_with_skips():
    x = np.array([94, 17, 36, 12, 28], np.int32)
    pool = [94, 17, 36, 12, 94, 12, 17, 28]  # unigrams 94 17 36 12, bigrams (94, 12) (17, 28)
    y = run("TfIdfVectorizer", x, min_gram_length=1, max_gram_length=2, max_skip_count=2, mode="TF",
            ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5], pool_int64s=pool)
    assert y.dtype == F32 and y.tolist() == [1, 1, 1, 1, 1, 1]
    y = run("TfIdfVectorizer", np.stack([x, x[::-1]]), min_gram_length=2, max_gram_length=2, max_skip_count=0,
            mode="TFIDF", ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5], pool_int64s=pool, weights=[1, 1, 1, 1, 2, 3])
    assert y.tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]  # no adjacent pair is in the pool


def test_swiglu_gates_b_with_swish_of_a():
    a, b = np.array([0.0, 2.0], F32), np.array([5.0, 3.0], F32)
    np.testing.assert_allclose(run("SwiGLU", a, b, opset=28), [0, 2 / (1 + np.exp(-2)) * 3], rtol=1e-6)
    with pytest.raises(GraphError, match="same shape"):
        build("SwiGLU", a, np.ones(3, F32), opset=28)
