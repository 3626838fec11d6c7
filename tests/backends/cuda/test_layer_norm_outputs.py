"""LayerNormalization's optional Mean and InvStdDev outputs on the GPU, planned without one:
the lowering writes them from the row kernel in float32 (the stash type) with the normalized
axes kept as 1s, a model using them plans with every node on the GPU (ONNX's node tests
have all three outputs), and a generic plan serves its whole profile with the same kernels.
The kernels themselves are in the reduction catalogue (tests/backends/cuda/test_reduction_codegen.py
``STATS_CASES``: compiled there, run against the reference by test_gpu_reduction.py)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.ops.context import LowerContext
from rtxrt.backends.cuda.ops.reduction import lower_reduction
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.forms import TensorForm
from rtxrt.backends.cuda.plan.program import BufferRole, Ref
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from tests.helpers import make_model

F32, F16 = DType.FLOAT32, DType.FLOAT16


def lowered(outputs: list[str], shape: tuple[int, ...], axis: int, dtype: DType = F16):
    """The programs of a LayerNormalization writing ``outputs`` ("" for an omitted one)."""
    node = Node("LayerNormalization", ["x", "scale", "bias"], outputs, {"axis": axis}, name="ln")
    row = shape[axis % len(shape):]
    stats = TensorForm(F32, (*shape[:axis % len(shape)], *(1,) * len(row)))
    forms = [TensorForm(dtype, shape), stats, stats][:len(outputs)]
    ctx = LowerContext(node, [TensorForm(dtype, shape), TensorForm(dtype, row), TensorForm(dtype, row)],
                       [f if o else None for f, o in zip(forms, outputs)], [None] * 3, 17, "sm_86", 46)
    return lower_reduction(ctx)


def test_the_program_writes_mean_and_inv_std_in_float32_with_the_normalized_axes_kept_as_ones():
    (program,) = lowered(["y", "mean", "inv_std"], (2, 6, 5, 7), 1)
    assert program.outputs == [TensorForm(F16, (2, 6, 5, 7)), TensorForm(F32, (2, 1, 1, 1)),
                               TensorForm(F32, (2, 1, 1, 1))]
    (launch,) = program.steps
    assert launch.args[-3:] == (Ref(BufferRole.OUT, 0), Ref(BufferRole.OUT, 1), Ref(BufferRole.OUT, 2))


@pytest.mark.parametrize("outputs, written", [(["y", "", "inv_std"], 2), (["y", "mean"], 1)])
def test_the_program_writes_only_the_statistics_the_node_has(outputs, written):
    (program,) = lowered(outputs, (3, 5, 67), -2, F32)
    assert [f is not None for f in program.outputs] == [bool(o) for o in outputs]
    assert program.outputs[written] == TensorForm(F32, (3, 1, 1))
    assert [a for a in program.steps[0].args if a.role is BufferRole.OUT] == [Ref(BufferRole.OUT, 0),
                                                                             Ref(BufferRole.OUT, written)]


def test_without_the_statistics_the_program_writes_y_alone():
    (program,) = lowered(["y"], (3, 5, 67), -1)
    assert program.outputs == [TensorForm(F16, (3, 5, 67))]
    assert [a for a in program.steps[0].args if a.role is BufferRole.OUT] == [Ref(BufferRole.OUT, 0)]


def layer_norm_onnx(elem: int, shape: list, axis: int, outputs: tuple[str, ...] = ("y", "mean", "inv_std")):
    """LayerNormalization (opset 17) of x: ``elem``[shape] over ``axis``, its statistics float32."""
    start = axis % len(shape)
    row, stats = shape[start:], [*shape[:start], *[1] * (len(shape) - start)]
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    rng = np.random.default_rng(0)
    params = {"scale": rng.uniform(0.5, 2, row).astype(dtype), "bias": rng.uniform(-1, 1, row).astype(dtype)}
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], list(outputs), axis=axis, name="ln")
    types = {"y": (elem, shape), "mean": (TensorProto.FLOAT, stats), "inv_std": (TensorProto.FLOAT, stats)}
    return make_model([node], [("x", elem, shape)], [(o, *types[o]) for o in outputs if o], params)


@pytest.mark.parametrize("elem, shape, axis", [
    (TensorProto.FLOAT, [2, 3, 4, 5], -1), (TensorProto.FLOAT, [2, 3, 4, 5], 1), (TensorProto.FLOAT16, [4, 1500], 0),
    (TensorProto.BFLOAT16, [3, 5, 67], -2),
])
def test_a_layer_norm_with_all_three_outputs_plans_wholly_on_the_gpu(elem, shape, axis):
    model = compile_onnx(layer_norm_onnx(elem, shape, axis).SerializeToString())
    report = plan_coverage(model, {"x": tuple(shape)}, "sm_86")
    assert report.host_nodes == [] and report.gpu_nodes == report.nodes == 1
    assert [s.kind for s in report.segments] == ["gpu"]


def test_a_layer_norm_with_only_inv_std_plans_wholly_on_the_gpu():
    model = compile_onnx(layer_norm_onnx(TensorProto.FLOAT, [4, 16, 32], -1, ("y", "", "inv_std")).SerializeToString())
    assert plan_coverage(model, {"x": (4, 16, 32)}, "sm_86").host_nodes == []


def test_the_plan_gives_mean_and_inv_std_their_own_float32_buffers():
    model = compile_onnx(layer_norm_onnx(TensorProto.FLOAT16, [2, 8, 64], 1).SerializeToString())
    plan = build_plan(model, {"x": (2, 8, 64)}, arch="sm_86", sm_count=46)
    (step,) = [s for s in plan.steps if s.node is not None]
    assert [c.label for c in step.candidates] == ["layernormalization"]
    assert [plan.forms[v] for v in step.outputs] == [TensorForm(F16, (2, 8, 64)), TensorForm(F32, (2, 1, 1)),
                                                     TensorForm(F32, (2, 1, 1))]
    assert [plan.results[name] for name in ("y", "mean", "inv_std")] == step.outputs
    places = finalize(plan).layout.steps[plan.steps.index(step)].outputs
    assert len({p.offset for p in places}) == 3  # three live buffers, none sharing another's bytes


def test_a_generic_plan_writes_the_statistics_at_every_shape_of_its_profile_with_the_same_kernels():
    node = Node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv_std"], {"axis": -1}, name="ln")
    x = TensorType(F16, ("batch", "seq", 96))
    params = {"scale": np.ones(96, np.float16), "bias": np.zeros(96, np.float16)}
    graph = Graph([node], ["x"], ["y", "mean", "inv_std"], {"x": x}, params)
    model = Model(graph, {"": 17})
    ranges = {"x": ((1, 1, 96), (2, 64, 96), (8, 512, 96))}
    samples = sample_shapes(ranges)
    dims = dim_ranges(model, samples)
    plans = [build_plan(model, shapes, arch="sm_86", sm_count=46, dims=dims) for shapes in samples]
    assert all(p.host_steps == [] for p in plans)
    assert len({tuple(sorted(p.kernels.items())) for p in plans}) == 1
    (source,) = plans[0].kernels.values()
    assert "rtxd_" in source and "out1[row] = mean; out2[row] = inv;" in source
    for plan, shapes in zip(plans, samples):
        batch, seq, _ = shapes["x"]
        stats = [tuple(map(int, plan.forms[plan.results[o]].shape)) for o in ("mean", "inv_std")]
        assert stats == [(batch, seq, 1)] * 2
