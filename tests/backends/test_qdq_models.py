"""Quantized (QDQ) models run on the GPU: QuantizeLinear and DequantizeLinear have kernels, so
a model as onnxruntime.quantization.quantize_static writes it plans with no host step, in
fp32 and fp16; DequantizeLinear of constant weights is folded when compiling; Q -> DQ pairs
fuse with their elementwise neighbours into one kernel; the arithmetic stays fp32 under
``--precision fp16``; and the results are onnxruntime's (run with its graph optimizations
off, so that Q and DQ are computed as written), on the reference backend and, for a model on
an exact grid (tests/backends/qdq_models.py), on the fake device bit for bit.

Plans are made for sm_86 with 46 SMs; nothing here needs a GPU."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Model
from tests.backends.qdq_models import (
    GRID_SHAPE,
    INT4,
    blocked_matmul,
    cnn_feeds,
    grid_conv,
    grid_feeds,
    onnxruntime_outputs,
    quantize_static_model,
)
from tests.helpers import make_model

QUANTIZATION = {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def static_qdq(tmp_path_factory):
    pytest.importorskip("onnxruntime.quantization")
    return quantize_static_model(tmp_path_factory.mktemp("quantize_static"))


def plan(model: Model, shape: tuple[int, ...]):
    return build_plan(model, {"x": shape}, arch="sm_86", sm_count=46)


def body_ops(model: Model) -> list[list[str]]:
    """The ops of each fused rtxrt::Elementwise chain."""
    chains = [node for node in model.graph.nodes if node.op_type == "Elementwise"]
    return [[n.op_type for n in node.attrs["body"].nodes] for node in chains]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_quantize_static_model_plans_with_no_host_step(static_qdq, precision):
    assert sum(n.op_type in QUANTIZATION for n in static_qdq.graph.node) >= 20
    model = compile_onnx(static_qdq, AotOptions(precision=precision))
    assert [s.label for s in plan(model, (1, 3, 16, 16)).host_steps] == []


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
def test_a_qdq_pair_of_each_opset_fuses_with_its_neighbour_and_matches_onnxruntime(opset):
    """Opset 10 models are upgraded to 13 on import; 19 and 21 keep theirs."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), helper.make_node("Mul", ["d", "k"], ["y"])]
    proto = make_model(nodes, [("x", TensorProto.FLOAT, [2, 3, 40])], [("y", TensorProto.FLOAT, [2, 3, 40])],
                       {"s": np.float32(0.05), "z": np.int8(-4), "k": np.float32(3)}, opset=opset)
    model = compile_onnx(proto)
    assert body_ops(model) == [["QuantizeLinear", "DequantizeLinear", "Mul"]]
    assert build_plan(model, {"x": (2, 3, 40)}, arch="sm_86", sm_count=46).host_steps == []
    x = np.random.default_rng(opset).uniform(-8, 8, (2, 3, 40)).astype(np.float32)
    x.reshape(-1)[:4] = [0.125, -0.125, 0.175, 1e9]  # x / 0.05: ties (2.5, -2.5, 3.5) and saturation
    want = onnxruntime_outputs(proto, {"x": x})["y"]
    np.testing.assert_array_equal(ReferenceExecutor(model).run({"x": x})["y"], want)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_hand_built_qdq_conv_model_plans_with_no_host_step(precision):
    """Per-channel int8 weights and an int32 bias (folded), per-tensor and per-axis Q -> DQ
    on activations (the per-axis pair as lone Q and DQ kernels)."""
    model = compile_onnx(grid_conv(), AotOptions(precision=precision))
    steps = plan(model, GRID_SHAPE)
    lone = [s.node.op_type for s in steps.steps if s.node is not None and s.node.op_type in QUANTIZATION]
    assert lone == ["QuantizeLinear", "DequantizeLinear"]  # the per-axis pair: not fused, on the GPU
    assert [s.label for s in steps.host_steps] == []


def test_a_generic_plan_needs_the_same_quantization_kernels_at_every_shape_of_its_profile():
    """Batch and image size vary: the fused Q/DQ chains and the lone per-axis Q and DQ take
    them as kernel arguments, so planning another shape of the profile compiles nothing new."""
    from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes

    model = compile_onnx(grid_conv(dynamic=True))
    dims = dim_ranges(model, sample_shapes({"x": ((1, 2, 4, 4), (2, 2, 6, 6), (4, 2, 12, 12))}))

    def quantization_kernels(shape):
        steps = build_plan(model, {"x": shape}, arch="sm_86", sm_count=46, dims=dims).steps
        assert [s.label for s in steps if s.candidates[0].on_host] == []
        ops = {"Elementwise", *QUANTIZATION}
        return [name for s in steps if s.node is not None and s.node.op_type in ops for name in s.candidates[0].kernels]

    kernels = quantization_kernels((2, 2, 6, 6))
    assert len(kernels) == 5 and quantization_kernels((3, 2, 9, 5)) == kernels


