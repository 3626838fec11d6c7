"""decompose: ops the GPU backend cannot lower (standalone BatchNormalization, 1-D Conv,
ConvTranspose and pools, 3-D Conv, DepthToSpace, SpaceToDepth, MeanVarianceNormalization,
LpNormalization, leftover Dropout) become ops it can, with the same ONNX semantics.

Every case is compiled by the whole pipeline and checked three ways: the op is gone, the
compiled model run by the reference backend agrees with onnxruntime on the original model
(float32: rtol 1e-5 of the output's magnitude; float16 and bfloat16 models: against
onnxruntime on the float32 model, to their rounding), and the CUDA backend plans every node on
the GPU, no host step (fp32 and fp16 precision). Inputs have symbolic dims (batch, length, height, width)
wherever the op allows, so no rewrite may bake a dim into a constant; the plans are made at
concrete shapes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import AotOptions, compile_onnx
from rtxrt.aot.passes.decompose import decompose
from rtxrt.aot.passes.fold_batchnorm import fold_batchnorm
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Model
from tests.aot.helpers import assert_close, only, ops, run_passes
from tests.helpers import make_model

F, F16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
rng = np.random.default_rng(0)


def rand(*shape: int, low: float | None = None) -> np.ndarray:
    """Normal values, or uniform in [low, low + 1) (variances, scales)."""
    values = rng.standard_normal(shape) if low is None else low + rng.random(shape)
    return values.astype(np.float32)


@dataclass
class Case:
    """A one-op model (float32 unless ``elem_type``), the inputs it is run on, and the op that
    must be gone after compilation. ``gpu``: whether every node must plan on the GPU."""

    nodes: list[onnx.NodeProto]
    inputs: dict[str, list]  # name -> shape, symbolic dims as strings
    feeds: dict[str, np.ndarray]
    gone: str  # the op type; for a 1-D or 3-D op, that op on an input of ``rank``
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 18
    gpu: bool = True
    rank: int | None = None

    def proto(self, elem_type: int = F) -> onnx.ModelProto:
        dtype = ml_dtypes.bfloat16 if elem_type == BF16 else helper.tensor_dtype_to_np_dtype(elem_type)
        return make_model(self.nodes, [(n, elem_type, s) for n, s in self.inputs.items()],
                          [("y", elem_type, None)], {k: v.astype(dtype) for k, v in self.weights.items()},
                          self.opset)


def left(model: Model, case: Case) -> list[str]:
    """The nodes of the op the case must get rid of that are still there."""
    graph = model.graph
    return [n.label for n in graph.nodes
            if n.op_type == case.gone and (case.rank is None or graph.types[n.inputs[0]].rank == case.rank)]


def node(op: str, inputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, ["y"], name=op.lower(), **attrs)


def batch_norm(rank: int, shape: list, feed: tuple[int, ...], runtime: bool = False) -> Case:
    """BatchNormalization of a rank-``rank`` input with 6 channels; ``runtime``: the mean and
    variance are graph inputs instead of initializers."""
    stats = {"mean": rand(6), "var": rand(6, low=0.5)}
    weights = {"scale": rand(6, low=0.5), "bias": rand(6)}
    inputs, feeds = {"x": shape}, {"x": rand(*feed)}
    if runtime:
        inputs |= {name: [6] for name in stats}
        feeds |= stats
    else:
        weights |= stats
    bn = node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], epsilon=1e-3)
    return Case([bn], inputs, feeds, "BatchNormalization", weights)


def conv1d(op: str = "Conv", w_shape=(8, 4, 3), runtime_w: bool = False, gpu: bool = True, **attrs) -> Case:
    """A 1-D convolution of x (N, 4, L) with bias; ``runtime_w``: the weights are an input
    (the GPU convolutions take constant weights only)."""
    out_channels = w_shape[1] * attrs.get("group", 1) if op == "ConvTranspose" else w_shape[0]
    inputs, feeds, weights = {"x": ["N", 4, "L"]}, {"x": rand(2, 4, 19)}, {"b": rand(out_channels)}
    if runtime_w:
        inputs["w"], feeds["w"] = list(w_shape), rand(*w_shape)
    else:
        weights["w"] = rand(*w_shape)
    return Case([node(op, ["x", "w", "b"], **attrs)], inputs, feeds, op, weights, gpu=gpu and not runtime_w, rank=3)


def conv3d(w_shape=(8, 4, 3, 3, 3), x_dims=("N", 4, "D", "H", "W"), feed=(2, 4, 7, 6, 5), runtime_w: bool = False,
           bias: bool = True, **attrs) -> Case:
    """A 3-D convolution of x (N, C, D, H, W) (symbolic dims as ``x_dims`` names them)."""
    inputs, feeds, weights = {"x": list(x_dims)}, {"x": rand(*feed)}, {}
    if runtime_w:
        inputs["w"], feeds["w"] = list(w_shape), rand(*w_shape)
    else:
        weights["w"] = rand(*w_shape)
    if bias:
        weights["b"] = rand(w_shape[0])
    conv = node("Conv", ["x", "w", "b"] if bias else ["x", "w"], **attrs)
    return Case([conv], inputs, feeds, "Conv", weights, gpu=not runtime_w, rank=5)


def pool1d(op: str, **attrs) -> Case:
    return Case([node(op, ["x"], **attrs)], {"x": ["N", 3, "L"]}, {"x": rand(2, 3, 17)}, op, rank=3)


def space(op: str, shape: list, feed: tuple[int, ...], **attrs) -> Case:
    return Case([node(op, ["x"], blocksize=2, **attrs)], {"x": shape}, {"x": rand(*feed)}, op)


def lp_norm(p: int, axis: int) -> Case:
    x = rand(2, 5, 3, 4)
    x[0, 0] = 0  # the norm over the last axis is 0 in three rows
    x[1, :, 0, 0] = 0  # and over axis 1 at one pixel
    return Case([node("LpNormalization", ["x"], p=p, axis=axis)], {"x": ["N", 5, "H", "W"]}, {"x": x},
                "LpNormalization")


CASES: dict[str, Callable[[], Case]] = {
    "batchnorm-2d": lambda: batch_norm(2, ["N", 6], (3, 6)),
    "batchnorm-3d": lambda: batch_norm(3, ["N", 6, "L"], (2, 6, 7)),
    "batchnorm-4d": lambda: batch_norm(4, ["N", 6, "H", "W"], (2, 6, 5, 3)),
    "batchnorm-5d": lambda: batch_norm(5, ["N", 6, 2, "H", "W"], (2, 6, 2, 3, 4)),
    "batchnorm-runtime-stats": lambda: batch_norm(4, ["N", 6, "H", "W"], (2, 6, 5, 3), runtime=True),
    "conv1d": lambda: conv1d(pads=[1, 2], strides=[2], dilations=[2]),
    "conv1d-depthwise": lambda: conv1d(w_shape=(4, 1, 3), group=4, kernel_shape=[3], pads=[1, 1]),
    "conv1d-grouped": lambda: conv1d(w_shape=(8, 2, 3), group=2, kernel_shape=[3], pads=[1, 1]),
    "conv1d-same-upper": lambda: conv1d(auto_pad="SAME_UPPER", strides=[2]),
    "conv1d-valid": lambda: conv1d(auto_pad="VALID"),
    "conv1d-runtime-weights": lambda: conv1d(runtime_w=True, pads=[1, 1]),
    "convtranspose1d": lambda: conv1d("ConvTranspose", (4, 3, 3), strides=[2], pads=[1, 0], output_padding=[1]),
    "convtranspose1d-grouped": lambda: conv1d("ConvTranspose", (4, 2, 3), group=2, strides=[2], dilations=[2]),
    "convtranspose1d-output-shape": lambda: conv1d("ConvTranspose", (4, 3, 3), strides=[2], output_shape=[40]),
    "conv3d": lambda: conv3d(pads=[1, 1, 1, 1, 1, 1]),
    "conv3d-strided-dilated": lambda: conv3d(pads=[2, 0, 1, 1, 2, 0], strides=[2, 1, 2], dilations=[2, 1, 1]),
    "conv3d-no-bias-valid": lambda: conv3d(w_shape=(5, 4, 2, 1, 3), bias=False, auto_pad="VALID"),
    "conv3d-same-upper-static": lambda: conv3d(x_dims=(2, 4, 7, 6, 5), auto_pad="SAME_UPPER", strides=[2, 2, 1]),
    "conv3d-grouped": lambda: conv3d(w_shape=(6, 2, 3, 3, 3), group=2, pads=[1] * 6),
    "conv3d-depthwise": lambda: conv3d(w_shape=(4, 1, 3, 3, 3), group=4, pads=[0, 1, 1, 0, 1, 1], strides=[1, 2, 2]),
    "conv3d-pointwise-depth": lambda: conv3d(w_shape=(8, 4, 1, 3, 3), pads=[0, 1, 1, 0, 1, 1]),
    "conv3d-depth-stride-only": lambda: conv3d(w_shape=(8, 4, 1, 1, 1), strides=[2, 1, 1]),
    "conv3d-static-batch": lambda: conv3d(x_dims=(2, 4, "D", "H", "W"), strides=[2, 1, 1]),
    "conv3d-static-depth": lambda: conv3d(x_dims=("N", 4, 7, "H", "W")),
    "conv3d-runtime-weights": lambda: conv3d(runtime_w=True, pads=[1] * 6),
    "conv3d-opset-9-unit-strides": lambda: dataclasses.replace(conv3d(pads=[1] * 6), opset=9),
    "maxpool1d": lambda: pool1d("MaxPool", kernel_shape=[3], strides=[2], pads=[1, 1]),
    "maxpool1d-ceil-dilated": lambda: pool1d("MaxPool", kernel_shape=[2], strides=[2], dilations=[2], ceil_mode=1),
    "averagepool1d": lambda: pool1d("AveragePool", kernel_shape=[3], strides=[2], pads=[1, 1]),
    "averagepool1d-count-pad": lambda: pool1d("AveragePool", kernel_shape=[4], pads=[2, 1], count_include_pad=1),
    "averagepool1d-same-lower": lambda: pool1d("AveragePool", kernel_shape=[4], strides=[3], auto_pad="SAME_LOWER"),
    "depth-to-space-dcr": lambda: space("DepthToSpace", [2, 12, 3, 5], (2, 12, 3, 5), mode="DCR"),
    "depth-to-space-crd": lambda: space("DepthToSpace", [2, 12, 3, 5], (2, 12, 3, 5), mode="CRD"),
    "depth-to-space-dcr-dynamic": lambda: space("DepthToSpace", ["N", 12, "H", "W"], (2, 12, 3, 5), mode="DCR"),
    "depth-to-space-crd-dynamic": lambda: space("DepthToSpace", ["N", 12, "H", "W"], (2, 12, 3, 5), mode="CRD"),
    "depth-to-space-batch-dynamic": lambda: space("DepthToSpace", ["N", 12, 3, 5], (2, 12, 3, 5)),
    "space-to-depth": lambda: space("SpaceToDepth", [2, 3, 4, 6], (2, 3, 4, 6)),
    "space-to-depth-dynamic": lambda: space("SpaceToDepth", ["N", 3, "H", "W"], (2, 3, 4, 6)),
    "mvn-default-axes": lambda: Case([node("MeanVarianceNormalization", ["x"])], {"x": ["N", 3, "H", "W"]},
                                     {"x": 3 + rand(2, 3, 4, 5)}, "MeanVarianceNormalization"),
    "mvn-trailing-axes": lambda: Case([node("MeanVarianceNormalization", ["x"], axes=[2, 3])],
                                      {"x": ["N", 3, "H", "W"]}, {"x": rand(2, 3, 4, 5)}, "MeanVarianceNormalization"),
    "mvn-middle-axis": lambda: Case([node("MeanVarianceNormalization", ["x"], axes=[1])], {"x": ["N", "C", "L"]},
                                    {"x": rand(2, 6, 5)}, "MeanVarianceNormalization"),
    "mvn-opset-13": lambda: Case([node("MeanVarianceNormalization", ["x"])], {"x": ["N", 3, "H", "W"]},
                                 {"x": rand(2, 3, 4, 5)}, "MeanVarianceNormalization", opset=13),  # axes attributes
    "lpnorm-l2-last-axis": lambda: lp_norm(2, -1),
    "lpnorm-l1-last-axis": lambda: lp_norm(1, 3),
    "lpnorm-l2-channels": lambda: lp_norm(2, 1),
    "lpnorm-l1-channels": lambda: lp_norm(1, 1),
    # x -> Dropout -> graph output: noop_removal cannot bypass it (the output keeps its name)
    "dropout-input-to-output": lambda: Case([node("Dropout", ["x"])], {"x": ["N", 4]}, {"x": rand(3, 4)}, "Dropout"),
}
GPU_CASES = [name for name, make in CASES.items() if make().gpu]


def onnxruntime_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feeds)[0]


def plan_host_steps(model: Model, feeds: dict[str, np.ndarray]) -> list[str]:
    plan = build_plan(model, {k: v.shape for k, v in feeds.items()}, arch="sm_86", sm_count=46)
    return [s.label for s in plan.host_steps]


# ---------------------------------------------------------------------------------------------
# Every case: gone, same function as onnxruntime, on the GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_op_is_gone_and_the_model_matches_onnxruntime(name):
    case = CASES[name]()
    proto = case.proto()
    model = compile_onnx(proto.SerializeToString())
    assert left(model, case) == []
    got = ReferenceExecutor(model).run(case.feeds)["y"]
    assert_close(got, onnxruntime_run(proto, case.feeds), name=name)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", GPU_CASES)
def test_every_node_plans_on_the_gpu(name, precision):
    case = CASES[name]()
    model = compile_onnx(case.proto().SerializeToString(), AotOptions(precision=precision))
    assert left(model, case) == []
    assert plan_host_steps(model, case.feeds) == []


NARROW = {"float16": (F16, np.float16, 1e-2), "bfloat16": (BF16, ml_dtypes.bfloat16, 5e-2)}


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("name", ["batchnorm-4d", "batchnorm-runtime-stats", "conv1d", "convtranspose1d",
                                  "maxpool1d", "averagepool1d", "depth-to-space-dcr-dynamic", "space-to-depth-dynamic",
                                  "mvn-default-axes", "lpnorm-l2-channels", "lpnorm-l1-last-axis"])
def test_narrow_float_models_stay_narrow(name, dtype):
    """A float16 or bfloat16 model is rewritten in its type (statistics in float32, as the
    reference backend computes them): its output keeps the type, within its rounding of
    onnxruntime on the float32 model, and plans on the GPU."""
    elem_type, numpy_type, rtol = NARROW[dtype]
    case = CASES[name]()
    model = compile_onnx(case.proto(elem_type).SerializeToString())
    assert left(model, case) == []
    assert model.graph.types["y"].dtype == DType.from_numpy(numpy_type)
    feeds = {k: v.astype(numpy_type) for k, v in case.feeds.items()}
    got = ReferenceExecutor(model).run(feeds)["y"]
    assert got.dtype == numpy_type
    want = onnxruntime_run(case.proto(), {k: v.astype(np.float32) for k, v in feeds.items()})
    assert_close(got.astype(np.float32), want, rtol=rtol, name=name)
    assert plan_host_steps(model, feeds) == []


# ---------------------------------------------------------------------------------------------
# What each rewrite makes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("batchnorm-2d", (6,)), ("batchnorm-3d", (6, 1)),
                                         ("batchnorm-4d", (6, 1, 1)), ("batchnorm-5d", (6, 1, 1, 1))])
def test_constant_batchnorm_becomes_one_mul_and_one_add_per_channel(name, shape):
    _, model, changes = run_passes(CASES[name]().proto(), decompose)
    assert ops(model) == ["Mul", "Add"]
    weights = model.graph.initializers
    assert [weights[n.inputs[1]].shape for n in model.graph.nodes] == [shape, shape]
    assert changes.changes == {"BatchNormalization→Mul+Add": 1}


def test_constant_batchnorm_precomputes_scale_and_shift():
    case = CASES["batchnorm-4d"]()
    _, model, _ = run_passes(case.proto(), decompose)
    w = case.weights
    s = w["scale"] / np.sqrt(w["var"] + 1e-3)
    mul, add = model.graph.nodes
    np.testing.assert_allclose(model.graph.initializers[mul.inputs[1]].reshape(-1), s, rtol=1e-6)
    np.testing.assert_allclose(model.graph.initializers[add.inputs[1]].reshape(-1), w["bias"] - w["mean"] * s,
                               rtol=1e-6, atol=1e-6)


def test_decomposed_batchnorm_fuses_into_one_elementwise_kernel():
    for name in ("batchnorm-4d", "batchnorm-runtime-stats"):
        model = compile_onnx(CASES[name]().proto().SerializeToString())
        assert [op for op in ops(model) if op != "Unsqueeze"] == ["Elementwise"], name


def test_runtime_batchnorm_statistics_follow_the_onnx_formula():
    _, model, changes = run_passes(CASES["batchnorm-runtime-stats"]().proto(), decompose)
    unsqueezes = ["Unsqueeze"] * 2  # the runtime mean and var: (C) -> (C, 1, 1)
    assert sorted(ops(model)) == sorted(unsqueezes + ["Add", "Sqrt", "Sub", "Div", "Mul", "Add"])
    assert changes.changes == {"BatchNormalization→elementwise": 1}


def test_batchnorm_after_a_conv_still_folds_into_it():
    case = CASES["batchnorm-4d"]()
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    bn = helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])
    proto = make_model([conv, bn], [("x", F, ["N", 3, "H", "W"])], [("y", F, None)],
                       {**case.weights, "w": rand(6, 3, 3, 3)}, 18)
    _, model, changes = run_passes(proto, fold_batchnorm, decompose)
    assert ops(model) == ["Conv"] and changes.changes == {"BatchNormalization→Conv": 1}
    assert ops(compile_onnx(proto.SerializeToString())) == ["FusedConv"]


def test_training_batchnorm_is_left_alone():
    case = CASES["batchnorm-4d"]()
    proto = case.proto()
    proto.graph.node[0].attribute.append(helper.make_attribute("training_mode", 1))
    _, model, changes = run_passes(proto, decompose)
    assert ops(model) == ["BatchNormalization"] and not changes.changed


def test_conv1d_becomes_a_2d_conv_on_a_height_of_one():
    _, model, changes = run_passes(CASES["conv1d"]().proto(), decompose)
    assert ops(model) == ["Unsqueeze", "Conv", "Squeeze"]
    conv = only(model, "Conv")
    assert conv.attrs == {"pads": [0, 1, 0, 2], "strides": [1, 2], "dilations": [1, 2]}
    assert model.graph.initializers[conv.inputs[1]].shape == (8, 4, 1, 3)
    assert conv.inputs[2] == "b"  # the bias is per output channel either way
    assert model.graph.types[conv.outputs[0]].rank == 4
    assert changes.changes == {"1-D Conv→2-D": 1}


def test_1d_attributes_map_to_2d():
    _, model, _ = run_passes(CASES["convtranspose1d-output-shape"]().proto(), decompose)
    assert only(model, "ConvTranspose").attrs == {"strides": [1, 2], "output_shape": [1, 40]}
    _, model, _ = run_passes(CASES["convtranspose1d"]().proto(), decompose)
    assert only(model, "ConvTranspose").attrs == {"strides": [1, 2], "pads": [0, 1, 0, 0], "output_padding": [0, 1]}
    _, model, _ = run_passes(CASES["averagepool1d-same-lower"]().proto(), decompose)
    assert only(model, "AveragePool").attrs == {"kernel_shape": [1, 4], "strides": [1, 3], "auto_pad": "SAME_LOWER"}
    _, model, _ = run_passes(CASES["conv1d-grouped"]().proto(), decompose)
    assert only(model, "Conv").attrs == {"group": 2, "kernel_shape": [1, 3], "pads": [0, 1, 0, 1]}


def test_a_3d_conv_becomes_one_2d_conv_over_the_depth_taps():
    """KD strided depth slices side by side as channels, batched over the output depth: the 2-D
    Conv has KD times the channels and the weights' depth taps ordered as the slices."""
    case = CASES["conv3d-strided-dilated"]()
    _, model, changes = run_passes(case.proto(), decompose)
    conv = only(model, "Conv")
    assert conv.attrs == {"kernel_shape": [3, 3], "strides": [1, 2], "dilations": [1, 1], "pads": [0, 1, 2, 0],
                          "group": 1}
    w = case.weights["w"]  # (8, 4, 3, 3, 3)
    packed = model.graph.initializers[conv.inputs[1]]
    assert packed.shape == (8, 12, 3, 3)
    np.testing.assert_array_equal(packed[:, 4 * 2 + 1], w[:, 1, 2])  # tap kd=2 of channel 1
    slices = [n for n in model.graph.nodes if n.op_type == "Slice"]
    starts = [int(model.graph.initializers[n.inputs[1]][0]) for n in slices]
    ends = [int(model.graph.initializers[n.inputs[2]][0]) for n in slices]
    assert starts == [0, 2, 4] and ends[:2] == [-4, -2]  # every tap OD long, the depth unknown
    assert changes.changes == {"3-D Conv→2-D Conv over depth taps": 1}


