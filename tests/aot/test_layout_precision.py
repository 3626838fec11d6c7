"""Layout and precision annotations: choose_layout (NHWC regions of convolutions) and
annotate_precision (--precision, --keep-fp32), the policy table they read, and what survives a
.rtxir round trip.

Annotations never change what a graph computes (the reference backend ignores them), so an
annotated model's outputs must equal the unannotated model's bit for bit.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import aot_compile
from rtxrt.aot.options import AotOptions
from rtxrt.aot.passes.layout import choose_layout
from rtxrt.aot.passes.precision import annotate_precision
from rtxrt.aot.precision_policy import op_class
from rtxrt.ir.ops import Precision
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.cli import main
from rtxrt.format import read_rtxir, to_bytes
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, NodePrecision, Storage
from rtxrt.ir.ops.registry import all_schemas
from tests.helpers import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64
FP16, BF16, FP32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
LIGHT_RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
make_node = helper.make_node
rng = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def load(nodes, inputs: dict, outputs: dict, initializers=()) -> Model:
    """IR of a hand-built ONNX graph; inputs and outputs are float32, name -> shape."""
    return load_onnx(make_model(nodes, [(n, F, s) for n, s in inputs.items()],
                                [(n, F, s) for n, s in outputs.items()], initializers, opset=20))


def annotate(model: Model, precision: str = "fp16", keep: tuple[str, ...] = ()):
    return annotate_precision(model, AotOptions(precision=precision, keep_fp32=keep))


def precision_of(model: Model, name: str) -> NodePrecision | None:
    return next(n for n in model.graph.nodes if n.name == name).precision


def run(model: Model, feeds: dict) -> dict:
    return ReferenceExecutor(model).run(feeds)


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


def classifier() -> Model:
    """x -> Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Softmax -> y."""
    return load(
        [make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         make_node("Relu", ["c"], ["r"], name="relu"),
         make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
         make_node("Flatten", ["g"], ["f"], name="flat"),
         make_node("MatMul", ["f", "wm"], ["m"], name="mm"),
         make_node("Softmax", ["m"], ["y"], name="softmax")],
        {"x": [1, 3, 8, 8]}, {"y": [1, 5]},
        {"w": rand(4, 3, 3, 3), "b": rand(4), "wm": rand(4, 5)},
    )


def test_fp32_leaves_the_graph_unannotated():
    model = classifier()
    assert not annotate(model, "fp32", keep=("relu",)).changed
    assert all(n.precision is None for n in model.graph.nodes) and model.graph.storage == {}


def test_tf32_computes_gemm_like_ops_in_tf32_and_stores_nothing_narrow():
    model = classifier()
    result = annotate(model, "tf32")
    assert precision_of(model, "conv") == precision_of(model, "mm") == NodePrecision("tf32", "fp32")
    assert {precision_of(model, n) for n in ("relu", "gap", "flat", "softmax")} == {NodePrecision("fp32", "fp32")}
    assert model.graph.storage == {}
    assert result.changes == {"tf32 compute": 2, "fp32 compute": 4}


@pytest.mark.parametrize("precision, narrow, compute", [("fp16", FP16, "fp16"), ("bf16", BF16, "bf16"),
                                                        ("best", FP16, "fp16")])
def test_half_modes_narrow_storage_and_keep_statistics_in_fp32(precision, narrow, compute):
    model = classifier()
    result = annotate(model, precision)
    half, fp32 = NodePrecision(compute, "fp32"), NodePrecision("fp32", "fp32")
    assert [precision_of(model, n) for n in ("conv", "relu", "gap", "flat", "mm", "softmax")] == [
        half, half, fp32, half, half, fp32]  # GEMMs accumulate in fp32; pooling and softmax compute in it
    storage = model.graph.storage
    assert {storage[v].dtype for v in ("c", "r", "g", "f", "m", "w", "b", "wm")} == {narrow}
    assert "x" not in storage and "y" not in storage  # the boundary keeps the caller's float32
    assert result.changes[f"{compute} compute"] == 4 and result.changes["kept fp32 (sensitive)"] == 2
    assert result.changes[f"{narrow.short} storage: weights"] == 3


def test_exp_log_chain_and_sums_stay_fp32_until_the_next_gemm():
    model = load(
        [make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
         make_node("Exp", ["a"], ["e"], name="exp"),
         make_node("Add", ["e", "one"], ["s"], name="add"),
         make_node("Log", ["s"], ["l"], name="log"),
         make_node("MatMul", ["l", "w2"], ["m"], name="mm2"),
         make_node("Relu", ["m"], ["r"], name="relu"),
         make_node("ReduceSum", ["r", "axes"], ["y"], name="sum", keepdims=1)],
        {"x": [2, 8]}, {"y": [2, 1]},
        {"w1": rand(8, 8), "one": np.ones(1, np.float32), "w2": rand(8, 8), "axes": np.array([1])},
    )
    result = annotate(model)
    fp32, fp16 = NodePrecision("fp32"), NodePrecision("fp16")
    assert [precision_of(model, n) for n in ("mm1", "exp", "add", "log", "mm2", "relu", "sum")] == [
        fp16, fp32, fp32, fp32, fp16, fp16, fp32]
    storage = model.graph.storage
    assert not {"e", "s", "l", "one"} & set(storage)  # exp's range and what follows it stay fp32
    assert storage["a"].dtype == storage["m"].dtype == storage["r"].dtype == FP16
    assert result.changes["kept fp32 (reads a wide fp32 result)"] == 1


def test_values_that_become_sizes_and_integer_values_keep_their_types():
    """Resize to sizes computed in float: Shape -> Cast(float) -> Mul -> Floor -> Cast(int64)."""
    proto = make_model(
        [make_node("Shape", ["x"], ["shape"], name="shape"),
         make_node("Cast", ["shape"], ["shape_f"], name="to_float", to=F),
         make_node("Mul", ["shape_f", "factor"], ["scaled"], name="scale"),
         make_node("Floor", ["scaled"], ["floored"], name="floor"),
         make_node("Cast", ["floored"], ["sizes"], name="to_int", to=I64),
         make_node("Relu", ["x"], ["r"], name="relu"),
         make_node("Resize", ["r", "", "", "sizes"], ["y"], name="resize", mode="nearest")],
        [("x", F, [1, 2, 4, 4])], [("y", F, None)],
        {"factor": np.array([1, 1, 1.5, 1.5], np.float32)}, opset=20,
    )
    model = load_onnx(proto)
    result = annotate(model)
    assert {precision_of(model, n) for n in ("to_float", "scale", "floor", "to_int")} == {NodePrecision("fp32")}
    assert result.changes["kept fp32 (index math)"] == 4
    assert precision_of(model, "shape") is None  # reads only a shape
    assert set(model.graph.storage) == {"r"}  # int64 shape and sizes, fp32 size math: untouched
    assert precision_of(model, "resize") == NodePrecision("fp16")


def test_keep_fp32_pins_nodes_by_name_and_by_op_type():
    model = classifier()
    result = annotate(model, keep=("relu", "MatMul", "no_such_node"))
    assert precision_of(model, "relu") == precision_of(model, "mm") == NodePrecision("fp32", "fp32")
    assert precision_of(model, "conv") == NodePrecision("fp16")
    assert not {"r", "m", "wm"} & set(model.graph.storage)  # pinned outputs and weights stay fp32
    assert result.changes["pinned fp32 by --keep-fp32"] == 2
    assert result.changes["--keep-fp32 no_such_node: no such node or op"] == 1


def test_keep_fp32_by_op_type_still_finds_a_fused_node():
    proto = make_model(
        [make_node("Conv", ["x", "w", "b"], ["c"], name="conv"), make_node("Relu", ["c"], ["r"], name="relu"),
         make_node("Flatten", ["r"], ["y"], name="flat")],
        [("x", F, [1, 3, 4, 4])], [("y", F, None)], {"w": rand(4, 3, 1, 1), "b": rand(4)}, opset=20,
    )
    graph = aot_compile(proto, AotOptions(precision="fp16", keep_fp32=("Conv",))).model.graph
    fused = next(n for n in graph.nodes if n.op_type == "FusedConv")
    assert fused.precision == NodePrecision("fp32", "fp32")
    assert not {"w", "b", fused.outputs[0]} & set(graph.storage)


def test_a_fused_elementwise_chain_is_as_sensitive_as_its_strictest_op():
    def chain(*ops: str) -> Node:
        body = Graph([Node(op, [f"v{i}"], [f"v{i + 1}"]) for i, op in enumerate(ops)], ["v0"], [f"v{len(ops)}"])
        return Node("Elementwise", ["x"], ["y"], {"body": body}, domain="rtxrt")

    assert op_class(chain("Relu", "Neg")) is Precision.PLAIN
    assert op_class(chain("Neg", "Log")) is Precision.STATS
    assert op_class(chain("Neg", "Exp", "Log")) is Precision.WIDE


def test_every_operator_has_a_precision_class():
    # declared with each schema (tests/ir/test_op_facts.py checks the facts are consistent)
    assert all(isinstance(s.facts.precision, Precision) for s in all_schemas().values())


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def conv(name: str, x: str, y: str, cin: int, cout: int, weights: dict, **attrs):
    weights[f"{name}_w"], weights[f"{name}_b"] = rand(cout, cin, 3, 3), rand(cout)
    return make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, pads=[1, 1, 1, 1], **attrs)


def resnet_like(extra_outputs: dict | None = None) -> Model:
    """x -> conv1 -> relu1 -> conv2 -> (+relu1) -> relu2 -> maxpool -> conv3 -> GAP -> Flatten
    -> MatMul -> y: one region, in through x, out through the 1x1 GAP result."""
    w: dict = {}
    nodes = [
        conv("conv1", "x", "c1", 3, 8, w), make_node("Relu", ["c1"], ["r1"], name="relu1"),
        conv("conv2", "r1", "c2", 8, 8, w), make_node("Add", ["c2", "r1"], ["a"], name="add"),
        make_node("Relu", ["a"], ["r2"], name="relu2"),
        make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        conv("conv3", "p", "c3", 8, 16, w), make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"),
        make_node("Flatten", ["g"], ["f"], name="flat"), make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    w["fc"] = rand(16, 4)
    return load(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4], **(extra_outputs or {})}, w)


def nhwc(model: Model) -> set[str]:
    return {name for name, st in model.graph.storage.items() if st.layout == "NHWC"}


def test_a_conv_stack_goes_nhwc_with_one_conversion_in_and_one_out():
    model = resnet_like()
    result = choose_layout(model, AotOptions())
    activations = {"c1", "r1", "c2", "a", "r2", "p", "c3", "g"}
    weights = {"conv1_w", "conv2_w", "conv3_w"}
    assert nhwc(model) == activations | weights  # not x, f, y, the biases or the MatMul's weight
    assert all(model.graph.storage[v] == Storage(FP32, "NHWC") for v in activations | weights)
    assert result.changes == {"NHWC regions": 1, "NHWC values": 8, "NHWC weights": 3, "layout conversions": 2}


def test_a_lone_conv_between_reshapes_stays_nchw():
    model = load(
        [make_node("Reshape", ["x", "to4d"], ["image"], name="unflatten"),
         conv("conv", "image", "c", 3, 3, weights := {}),
         make_node("Reshape", ["c", "to2d"], ["y"], name="flatten")],
        {"x": [1, 48]}, {"y": [1, 48]},
        {**weights, "to4d": np.array([1, 3, 4, 4]), "to2d": np.array([1, -1])},
    )
    result = choose_layout(model, AotOptions())
    assert model.graph.storage == {}  # 1 conv would pay 2 conversions
    assert result.changes == {"convs left NCHW (conversions would cost more)": 1}


@pytest.mark.parametrize("axis, expected", [(1, {"a", "b", "cat", "c"}), (2, set())])
def test_a_channel_concat_joins_a_region_and_a_spatial_one_splits_it(axis, expected):
    w: dict = {}
    model = load(
        [conv("conv_a", "x", "a", 3, 4, w), conv("conv_b", "x", "b", 3, 4, w),
         make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=axis),
         conv("conv_c", "cat", "c", 8 if axis == 1 else 4, 4, w), make_node("Flatten", ["c"], ["y"], name="flat")],
        {"x": [1, 3, 4, 4]}, {"y": None}, w,
    )
    choose_layout(model, AotOptions())
    assert nhwc(model) - set(w) == expected


def test_a_split_on_channels_stays_in_the_region():
    """A wide conv split back into branches (what horizontal fusion leaves) and joined again."""
    w: dict = {}
    model = load(
        [conv("wide", "x", "both", 3, 8, w),
         make_node("Split", ["both", "halves"], ["a", "b"], name="split", axis=1),
         conv("conv_a", "a", "a2", 4, 4, w), conv("conv_b", "b", "b2", 4, 4, w),
         make_node("Concat", ["a2", "b2"], ["cat"], name="cat", axis=1),
         make_node("Flatten", ["cat"], ["y"], name="flat")],
        {"x": [1, 3, 4, 4]}, {"y": None}, {**w, "halves": np.array([4, 4])},
    )
    result = choose_layout(model, AotOptions())
    assert nhwc(model) - set(w) == {"both", "a", "b", "a2", "b2", "cat"}
    assert result.changes["layout conversions"] == 2


def test_a_value_that_is_a_graph_output_keeps_the_logical_layout():
    model = resnet_like(extra_outputs={"r1": [1, 8, 8, 8]})
    result = choose_layout(model, AotOptions())
    assert not {"c1", "r1"} & nhwc(model)  # relu1 writes an output; conv1 alone is not worth it
    assert {"c2", "a", "r2", "p", "c3", "g"} <= nhwc(model)
    assert result.changes["layout conversions"] == 2 and result.changes["convs left NCHW (conversions would cost more)"] == 1


def test_precision_narrows_the_dtype_and_keeps_the_layout():
    model = resnet_like()
    choose_layout(model, AotOptions())
    annotate(model, "fp16")
    storage = model.graph.storage
    assert storage["c1"] == storage["conv1_w"] == Storage(FP16, "NHWC")
    assert storage["f"] == Storage(FP16) and storage["conv1_b"] == Storage(FP16)


# ---------------------------------------------------------------------------------------------
# Annotations are data only: they survive the file and change no result
# ---------------------------------------------------------------------------------------------


def test_annotations_survive_the_rtxir_round_trip_and_change_no_result():
    model = resnet_like()
    plain = copy.deepcopy(model)
    choose_layout(model, AotOptions())
    annotate(model, "fp16", keep=("fc",))
    back = read_rtxir(to_bytes(model))
    assert back.graph.storage == model.graph.storage
    assert [n.precision for n in back.graph.nodes] == [n.precision for n in model.graph.nodes]
    feeds = {"x": rand(1, 3, 8, 8)}
    expected = run(plain, feeds)["y"]
    for annotated in (model, back):
        np.testing.assert_array_equal(run(annotated, feeds)["y"], expected)


@pytest.mark.skipif(not LIGHT_RESNET50.exists(), reason="onnx's light model zoo is not installed")
def test_light_resnet50_is_one_nhwc_region_with_two_conversions():
    report = aot_compile(LIGHT_RESNET50, AotOptions(precision="fp16")).report
    layout = next(p for p in report.passes if p.name == "choose_layout").changes
    assert layout["NHWC regions"] == 1 and layout["layout conversions"] == 2 and layout["NHWC weights"] == 53
    precision = next(p for p in report.passes if p.name == "annotate_precision").changes
    assert precision["fp16 compute"] >= 53 and precision["kept fp32 (sensitive)"] == 1  # the global pool


def test_inspect_shows_compute_precisions_and_device_storage(tmp_path, capsys):
    model = resnet_like()
    choose_layout(model, AotOptions())
    annotate(model, "fp16", keep=("fc",))
    path = tmp_path / "annotated.rtxir"
    path.write_bytes(to_bytes(model))
    assert main(["inspect", str(path), "--nodes"]) == 0
    out = capsys.readouterr().out
    assert "compute (- : as the logical types say):" in out and "device storage" in out
    assert "c1: float32[1,8,8,8] stored float16 NHWC  [fp16, accumulate fp32]" in out
    assert "-> y: float32[1,4]  [fp32, accumulate fp32]" in out  # pinned; the output stays float32
