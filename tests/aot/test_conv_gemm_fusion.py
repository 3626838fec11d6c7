"""Vertical fusion of convolutions and matrix products: fold_batchnorm, fuse_conv, fuse_gemm,
and the fused ops they make (rtxrt::FusedConv, rtxrt::FusedMatMul).

Each rewrite is checked twice: by the graph it leaves (which nodes, which attributes) and by
the function it computes (the reference backend on the rewritten graph against the original,
on random inputs). Tolerance: fusion reorders no sums, except that folding a BatchNorm or two
biases rounds the folded constants once instead of the activations twice, so results agree to
float32 rounding (rtol 1e-5, atol 1e-5 of the output's magnitude).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import AotOptions, aot_compile
from rtxrt.aot.passes.fold_batchnorm import fold_batchnorm
from rtxrt.aot.passes.fuse_conv import fuse_conv
from rtxrt.aot.passes.fuse_gemm import fuse_gemm
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.errors import GraphError
from rtxrt.ir.activations import activation_params
from rtxrt.ir.graph import Model
from rtxrt.ir.infer import infer_types
from tests.aot.helpers import assert_close, only, ops, run_passes
from tests.helpers import make_model

F = TensorProto.FLOAT
LIGHT_RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
rng = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def build(nodes, inputs, outputs, initializers=(), opset: int = 20) -> onnx.ModelProto:
    """inputs/outputs: name -> shape (float32); outputs may leave the shape out (None)."""
    return make_model(
        nodes, [(n, F, s) for n, s in inputs.items()], [(n, F, s) for n, s in outputs.items()], initializers, opset
    )


def assert_same_function(original: Model, model: Model, seed: int = 1) -> None:
    feeds = {}
    for name in original.graph.inputs:
        t = original.graph.types[name]
        feeds[name] = np.random.default_rng(seed).standard_normal(t.shape).astype(t.dtype.numpy)
    expected = ReferenceExecutor(original).run(feeds)
    got = ReferenceExecutor(model).run(feeds)
    for name, want in expected.items():
        assert_close(got[name], want)


X = {"x": [2, 4, 6, 6]}
OUT = [2, 8, 6, 6]
CONV = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
CONV_WEIGHTS = {"w": rand(8, 4, 3, 3)}


# ---------------------------------------------------------------------------------------------
# The activation table
# ---------------------------------------------------------------------------------------------


def test_activation_params_fill_defaults_by_name():
    assert activation_params("clip", [0.0]) == {"min": 0.0, "max": np.inf}
    assert activation_params("hard_sigmoid") == {"alpha": 0.2, "beta": 0.5}
    assert activation_params("relu") == {}
    with pytest.raises(ValueError, match="unknown activation"):
        activation_params("swishy")
    with pytest.raises(ValueError, match="takes 1 parameter"):
        activation_params("leaky_relu", [0.1, 0.2])


def test_fused_node_schemas_reject_bad_epilogues():
    """An unknown activation, a residual without Z and a Z of another shape fail type checks."""
    proto = build([CONV, helper.make_node("Relu", ["c"], ["y"])], X, {"y": OUT}, CONV_WEIGHTS)
    _, model, _ = run_passes(proto, fuse_conv)
    fused = only(model, "FusedConv")
    fused.attrs["activation"] = "swishy"
    with pytest.raises(GraphError, match="unknown activation"):
        infer_types(model)
    fused.attrs.update(activation="relu", residual="before_activation")
    with pytest.raises(GraphError, match="needs input Z"):
        infer_types(model)
    fused.inputs = ["x", "w", "", "x"]  # x is [2, 4, 6, 6], the result [2, 8, 6, 6]
    with pytest.raises(GraphError, match="Z of shape"):
        infer_types(model)


# ---------------------------------------------------------------------------------------------
# fuse_conv
# ---------------------------------------------------------------------------------------------

# activation written as ONNX nodes from "a" to "act" -> (activation, params) expected
ACTIVATION_CASES = {
    "Relu": ([helper.make_node("Relu", ["a"], ["act"])], "relu", []),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["a"], ["act"], alpha=0.2)], "leaky_relu", [0.2]),
    "Relu6": ([helper.make_node("Clip", ["a", "lo", "hi"], ["act"])], "clip", [0.0, 6.0]),
    "Clip(min)": ([helper.make_node("Clip", ["a", "lo"], ["act"])], "clip", [0.0, np.inf]),
    "Sigmoid": ([helper.make_node("Sigmoid", ["a"], ["act"])], "sigmoid", []),
    "Tanh": ([helper.make_node("Tanh", ["a"], ["act"])], "tanh", []),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["a"], ["act"], alpha=0.3, beta=0.4)], "hard_sigmoid", [0.3, 0.4]),
    "HardSwish": ([helper.make_node("HardSwish", ["a"], ["act"])], "hard_swish", []),
    "x*Sigmoid(x)": (
        [helper.make_node("Sigmoid", ["a"], ["s"]), helper.make_node("Mul", ["a", "s"], ["act"])], "silu", []
    ),
    "HardSigmoid(x)*x": (
        [helper.make_node("HardSigmoid", ["a"], ["s"], alpha=1 / 6), helper.make_node("Mul", ["s", "a"], ["act"])],
        "hard_swish", [],
    ),
    "Gelu": ([helper.make_node("Gelu", ["a"], ["act"])], "gelu", []),
    "Gelu(tanh)": ([helper.make_node("Gelu", ["a"], ["act"], approximate="tanh")], "gelu_tanh", []),
}
BOUNDS = {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}


@pytest.mark.parametrize("case", ACTIVATION_CASES)
def test_conv_bias_activation_and_residual_become_one_node(case):
    """Conv + Add of a per-channel bias + activation + residual Add → one FusedConv."""
    act_nodes, activation, params = ACTIVATION_CASES[case]
    nodes = [
        CONV,
        helper.make_node("Add", ["c", "b"], ["a"]),
        *act_nodes,
        helper.make_node("Add", ["z", "act"], ["y"]),
    ]
    proto = build(nodes, {**X, "z": OUT}, {"y": OUT}, {**CONV_WEIGHTS, "b": rand(1, 8, 1, 1), **BOUNDS})
    original, model, result = run_passes(proto, fuse_conv)
    fused = only(model, "FusedConv")
    assert ops(model) == ["FusedConv"] and fused.domain == "rtxrt"
    assert fused.attr("activation") == activation
    assert fused.attr("activation_params") == pytest.approx(params)  # ONNX stores float32
    assert fused.attr("residual") == "after_activation" and fused.inputs[3] == "z"
    assert sum(result.changes.values()) == 1 and next(iter(result.changes)).startswith("Conv+bias+")
    assert_same_function(original, model)


def test_residual_before_activation_either_operand_order_and_sum():
    """relu(conv + z) as ResNet computes it, the residual on either side of the Add, or a
    two-input Sum (older exports)."""
    for add in (
        helper.make_node("Add", ["c", "z"], ["r"]),
        helper.make_node("Add", ["z", "c"], ["r"]),
        helper.make_node("Sum", ["c", "z"], ["r"]),
    ):
        proto = build([CONV, add, helper.make_node("Relu", ["r"], ["y"])], {**X, "z": OUT}, {"y": OUT}, CONV_WEIGHTS)
        original, model, result = run_passes(proto, fuse_conv)
        fused = only(model, "FusedConv")
        assert ops(model) == ["FusedConv"] and fused.inputs == ["x", "w", "", "z"]
        assert (fused.attr("residual"), fused.attr("activation")) == ("before_activation", "relu")
        assert result.changes == {"Conv+Add+Relu": 1}
        assert_same_function(original, model)


def test_of_two_convs_meeting_in_a_residual_the_later_takes_it():
    """A ResNet downsampling block: the identity branch's conv comes first, so the main
    branch's conv (computed last) carries the Add and Relu and reads the other as Z."""
    nodes = [
        helper.make_node("Conv", ["x", "wd", "bd"], ["identity"], name="downsample"),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="main"),
        helper.make_node("Add", ["c", "identity"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    inits = {**CONV_WEIGHTS, "b": rand(8), "wd": rand(8, 4, 1, 1), "bd": rand(8)}
    original, model, result = run_passes(build(nodes, X, {"y": OUT}, inits), fuse_conv)
    assert ops(model) == ["FusedConv", "FusedConv"]
    downsample, main = model.graph.nodes
    assert downsample.name == "downsample" and len(downsample.inputs) == 3
    assert (downsample.attr("residual"), downsample.attr("activation")) == ("none", "none")
    assert (main.name, main.inputs[3], main.attr("activation")) == ("main", "identity", "relu")
    assert result.changes == {"Conv+bias": 1, "Conv+bias+Add+Relu": 1}
    assert_same_function(original, model)


def test_every_conv_becomes_a_fused_conv_with_explicit_geometry():
    """A lone Conv becomes a FusedConv too (one conv op for the JIT); auto_pad is resolved
    into explicit pads once the input size is known."""
    conv = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    original, model, result = run_passes(build([conv], X, {"y": None}, CONV_WEIGHTS), fuse_conv)
    fused = only(model, "FusedConv")
    assert "auto_pad" not in fused.attrs
    assert fused.attrs["pads"] == [0, 0, 1, 1] and fused.attrs["kernel_shape"] == [3, 3]
    assert (fused.attr("activation"), fused.attr("residual")) == ("none", "none")
    assert result.changes == {"Conv": 1}
    assert model.opsets["rtxrt"] == 1
    assert_same_function(original, model)


def test_a_bias_add_joins_the_convs_own_bias():
    nodes = [
        helper.make_node("Conv", ["x", "w", "b0"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b1", "c"], ["y"]),
    ]
    inits = {**CONV_WEIGHTS, "b0": rand(8), "b1": rand(8, 1, 1)}
    original, model, _ = run_passes(build(nodes, X, {"y": OUT}, inits), fuse_conv)
    fused = only(model, "FusedConv")
    np.testing.assert_allclose(model.graph.initializers[fused.inputs[2]], inits["b0"] + inits["b1"].reshape(-1))
    assert_same_function(original, model)


def test_no_activation_joins_across_a_value_that_is_a_graph_output():
    """conv + bias is a graph output and also feeds the Relu: the bias joins, the Relu stays
    (it reads the fused node's result)."""
    nodes = [CONV, helper.make_node("Add", ["c", "b"], ["biased"]), helper.make_node("Relu", ["biased"], ["y"])]
    proto = build(nodes, X, {"biased": OUT, "y": OUT}, {**CONV_WEIGHTS, "b": rand(8, 1, 1)})
    original, model, result = run_passes(proto, fuse_conv)
    assert ops(model) == ["FusedConv", "Relu"]
    assert only(model, "FusedConv").outputs == ["biased"] and only(model, "FusedConv").attr("activation") == "none"
    assert result.changes == {"Conv+bias": 1}
    assert_same_function(original, model)


def test_an_activation_output_that_is_a_graph_output_ends_the_fusion():
    """The Relu's result is a graph output and also feeds a residual Add: conv + Relu fuse
    (the fused node defines the output), the Add stays."""
    nodes = [CONV, helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "z"], ["y"])]
    proto = build(nodes, {**X, "z": OUT}, {"r": OUT, "y": OUT}, CONV_WEIGHTS)
    original, model, result = run_passes(proto, fuse_conv)
    assert ops(model) == ["FusedConv", "Add"]
    fused = only(model, "FusedConv")
    assert fused.outputs == ["r"] and fused.attr("residual") == "none" and fused.attr("activation") == "relu"
    assert_same_function(original, model)


def test_an_activation_input_read_twice_is_not_fused():
    nodes = [CONV, helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Sigmoid", ["c"], ["s"])]
    original, model, _ = run_passes(build(nodes, X, {"r": OUT, "s": OUT}, CONV_WEIGHTS), fuse_conv)
    assert sorted(ops(model)) == ["FusedConv", "Relu", "Sigmoid"]
    assert_same_function(original, model)


def test_a_residual_of_another_shape_is_not_fused():
    """Z of shape [2, 8, 1, 1] broadcasts: not a residual (and not constant, so not a bias);
    the Add and the Relu after it stay."""
    nodes = [CONV, helper.make_node("Add", ["c", "z"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    proto = build(nodes, {**X, "z": [2, 8, 1, 1]}, {"y": OUT}, CONV_WEIGHTS)
    original, model, _ = run_passes(proto, fuse_conv)
    assert ops(model) == ["FusedConv", "Add", "Relu"]
    assert len(only(model, "FusedConv").inputs) == 2
    assert_same_function(original, model)


def test_a_constant_add_varying_along_a_spatial_axis_is_not_a_bias():
    nodes = [CONV, helper.make_node("Add", ["c", "k"], ["y"])]
    original, model, _ = run_passes(build(nodes, X, {"y": OUT}, {**CONV_WEIGHTS, "k": rand(1, 1, 6, 1)}), fuse_conv)
    assert ops(model) == ["FusedConv", "Add"]
    assert_same_function(original, model)


def test_a_gate_that_is_not_hard_swish_is_not_fused():
    """x * HardSigmoid(x) with HardSigmoid's default alpha 0.2 is not hard_swish (1/6)."""
    nodes = [CONV, helper.make_node("HardSigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    original, model, _ = run_passes(build(nodes, X, {"y": OUT}, CONV_WEIGHTS), fuse_conv)
    assert ops(model) == ["FusedConv", "HardSigmoid", "Mul"]
    assert_same_function(original, model)


# ---------------------------------------------------------------------------------------------
# fold_batchnorm
# ---------------------------------------------------------------------------------------------


def bn_params(channels: int) -> dict[str, np.ndarray]:
    return {
        "scale": rand(channels), "shift": rand(channels), "mean": rand(channels),
        "var": np.abs(rand(channels)) + 0.5,
    }


def bn(x: str, y: str) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x, "scale", "shift", "mean", "var"], [y], epsilon=1e-3)


def test_batchnorm_folds_into_conv_weights_and_bias():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), bn("c", "y")]
    proto = build(nodes, X, {"y": OUT}, {**CONV_WEIGHTS, "b": rand(8), **bn_params(8)})
    original, model, result = run_passes(proto, fold_batchnorm)
    assert ops(model) == ["Conv"] and model.graph.nodes[0].outputs == ["y"]
    assert result.changes == {"BatchNormalization→Conv": 1}
    assert_same_function(original, model)


def test_batchnorm_then_relu_becomes_one_fused_conv():
    nodes = [CONV, bn("c", "n"), helper.make_node("Relu", ["n"], ["y"])]
    proto = build(nodes, X, {"y": OUT}, {**CONV_WEIGHTS, **bn_params(8)})
    original, model, _ = run_passes(proto, fold_batchnorm, fuse_conv)
    fused = only(model, "FusedConv")
    assert ops(model) == ["FusedConv"] and fused.inputs[2] and fused.attr("activation") == "relu"
    assert_same_function(original, model)


def test_batchnorm_folds_into_grouped_conv_transpose():
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["c"], group=2, strides=[2, 2]), bn("c", "y")]
    proto = build(nodes, X, {"y": None}, {"wt": rand(4, 3, 3, 3), **bn_params(6)})
    original, model, result = run_passes(proto, fold_batchnorm)
    assert ops(model) == ["ConvTranspose"] and result.changes == {"BatchNormalization→ConvTranspose": 1}
    assert_same_function(original, model)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_folds_into_gemm(trans_b):
    weights = rand(8, 5) if trans_b else rand(5, 8)
    nodes = [helper.make_node("Gemm", ["a", "wg", "cg"], ["g"], transB=trans_b, beta=0.5), bn("g", "y")]
    proto = build(nodes, {"a": [3, 5]}, {"y": [3, 8]}, {"wg": weights, "cg": rand(8), **bn_params(8)})
    original, model, result = run_passes(proto, fold_batchnorm)
    assert ops(model) == ["Gemm"] and result.changes == {"BatchNormalization→Gemm": 1}
    assert_same_function(original, model)


def test_batchnorm_after_matmul_becomes_a_bias_that_fuse_gemm_takes():
    nodes = [helper.make_node("MatMul", ["a", "wm"], ["m"]), bn("m", "y")]
    proto = build(nodes, {"a": [3, 5]}, {"y": [3, 8]}, {"wm": rand(5, 8), **bn_params(8)})
    original, model, result = run_passes(proto, fold_batchnorm, fuse_gemm)
    assert ops(model) == ["FusedMatMul"] and len(only(model, "FusedMatMul").inputs) == 3
    assert result.changes == {"BatchNormalization→MatMul": 1, "MatMul+bias": 1}
    assert_same_function(original, model)


def test_batchnorm_does_not_fold_when_the_conv_result_has_another_reader():
    nodes = [CONV, bn("c", "y"), helper.make_node("Relu", ["c"], ["r"])]
    proto = build(nodes, X, {"y": OUT, "r": OUT}, {**CONV_WEIGHTS, **bn_params(8)})
    original, model, result = run_passes(proto, fold_batchnorm)
    assert not result.changed and ops(model) == ["Conv", "BatchNormalization", "Relu"]


def test_batchnorm_whose_result_has_two_readers_still_folds():
    """What must be private is the Conv's result; the BN's own result may have many readers
    (the folded Conv defines it)."""
    nodes = [CONV, bn("c", "n"), helper.make_node("Relu", ["n"], ["r"]), helper.make_node("Sigmoid", ["n"], ["s"])]
    proto = build(nodes, X, {"n": OUT, "r": OUT, "s": OUT}, {**CONV_WEIGHTS, **bn_params(8)})
    original, model, result = run_passes(proto, fold_batchnorm)
    assert ops(model) == ["Conv", "Relu", "Sigmoid"] and result.changed
    assert_same_function(original, model)


def test_batchnorm_does_not_fold_when_the_conv_result_is_a_graph_output():
    proto = build([CONV, bn("c", "y")], X, {"c": OUT, "y": OUT}, {**CONV_WEIGHTS, **bn_params(8)})
    assert not run_passes(proto, fold_batchnorm)[2].changed


def test_batchnorm_does_not_fold_into_weights_computed_at_run_time():
    nodes = [helper.make_node("Conv", ["x", "wx"], ["c"], pads=[1, 1, 1, 1]), bn("c", "y")]
    proto = build(nodes, {**X, "wx": [8, 4, 3, 3]}, {"y": OUT}, bn_params(8))
    assert not run_passes(proto, fold_batchnorm)[2].changed


def test_batchnorm_does_not_fold_across_a_matmul_whose_channels_are_not_its_columns():
    """On a rank-3 MatMul result BN's channel axis 1 is the rows, not the weights' columns."""
    nodes = [helper.make_node("MatMul", ["a", "wm"], ["m"]), bn("m", "y")]
    proto = build(nodes, {"a": [2, 8, 5]}, {"y": [2, 8, 8]}, {"wm": rand(5, 8), **bn_params(8)})
    assert not run_passes(proto, fold_batchnorm)[2].changed


def test_a_standalone_batchnorm_stays():
    proto = build([bn("x", "y")], X, {"y": X["x"]}, bn_params(4))
    assert not run_passes(proto, fold_batchnorm)[2].changed


# ---------------------------------------------------------------------------------------------
# fuse_gemm
# ---------------------------------------------------------------------------------------------


def test_matmul_bias_gelu_becomes_one_fused_matmul():
    """A BERT feed-forward layer: 3-D activations by 2-D weights, bias Add, Gelu (as fuse_gelu
    leaves the erf form), then the second projection with the residual Add."""
    nodes = [
        helper.make_node("MatMul", ["h", "w1"], ["m1"]),
        helper.make_node("Add", ["b1", "m1"], ["a1"]),
        helper.make_node("Gelu", ["a1"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["a2"]),
        helper.make_node("Add", ["a2", "h"], ["y"]),
    ]
    inits = {"w1": rand(8, 16), "b1": rand(16), "w2": rand(16, 8), "b2": rand(8)}
    original, model, result = run_passes(build(nodes, {"h": [2, 3, 8]}, {"y": [2, 3, 8]}, inits), fuse_gemm)
    first, second = model.graph.nodes
    assert ops(model) == ["FusedMatMul", "FusedMatMul"]
    assert first.inputs == ["h", "w1", "b1"] and first.attr("activation") == "gelu"  # the bias keeps its name
    assert second.inputs == ["g", "w2", "b2", "h"] and second.attr("residual") == "before_activation"
    assert result.changes == {"MatMul+bias+Gelu": 1, "MatMul+bias+Add": 1}
    assert_same_function(original, model)


def test_gemm_with_trans_b_alpha_and_beta_folds_beta_into_the_bias():
    nodes = [
        helper.make_node("Gemm", ["a", "wg", "cg"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["g"], ["y"]),
    ]
    inits = {"wg": rand(8, 5), "cg": rand(1, 8)}
    original, model, result = run_passes(build(nodes, {"a": [3, 5]}, {"y": [3, 8]}, inits), fuse_gemm)
    fused = only(model, "FusedMatMul")
    assert (fused.attr("trans_b"), fused.attr("alpha"), fused.attr("activation")) == (1, 0.5, "relu")
    np.testing.assert_allclose(model.graph.initializers[fused.inputs[2]], 2 * inits["cg"].reshape(-1))
    assert result.changes == {"Gemm+bias+Relu": 1}
    assert_same_function(original, model)


def test_a_gemm_bias_that_needs_no_change_keeps_its_name():
    """Weights keep the names refit looks them up by, where fusion leaves them as they were."""
    nodes = [helper.make_node("Gemm", ["a", "wg", "cg"], ["y"])]
    proto = build(nodes, {"a": [3, 5]}, {"y": [3, 8]}, {"wg": rand(5, 8), "cg": rand(8)})
    _, model, result = run_passes(proto, fuse_gemm)
    assert only(model, "FusedMatMul").inputs == ["a", "wg", "cg"] and result.changes == {"Gemm+bias": 1}


def test_gemm_with_trans_a_or_a_per_row_c_is_left_alone():
    for attrs, c in (({"transA": 1}, rand(8)), ({}, rand(3, 1)), ({}, None)):
        nodes = [helper.make_node("Gemm", ["a", "wg", *(["cg"] if c is not None else [])], ["y"], **attrs)]
        a_shape = [5, 3] if attrs else [3, 5]
        inits = {"wg": rand(5, 8), **({"cg": c} if c is not None else {})}
        _, model, _ = run_passes(build(nodes, {"a": a_shape}, {"y": [3, 8]}, inits), fuse_gemm)
        assert ops(model) == (["FusedMatMul"] if c is None else ["Gemm"])


def test_a_matmul_add_along_another_axis_is_not_a_bias():
    """[3, 1] varies along the rows: neither bias nor (not full-shape) residual."""
    nodes = [helper.make_node("MatMul", ["a", "wm"], ["m"]), helper.make_node("Add", ["m", "k"], ["y"])]
    proto = build(nodes, {"a": [3, 5]}, {"y": [3, 8]}, {"wm": rand(5, 8), "k": rand(3, 1)})
    original, model, _ = run_passes(proto, fuse_gemm)
    assert ops(model) == ["FusedMatMul", "Add"]
    assert_same_function(original, model)


def test_batched_matmul_keeps_numpy_broadcasting():
    """N-D by N-D with broadcast batch dims (attention scores) works as MatMul did; 1-D
    operands stay MatMul."""
    nodes = [helper.make_node("MatMul", ["q", "k"], ["y"]), helper.make_node("MatMul", ["q", "v"], ["u"])]
    proto = build(nodes, {"q": [2, 3, 4, 5], "k": [3, 5, 6], "v": [5]}, {"y": None, "u": None})
    original, model, _ = run_passes(proto, fuse_gemm)
    assert ops(model) == ["FusedMatMul", "MatMul"]
    assert_same_function(original, model)


# ---------------------------------------------------------------------------------------------
# Real models
# ---------------------------------------------------------------------------------------------


def test_pytorch_resnet50_every_conv_carries_its_bias_activation_and_residual(tmp_path):
    """The zoo's ResNet-50 as the TorchScript exporter writes it (BatchNorm folded into 53
    Conv with bias, 49 Relu, 16 residual Add). Only the structure matters here, so the
    weights are torch's initial ones (test_models.py checks the numbers on the zoo export)."""
    torch = pytest.importorskip("torch")
    from tests.models import zoo

    path = tmp_path / "resnet50.onnx"
    with torch.no_grad():
        image = torch.zeros(1, 3, 32, 32)
        torch.onnx.export(zoo.resnet50().eval(), (image,), path, dynamo=False, opset_version=zoo.OPSET)
    graph = aot_compile(path).model.graph
    counts = Counter(n.op_type for n in graph.nodes)
    assert counts["FusedConv"] == 53 and not counts["Conv"] + counts["Relu"] + counts["Add"], counts
    fused = [n for n in graph.nodes if n.op_type == "FusedConv"]
    assert all(len(n.inputs) > 2 and n.inputs[2] for n in fused)
    assert Counter(n.attr("activation") for n in fused) == {"relu": 49, "none": 4}  # 4 downsampling convs
    assert Counter(n.attr("residual") for n in fused) == {"before_activation": 16, "none": 37}


def test_light_zoo_resnet50_falls_to_at_most_80_nodes():
    """53 Conv + 53 BatchNormalization + 49 Relu + 16 Sum (and 239 weight generators the
    cleanup folds) become 53 FusedConv; pools, the classifier and Softmax remain: 58 nodes."""
    if not LIGHT_RESNET50.exists():
        pytest.skip("the onnx wheel has no light zoo")
    report = aot_compile(LIGHT_RESNET50).report
    assert report.nodes_before == 415 and report.nodes_after <= 80
    assert report.fusions["BatchNormalization→Conv"] == 53
    assert sum(v for k, v in report.fusions.items() if k.startswith("Conv")) == 53


def test_a_build_without_the_passes_still_reports_its_weights_and_ops():
    """--no-optimize runs no pass, but the report still describes the graph it writes."""
    proto = build([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], X, {"y": OUT}, {"w": rand(8, 4, 3, 3)})
    report = aot_compile(proto, AotOptions(optimize=False)).report
    assert (report.nodes_before, report.nodes_after, report.passes) == (1, 1, [])
    assert report.weight_bytes_by_dtype == report.device_weight_bytes_by_dtype == {"float32": 8 * 4 * 3 * 3 * 4}
    assert report.op_counts == {"Conv": 1}