def test_grouped_3d_conv_keeps_each_groups_taps_in_its_group():
    case = CASES["conv3d-grouped"]()
    _, model, _ = run_passes(case.proto(), decompose)
    conv = only(model, "Conv")
    assert conv.attrs["group"] == 2
    assert model.graph.initializers[conv.inputs[1]].shape == (6, 6, 3, 3)  # (OC, KD · C/G, KH, KW)
    taps = [n for n in model.graph.nodes if n.op_type == "Concat" and len(n.inputs) == 3]
    assert [n.attrs for n in taps] == [{"axis": 2}]  # along (N, G, C/G, D, H, W)'s group channels


def test_a_depth_kernel_of_one_needs_no_slices():
    _, model, _ = run_passes(CASES["conv3d-pointwise-depth"]().proto(), decompose)
    assert "Slice" not in ops(model) and "Pad" not in ops(model)


def test_3d_conv_is_left_where_the_padding_is_unknown():
    case = conv3d(auto_pad="SAME_UPPER", strides=[2, 1, 1])  # D, H, W symbolic
    _, model, changes = run_passes(case.proto(), decompose)
    assert ops(model) == ["Conv"] and not changes.changes


def test_runtime_1d_weights_are_unsqueezed():
    _, model, _ = run_passes(CASES["conv1d-runtime-weights"]().proto(), decompose)
    conv = only(model, "Conv")
    assert model.graph.types[conv.inputs[1]].shape == (8, 4, 1, 3)
    assert ops(model).count("Unsqueeze") == 2


