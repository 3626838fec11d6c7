"""The CUDA backend's Engine, run whole on the fake device, computes what the reference
backend computes: the plan the real builder makes, the real Engine (arena, weights upload,
kernels loaded from their "cubins", CUDA graph capture and replay, cuBLAS calls), with the
generated kernels interpreted and cuBLAS computed by numpy (tests/fake_gpu).

The check (tests/fake_gpu/engine.py check_model) compares with the reference backend running
the original ONNX model, to tolerances relative to each output's largest magnitude: fp32 1e-5
(cuBLAS emulated in float64, libm calls correctly rounded); fp16 and bf16 storage round every
stored value, 1e-2 and 4e-2."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.plan.program import Gemm, Launch
from tests.fake_gpu.device import FakeDevice, GemmRecord, LaunchRecord
from tests.fake_gpu.engine import check_model, check_plan_order, cublas_tactic, run_model
from tests.fake_gpu.models import (
    compiled,
    conv_feeds,
    conv_residual,
    data_movement,
    data_movement_feeds,
    depthwise,
    elementwise_chain,
    elementwise_feeds,
    fused_matmul,
    matmul_feeds,
)


@pytest.fixture
def device(monkeypatch):
    return FakeDevice().install(monkeypatch)


@pytest.mark.parametrize("use_graph", [True, False], ids=["graph", "eager"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_an_elementwise_chain_matches_the_reference(device, precision, use_graph):
    runs = check_model(device, elementwise_chain(), [elementwise_feeds(0), elementwise_feeds(1)], precision,
                       use_graph=use_graph)
    launches = [r for r in runs[1].records if isinstance(r, LaunchRecord)]
    assert launches and all(r.executed for r in launches)
    assert all(r.replay == use_graph for r in launches)  # run 2 replays the graph run 1 captured


@pytest.mark.parametrize("kind", ["MatMul", "Gemm"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_a_fused_matmul_on_cublas_with_the_epilogue_kernel_matches_the_reference(device, kind, precision):
    runs = check_model(device, fused_matmul(kind), [matmul_feeds(0), matmul_feeds(1)], precision,
                       prefer=cublas_tactic)
    engine = runs[0].engine
    fused = [i for i, s in enumerate(engine.plan.steps) if s.node is not None and s.node.op_type == "FusedMatMul"]
    assert len(fused) == 1, [s.label for s in engine.plan.steps]  # the AOT pipeline fused all four nodes
    program = engine.final.programs[fused[0]]
    assert [type(s) for s in program.steps] == [Gemm, Launch]  # cuBLAS, then the epilogue
    assert program.steps[0].dtype.short == {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    assert any(isinstance(r, GemmRecord) and r.replay for r in runs[1].records)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_conv_with_bias_and_residual_on_cublas_matches_the_reference(device, precision):
    """im2col (loops over NCHW taps for the first conv, 16-byte vectors over NHWC for the
    second), cuBLAS, the epilogue with the residual, and the layout conversion back."""
    runs = check_model(device, conv_residual(), [conv_feeds(0)], precision, prefer=cublas_tactic)
    engine = runs[0].engine
    labels = [p.label for p, s in zip(engine.final.programs, engine.plan.steps) if s.node is not None]
    assert all("cublas" in label for label in labels), labels
    assert sum(isinstance(r, GemmRecord) for r in runs[0].records) == 2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_depthwise_conv_matches_the_reference(device, precision):
    """The direct depthwise kernel: strided taps, padding skipped with continue."""
    runs = check_model(device, depthwise(), [conv_feeds(0)], precision, prefer=cublas_tactic)
    assert any(p.label.startswith("depthwise") for p in runs[0].engine.final.programs)
    assert all(r.executed for r in runs[0].records if isinstance(r, LaunchRecord))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_data_movement_pooling_and_resize_match_the_reference(device, precision):
    runs = check_model(device, data_movement(), [data_movement_feeds(0), data_movement_feeds(1)], precision)
    labels = {p.label for p in runs[0].engine.final.programs}
    assert {"resize", "pool", "concat", "slice", "gather", "tile"} <= labels, labels
    assert all(r.executed for r in runs[1].records if isinstance(r, LaunchRecord))


def test_the_device_runs_steps_in_plan_order_and_replays_the_captured_graph(device):
    run = run_model(device, compiled(elementwise_chain()), elementwise_feeds(0))
    matched = check_plan_order(run.engine, run.records)
    assert [i for i, _, _ in matched] == sorted(i for i, _, _ in matched)
    again = run.again(elementwise_feeds(1))
    assert [r.kernel for r in again.records if isinstance(r, LaunchRecord)] == \
        [r.kernel for _, _, r in matched if isinstance(r, LaunchRecord)]


def mlp(widths: list[int], seed: int = 0):
    """MatMul + bias + Relu per width after the first (weights from ``seed``), compiled fp16."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights, value = [], [], "x"
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        weights += [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [value, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
        value = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, widths[0]])],
                              [helper.make_tensor_value_info(value, TensorProto.FLOAT, None)], weights)
    return compiled(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "fp16")