def test_dequantized_constant_weights_are_folded_when_compiling_within_the_folding_limit():
    model = compile_onnx(grid_conv())
    conv = next(n for n in model.graph.nodes if n.op_type == "FusedConv")
    weight, bias = (model.graph.initializers[name] for name in conv.inputs[1:3])
    assert weight.dtype == np.float32 and weight.shape == (4, 2, 3, 3) and bias.dtype == np.float32
    assert all(n.op_type != "DequantizeLinear" or n.inputs[0] != "w" for n in model.graph.nodes)
    # AotOptions.fold_max_bytes (64 MiB by default) bounds a folded tensor: past it the
    # DequantizeLinear stays in the graph, and the planner computes it once when it plans
    # (values up to 2**18 elements) ...
    unfolded = compile_onnx(grid_conv(), AotOptions(fold_max_bytes=256))
    kept = [n for n in unfolded.graph.nodes if n.op_type == "DequantizeLinear" and n.inputs[0] == "w"]
    assert len(kept) == 1 and unfolded.graph.initializers["w"].dtype == np.int8
    assert "dequantize_w" not in [s.node.name for s in plan(unfolded, GRID_SHAPE).steps if s.node is not None]


@pytest.mark.parametrize("weights", [np.dtype(np.int8), INT4], ids=str)
def test_dequantized_weights_too_big_to_fold_dequantize_on_the_gpu_in_blocks(weights):
    """... and bigger ones (512 x 520 int8 or int4, blocks of 32 along K) are a GPU kernel
    reading the quantized weights on every run."""
    model = compile_onnx(blocked_matmul(weights), AotOptions(fold_max_bytes=1 << 16))
    steps = plan(model, (4, 512)).steps
    assert [s.node.name for s in steps if s.node is not None] == ["dequantize_w", "matmul"]
    assert [s.label for s in steps if s.candidates[0].on_host] == []
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)}
    np.testing.assert_allclose(ReferenceExecutor(model).run(feeds)["y"],
                               onnxruntime_outputs(blocked_matmul(weights), feeds)["y"], rtol=1e-5, atol=1e-5)


def test_quantize_dequantize_pairs_fuse_with_their_elementwise_neighbours(static_qdq):
    model = compile_onnx(static_qdq)
    bodies = body_ops(model)
    assert ["QuantizeLinear", "DequantizeLinear"] in bodies
    assert any("Add" in ops and ops.count("QuantizeLinear") >= 2 for ops in bodies)  # the residual: DQ, DQ, Add, Q, DQ
    assert not any(n.op_type in QUANTIZATION for n in model.graph.nodes)  # none left alone
    grid = compile_onnx(grid_conv())
    assert ["Add", "QuantizeLinear", "DequantizeLinear"] in body_ops(grid)
    assert [n.op_type for n in grid.graph.nodes if n.op_type in QUANTIZATION] == ["QuantizeLinear",
                                                                                 "DequantizeLinear"]


def test_quantization_keeps_fp32_under_fp16_precision(static_qdq):
    """QuantizeLinear and DequantizeLinear are Precision.OPAQUE: a fused chain holding one
    computes in fp32, reads its float inputs and stores its results in fp32 (the convolutions
    around them compute in fp16)."""
    model = compile_onnx(static_qdq, AotOptions(precision="fp16"))
    graph = model.graph
    chains = [n for n in graph.nodes if n.op_type == "Elementwise"]
    assert chains and all(n.precision.compute == "fp32" for n in chains)
    for node in chains:
        for name in (*node.inputs, *node.outputs):
            if graph.types[name].dtype == DType.FLOAT32:
                assert graph.storage.get(name) is None or graph.storage[name].dtype == DType.FLOAT32, name
    assert {n.precision.compute for n in graph.nodes if n.op_type == "FusedConv"} == {"fp16"}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_compiled_grid_model_computes_what_onnxruntime_computes_bit_for_bit(precision):
    model = compile_onnx(grid_conv(), AotOptions(precision=precision))
    for seed in range(3):
        feeds = grid_feeds(seed)
        want = onnxruntime_outputs(grid_conv(), feeds)["y"]
        np.testing.assert_array_equal(ReferenceExecutor(model).run(feeds)["y"], want)


def test_the_compiled_quantize_static_model_computes_what_onnxruntime_computes(static_qdq):
    model = compile_onnx(static_qdq)
    for seed in range(3):
        feeds = cnn_feeds(seed)
        want = onnxruntime_outputs(static_qdq, feeds)["y"]
        # Convolutions sum in another order than onnxruntime's: a value on the edge of a
        # rounding step may quantize one step apart, so allow a few output quanta.
        np.testing.assert_allclose(ReferenceExecutor(model).run(feeds)["y"], want, atol=0.05 * np.abs(want).max())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_grid_model_on_the_fake_device_gives_the_reference_bits(monkeypatch, precision):
    """The whole plan (fused Q/DQ chains, lone per-axis Q and DQ kernels, the convolution on
    cuBLAS) run by the real Engine on the fake device."""
    from tests.fake_gpu.device import FakeDevice
    from tests.fake_gpu.engine import cublas_tactic, run_model

    device = FakeDevice().install(monkeypatch)
    model = compile_onnx(grid_conv(), AotOptions(precision=precision))
    for seed in range(2):
        feeds = grid_feeds(seed)
        run = run_model(device, model, feeds, prefer=cublas_tactic)
        kernels = Counter(p.label for p in run.engine.final.programs)
        assert kernels["elementwise"] == 5, kernels  # 3 fused chains, the lone per-axis Q and DQ
        np.testing.assert_array_equal(run.outputs["y"], onnxruntime_outputs(grid_conv(), feeds)["y"])