def conv1d_stack() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv1d -> Relu -> MaxPool1d -> Conv1d + residual -> BatchNorm, symbolic N and L."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["a1"], name="relu"),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2], strides=[2], name="pool"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "p1"], ["r"], name="residual"),
        helper.make_node("BatchNormalization", ["r", "s", "bb", "m", "v"], ["y"], name="bn"),
    ]
    weights = {"w1": rand(8, 4, 3), "b1": rand(8), "w2": rand(8, 8, 3), "s": rand(8, low=0.5), "bb": rand(8),
               "m": rand(8), "v": rand(8, low=0.5)}
    proto = make_model(nodes, [("x", F, ["N", 4, "L"])], [("y", F, None)], weights, 18)
    return proto, {"x": rand(2, 4, 16)}


def test_a_stack_of_1d_ops_stays_4d_between_them():
    """One Unsqueeze at the input, one Squeeze at the output: between 1-D ops the pairs
    cancel, and the Squeeze moves below the elementwise ops (activation, residual, the
    decomposed BatchNorm), so the activation still fuses into the convolution."""
    proto, feeds = conv1d_stack()
    model = compile_onnx(proto.SerializeToString())
    assert ops(model) == ["Unsqueeze", "FusedConv", "MaxPool", "FusedConv", "Elementwise", "Squeeze"]
    assert model.graph.nodes[1].attrs["activation"] == "relu"
    assert_close(ReferenceExecutor(model).run(feeds)["y"], onnxruntime_run(proto, feeds))
    assert plan_host_steps(model, feeds) == []


