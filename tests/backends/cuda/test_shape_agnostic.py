"""Shape-agnostic kernels (ops/lowering.py: SHAPE_AGNOSTIC): a GEMM's kernels take the sizes as
arguments, fixed ones too, so that nodes of different sizes making the same decisions (tile,
alignment, epilogue) share one kernel, and a model compiles a handful of GEMM kernels instead of
one per size and tile. Convolutions other than pointwise ones keep their sizes in the source
(their index arithmetic divides by them).

Plans are made for sm_86 with 46 SMs, no GPU; each test builds its model with onnx.helper."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.program import Launch


def _weight(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.1, name)


def _plan(tmp_path, graph: onnx.GraphProto, shape: tuple[int, ...]):
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = compile_onnx(path, AotOptions(precision="fp16"))
    return build_plan(model, {"x": shape}, arch="sm_86", sm_count=46)


def _mlp(widths: list[int]) -> onnx.GraphProto:
    """x -> (MatMul + bias + Relu) per width: GEMMs of a different N and K each."""
    nodes, weights, value = [], [], "x"
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        weights += [_weight(f"w{i}", (k, n), i), _weight(f"b{i}", (n,), 100 + i)]
        nodes += [helper.make_node("MatMul", [value, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
        value = f"h{i}"
    return helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, widths[0]])],
                             [helper.make_tensor_value_info(value, TensorProto.FLOAT, None)], weights)


def _gemm_steps(plan):
    return [s for s in plan.steps if s.node is not None and s.node.op_type in ("FusedMatMul", "MatMul", "Gemm")]


def _kernel_of(program) -> tuple[str, Launch]:
    (launch,) = [s for s in program.steps if isinstance(s, Launch)]
    return launch.kernel, launch


def test_gemms_of_different_sizes_share_the_kernel_of_each_tile(tmp_path):
    plan = _plan(tmp_path, _mlp([64, 128, 256, 192]), (32, 64))
    steps = _gemm_steps(plan)
    assert len(steps) == 3
    by_tile: dict[str, set[str]] = {}
    for step in steps:
        for program in step.candidates:
            if program.label.startswith("mma "):
                by_tile.setdefault(program.label, set()).add(_kernel_of(program)[0])
    shared = [label for label, names in by_tile.items() if len(names) == 1]
    assert shared, by_tile  # at least one tile is offered to several nodes with one kernel
    assert all(len(names) == 1 for names in by_tile.values()), by_tile


def test_each_launch_of_a_shared_kernel_carries_its_own_nodes_sizes(tmp_path):
    widths = [64, 128, 256, 192]
    plan = _plan(tmp_path, _mlp(widths), (32, 64))
    for step, (k, n) in zip(_gemm_steps(plan), zip(widths, widths[1:])):
        name, launch = _kernel_of(step.candidates[0])
        source = plan.kernels[name]
        assert "constexpr int M =" not in source and "int rtxd_" in source  # the sizes are arguments, not literals
        assert {32, k, n} <= set(launch.dims), (step.label, launch.dims)
        assert all(type(d) is int for d in launch.dims)  # plain ints: nothing symbolic leaves the plan


def test_shared_gemm_kernels_compile(tmp_path):
    plan = _plan(tmp_path, _mlp([64, 128, 256]), (32, 64))
    names = {_kernel_of(p)[0] for s in _gemm_steps(plan) for p in s.candidates if p.label.startswith("mma ")}
    cubins = compile_many([(n, plan.kernels[n]) for n in sorted(names)], "sm_86")
    assert set(cubins) == names and all(c.startswith(b"\x7fELF") for c in cubins.values())


def _convs(kernels: list[int], channels: list[int]) -> onnx.GraphProto:
    """Conv + Relu per kernel size (a conv of ``kernels[i]`` from ``channels[i]`` to ``channels[i + 1]``)."""
    nodes, weights, value = [], [], "x"
    for i, (kernel, c, oc) in enumerate(zip(kernels, channels, channels[1:])):
        weights.append(_weight(f"w{i}", (oc, c, kernel, kernel), i))
        nodes.append(helper.make_node("Conv", [value, f"w{i}"], [f"c{i}"], kernel_shape=[kernel, kernel],
                                      pads=[kernel // 2] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        value = f"r{i}"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels[0], 28, 28])
    return helper.make_graph(nodes, "convs", [x], [helper.make_tensor_value_info(value, TensorProto.FLOAT, None)],
                             weights)


def _conv_kernels(plan) -> list[set[str]]:
    return [{name for p in s.candidates for name in p.kernels}
            for s in plan.steps if s.node is not None and s.node.op_type == "FusedConv"]


def test_pointwise_convolutions_of_different_channel_counts_share_gemm_kernels(tmp_path):
    """(Inside a channels-last region, as in a ResNet block: GEMMs over the pixels.)"""
    plan = _plan(tmp_path, _convs([3, 1, 1, 3], [64, 64, 128, 256, 64]), (1, 64, 28, 28))
    _, second, third, _ = _conv_kernels(plan)
    assert second & third
    assert all("rtxd_" in plan.kernels[name] for name in second & third)


def test_a_3x3_convolution_keeps_its_sizes_in_its_kernels(tmp_path):
    plan = _plan(tmp_path, _convs([3, 3], [64, 128, 256]), (1, 64, 28, 28))
    first, second = _conv_kernels(plan)
    assert not first & second
    assert not any("rtxd_" in plan.kernels[name] for name in first | second)