def tune_counting(monkeypatch, device, model, timings=None):
    """Plan ``model`` at batch 8 and autotune it on ``device``; returns the plan, the choices,
    the FusedMatMul step indexes and the labels of the steps that were timed."""
    from rtxrt.backends.cuda.run.executor import load_functions
    from rtxrt.backends.cuda.tune import autotune as tuner
    from tests.fake_gpu.cublas import FakeCublas
    from tests.fake_gpu.engine import plan_model

    plan = plan_model(model, {"x": (8, model.graph.types["x"].shape[1])})
    layers = [i for i, s in enumerate(plan.steps) if s.node is not None and s.node.op_type == "FusedMatMul"]
    assert layers and all(len(plan.steps[i].candidates) > 1 for i in layers)
    timed = []
    fastest = tuner._fastest
    monkeypatch.setattr(tuner, "_fastest",
                        lambda plan, step, *rest: timed.append(step.label) or fastest(plan, step, *rest))
    stream = device.cupy.cuda.Stream(non_blocking=True)
    functions = load_functions({name: source.encode() for name, source in plan.kernels.items()})
    choices = tuner.autotune(plan, functions, FakeCublas(device, stream), stream, timings=timings)
    monkeypatch.setattr(tuner, "_fastest", fastest)
    return plan, choices, layers, timed


def test_steps_alike_in_all_their_timing_sees_are_timed_once(monkeypatch):
    """Three layers, the first two of one size (their weights differ): the second takes the
    first's choice without being timed, the third is timed."""
    device = FakeDevice(opaque="skip").install(monkeypatch)
    plan, choices, layers, timed = tune_counting(monkeypatch, device, mlp([32, 32, 32, 16]))
    first, second, third = (plan.steps[i] for i in layers)
    assert first.label in timed and third.label in timed and second.label not in timed
    assert choices[layers[1]] == choices[layers[0]] and set(choices) >= set(layers)


def test_a_problem_timed_for_one_model_is_not_timed_again_for_another(monkeypatch):
    """Two models sharing a layer's problem (32 -> 32 at batch 8), their other layers apart."""
    device = FakeDevice(opaque="skip").install(monkeypatch)
    timings: dict[str, str] = {}
    plan_a, choices_a, layers_a, timed_a = tune_counting(monkeypatch, device, mlp([32, 32, 64], seed=1), timings)
    assert len(timed_a) == 2 and len(timings) == 2
    plan_b, choices_b, layers_b, timed_b = tune_counting(monkeypatch, device, mlp([32, 32, 48], seed=2), timings)
    assert timed_b == [plan_b.steps[layers_b[1]].label]  # the 32 -> 48 layer only
    assert len(timings) == 3
    shared_a, shared_b = plan_a.steps[layers_a[0]], plan_b.steps[layers_b[0]]
    assert shared_b.candidates[choices_b[layers_b[0]]].label == shared_a.candidates[choices_a[layers_a[0]]].label


def test_the_autotuner_and_the_profiler_run_on_the_fake_device(monkeypatch):
    """Tactic timing goes through the same plumbing (scratch and constants of each candidate,
    step_calls, capture and replay, events); the fake's clock counts operations, so the
    choice itself means nothing here, only that every candidate could be run."""
    from rtxrt.backends.cuda.plan.builder import finalize
    from rtxrt.backends.cuda.run.executor import load_functions
    from rtxrt.backends.cuda.tune.autotune import autotune
    from tests.fake_gpu.cublas import FakeCublas
    from tests.fake_gpu.engine import load_engine, plan_model

    device = FakeDevice(opaque="skip").install(monkeypatch)  # tiled GEMMs are recorded, not run
    plan = plan_model(compiled(conv_residual(), "fp16"), {"x": (2, 8, 5, 5)})
    stream = device.cupy.cuda.Stream(non_blocking=True)
    functions = load_functions({name: source.encode() for name, source in plan.kernels.items()})
    choices = autotune(plan, functions, FakeCublas(device, stream), stream)
    assert set(choices) == {i for i, s in enumerate(plan.steps) if len(s.candidates) > 1}
    launched = {r.kernel for r in device.launches if r.replay}
    assert {name for i in choices for p in plan.steps[i].candidates for name in p.kernels} <= launched
    profile = load_engine(device, finalize(plan, choices)).profile(conv_feeds(0))
    assert [label for label, _ in profile] == [s.label for s in plan.steps] and all(ms > 0 for _, ms in profile)