def test_a_1d_conv_with_silu_still_fuses_it():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    proto = make_model(nodes, [("x", F, ["N", 4, "L"])], [("y", F, None)], {"w": rand(8, 4, 3)}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert ops(model) == ["Unsqueeze", "FusedConv", "Squeeze"]
    assert model.graph.nodes[1].attrs["activation"] == "silu"
    feeds = {"x": rand(2, 4, 9)}
    assert_close(ReferenceExecutor(model).run(feeds)["y"], onnxruntime_run(proto, feeds))


def test_a_1d_conv_takes_its_residual():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]), helper.make_node("Add", ["c", "x"], ["y"])]
    proto = make_model(nodes, [("x", F, ["N", 4, "L"])], [("y", F, None)], {"w": rand(4, 4, 3)}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert ops(model) == ["Unsqueeze", "FusedConv", "Squeeze"]
    assert model.graph.nodes[1].attrs["residual"] == "before_activation"
    feeds = {"x": rand(2, 4, 9)}
    assert_close(ReferenceExecutor(model).run(feeds)["y"], onnxruntime_run(proto, feeds))


def test_a_layer_norm_after_a_1d_conv_still_fuses():
    """Only elementwise ops reading the conv's result (and constants, or tensors of its shape)
    move before the Squeeze: the mean a decomposed LayerNorm subtracts stops that, so the
    pattern stays whole."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
        helper.make_node("ReduceMean", ["c", "axes"], ["mean"]),
        helper.make_node("Sub", ["c", "mean"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["y"]),
    ]
    weights = {"w": rand(4, 4, 3), "axes": np.array([-1], np.int64), "eps": np.array(1e-5, np.float32)}
    proto = make_model(nodes, [("x", F, ["N", 4, "L"])], [("y", F, None)], weights, 18)
    model = compile_onnx(proto.SerializeToString())
    assert "LayerNormalization" in ops(model)
    feeds = {"x": rand(2, 4, 9)}
    assert_close(ReferenceExecutor(model).run(feeds)["y"], onnxruntime_run(proto, feeds))


@pytest.mark.parametrize("name", ["depth-to-space-dcr", "depth-to-space-crd", "depth-to-space-batch-dynamic",
                                  "space-to-depth"])
def test_depth_to_space_is_reshape_transpose_reshape(name):
    _, model, _ = run_passes(CASES[name]().proto(), decompose)
    assert ops(model) == ["Reshape", "Transpose", "Reshape"]


@pytest.mark.parametrize("name", ["depth-to-space-dcr-dynamic", "space-to-depth-dynamic"])
def test_dynamic_spatial_dims_are_never_baked_into_shapes(name):
    """With N, H and W all symbolic, the Reshapes copy dims (0) or compute one (-1): the
    compiled model runs at any size."""
    case = CASES[name]()
    compiled = compile_onnx(case.proto().SerializeToString())
    for shape in [(1, case.feeds["x"].shape[1], 8, 2), (3, case.feeds["x"].shape[1], 2, 10)]:
        feeds = {"x": rand(*shape)}
        assert_close(ReferenceExecutor(compiled).run(feeds)["y"], onnxruntime_run(case.proto(), feeds))


def test_mvn_reduces_its_axes_in_one_reduction_each():
    """The GPU reduces any axes in one kernel: MVN over (0, 2, 3) is two ReduceMeans over
    exactly those axes, with no Transpose to move them."""
    _, model, changes = run_passes(CASES["mvn-default-axes"]().proto(), decompose)
    means = [n for n in model.graph.nodes if n.op_type == "ReduceMean"]
    assert len(means) == 2 and "Transpose" not in ops(model)
    for n in means:
        assert sorted(int(a) for a in model.graph.initializers[n.inputs[1]]) == [0, 2, 3]
    assert "MeanVarianceNormalization" not in ops(model) and changes.changed


def test_lpnorm_of_a_zero_vector_is_zero():
    case = CASES["lpnorm-l2-last-axis"]()
    got = ReferenceExecutor(compile_onnx(case.proto().SerializeToString())).run(case.feeds)["y"]
    assert np.all(got[0, 0] == 0) and np.isfinite(got).all()


def test_float16_statistics_are_computed_in_float32():
    """Squares of float16 values over 256 overflow float16: the norm is computed in float32."""
    proto = make_model([node("LpNormalization", ["x"])], [("x", F16, ["N", 4])], [("y", F16, None)], {}, 18)
    x = np.array([[300, -400, 0, 0], [1000, 0, 0, 0]], np.float16)
    got = ReferenceExecutor(compile_onnx(proto.SerializeToString())).run({"x": x})["y"]
    np.testing.assert_allclose(got, [[0.6, -0.8, 0, 0], [1, 0, 0, 0]], rtol=1e-3)


def test_dropout_feeding_a_graph_output_becomes_identity():
    _, model, _ = run_passes(CASES["dropout-input-to-output"]().proto(), decompose)
    assert ops(model) == ["Identity"]


def test_dropout_mask_is_all_true():
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"])]
    proto = make_model(nodes, [("x", F, ["N", 4])], [("y", F, None), ("mask", TensorProto.BOOL, None)], {}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert "Dropout" not in ops(model)
    x = rand(3, 4)
    x[0, 0] = np.nan
    got = ReferenceExecutor(model).run({"x": x})
    np.testing.assert_array_equal(got["y"], x)
    assert got["mask"].dtype == bool and got["mask"].shape == (3, 4) and got["mask"].all()
    assert plan_host_steps(model, {"x": x}) == []


def test_dropout_in_training_mode_is_left_alone():
    proto = make_model([helper.make_node("Dropout", ["x", "", "training"], ["y"])],
                       [("x", F, ["N", 4]), ("training", TensorProto.BOOL, [])], [("y", F, None)], {}, 18)
    _, model, changes = run_passes(proto, decompose)
    assert ops(model) == ["Dropout"] and not changes.changed


@pytest.mark.parametrize("like", [TensorProto.FLOAT16, TensorProto.INT32, TensorProto.DOUBLE])
def test_castlike_becomes_a_cast_to_the_type_of_its_second_input(like):
    model = helper.make_model(helper.make_graph(
        [helper.make_node("CastLike", ["x", "target"], ["y"], name="cast_like")], "castlike",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("target", like, [1])],
        [helper.make_tensor_value_info("y", like, ["n", 3])]), opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    compiled = compile_onnx(model.SerializeToString())
    assert [(n.op_type, n.attrs.get("to")) for n in compiled.graph.nodes] == [("Cast", like)]
    x = np.array([[1.5, -2.25, 3.0], [0.0, 7.75, -1.0]], np.float32)
    target = np.zeros(1, helper.tensor_dtype_to_np_dtype(like))
    got = ReferenceExecutor(compiled).run({"x": x, "target": target})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "target": target})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert build_plan(compiled, {"x": (2, 3), "target": (1,)}, arch="sm_86", sm_count=46).host_steps == []


@pytest.mark.parametrize("trans_a, trans_b, c_shape, alpha, beta", [
    (1, 0, None, 1.0, 1.0),        # transA alone
    (0, 0, ["m", 6], 1.0, 1.0),    # C a matrix
    (0, 1, [], 0.5, 2.0),          # C a scalar, with alpha and beta
    (0, 0, [1, 6], 1.0, 1.0),      # C a row that broadcasts
    (0, 0, [6], 1.0, 0.25),        # a bias over N, but beta is not 1
    (1, 1, ["m", 1], 2.0, -1.0),   # everything at once: a column C
])
def test_a_gemm_the_gpu_kernel_cannot_take_becomes_one_it_can(trans_a, trans_b, c_shape, alpha, beta):
    a_shape = [5, "m"] if trans_a else ["m", 5]
    b_shape = [6, 5] if trans_b else [5, 6]
    inputs = [("a", TensorProto.FLOAT, a_shape), ("b", TensorProto.FLOAT, b_shape)]
    names = ["a", "b"]
    if c_shape is not None:
        inputs.append(("c", TensorProto.FLOAT, c_shape))
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta, name="gemm")
    proto = make_model([node], inputs, [("y", TensorProto.FLOAT, ["m", 6])])
    compiled = compile_onnx(proto.SerializeToString())
    rng = np.random.default_rng(trans_a + 2 * trans_b)
    for m in (3, 7):
        def concrete(shape):
            return [m if d == "m" else d for d in shape]

        feeds = {name: rng.standard_normal(concrete(shape)).astype(np.float32) for name, _, shape in inputs}
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert_close(ReferenceExecutor(compiled).run(feeds)["y"], want)
        plan = build_plan(compiled, {k: v.shape for k, v in feeds.items()}, arch="sm_86", sm_count=46)
        assert [(s.label, s.why_host) for s in plan.host_steps] == []


def test_bodies_of_control_flow_are_decomposed_too():
    """A Loop's body runs on the GPU once unrolled at plan time: its nodes get the same
    rewrites as the main graph's (here a CastLike becomes a Cast)."""
    body = helper.make_graph(
        [helper.make_node("CastLike", ["acc_in", "like"], ["cast"], name="body_cast_like"),
         helper.make_node("Add", ["cast", "cast"], ["acc_out"], name="body_add"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", F, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", F, [2])])
    loop = helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body, name="loop")
    proto = make_model([loop], [("x", F, [2])], [("y", F, None)],
                       {"trips": np.array(3, np.int64), "like": np.zeros(1, np.float32)}, 18)
    _, model, changes = run_passes(proto, decompose)
    inner = only(model, "Loop").attrs["body"]
    assert [n.op_type for n in inner.nodes] == ["Cast", "Add", "Identity"]
    assert changes.changes == {"CastLike→Cast": 1}
    x = rand(2)
    got = ReferenceExecutor(compile_onnx(proto.SerializeToString())).run({"x": x})["y"]
    np.testing.assert_allclose(got, x * 8, rtol=1e-6)
