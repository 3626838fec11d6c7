"""The CUDA backend plans real models without a GPU: every node of the zoo models gets a
GPU program (none falls back to the host), the arena plan is safe, and every kernel the plans
need compiles with NVRTC for every supported arch.

Plans are made for sm_86 with 46 SMs (an RTX 3080); nothing here needs a GPU."""
from __future__ import annotations

import pytest

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.forms import NHWC
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS
from rtxrt.backends.cuda.compile.nvrtc import compile_many

MODELS = ["resnet18", "mobilenetv3_small", "unet", "bert", "gpt2"]
SHAPES = {"bert": {"batch": 2, "seq": 16}, "gpt2": {"batch": 2, "seq": 16}}


def plan_for(zoo_export, name: str, precision: str, tune: bool = True):
    exported = zoo_export(name)
    model = compile_onnx(exported.onnx_path, AotOptions(precision=precision))
    feeds = exported.make_inputs(1, **SHAPES.get(name, {}))
    return build_plan(model, {k: v.shape for k, v in feeds.items()}, arch="sm_86", sm_count=46, tune=tune)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_every_node_of_a_zoo_model_runs_on_the_gpu(zoo_export, name, precision):
    plan = plan_for(zoo_export, name, precision)
    assert [s.label for s in plan.host_steps] == []
    final = finalize(plan)  # plans the arena and checks it (check_plan)
    assert final.memory.arena_bytes < final.memory.naive_bytes
    assert set(plan.results) == set(plan.model.graph.outputs)


def test_convolutions_offer_several_tactics_including_cublas(zoo_export):
    plan = plan_for(zoo_export, "resnet18", "fp16")
    convs = [s for s in plan.steps if s.node is not None and s.node.op_type == "FusedConv"]
    assert convs
    for step in convs:
        labels = [p.label for p in step.candidates]
        assert len(labels) >= 2 and any("cublas" in label for label in labels), (step.label, labels)


def test_a_channels_last_model_converts_only_at_its_borders(zoo_export):
    plan = plan_for(zoo_export, "resnet18", "fp16")
    conversions = [s.label for s in plan.steps if s.node is None and s.candidates[0].label != "view"]
    assert len(conversions) <= 2, conversions  # the input in, nothing else (pooled 1x1 is free)
    assert any(f.layout == NHWC for f in plan.forms.values())


def test_shape_arithmetic_is_done_when_planning(zoo_export):
    plan = plan_for(zoo_export, "bert", "fp32")
    ops = {s.node.op_type for s in plan.steps if s.node is not None}
    assert not ops & {"Shape", "Range", "ConstantOfShape"}, ops


def test_every_kernel_of_the_zoo_plans_compiles_for_every_supported_arch(zoo_export):
    kernels = {}
    for name in ("resnet18", "unet", "bert"):
        for precision in ("fp32", "fp16"):
            kernels.update(finalize(plan_for(zoo_export, name, precision, tune=False)).kernels)
    for arch in SUPPORTED_ARCHS:
        cubins = compile_many(kernels.items(), arch)
        assert set(cubins) == set(kernels)
        assert all(c.startswith(b"\x7fELF") for c in cubins.values())




@pytest.mark.parametrize("name", ["bert", "resnet18"])
def test_a_generic_plan_at_a_new_shape_offers_first_the_tactics_tuned_at_the_opt_shape(zoo_export, tmp_path, name):
    """Planning a new shape of a profile lowers each node with the tactic its generic engine
    was tuned to (build_plan's ``prefer``), even where that is not the node's default, and
    needs no kernel the opt shape's plan did not have."""
    from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
    from tests.models import zoo

    if name == "bert":
        exported = zoo_export(name)
        inputs = exported.input_names
        ranges = {n: ((1, 1), (2, 16), (4, 32)) for n in inputs}
        other = {n: (3, 23) for n in inputs}
    else:
        exported = zoo.export(name, tmp_path / f"{name}.onnx", dynamic_size=True)
        ranges = {"input": ((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 96, 96))}
        other = {"input": (2, 3, 72, 72)}
    model = compile_onnx(exported.onnx_path, AotOptions(precision="fp16"))
    dims, memo = dim_ranges(model, sample_shapes(ranges)), {}
    opt = build_plan(model, {n: r[1] for n, r in ranges.items()}, arch="sm_86", sm_count=46, dims=dims, constants=memo)
    tuned = {i: len(s.candidates) - 1 for i, s in enumerate(opt.steps) if len(s.candidates) > 1}  # never the default
    final = finalize(opt, tuned)
    prefer = {s.label: p.label for s, p in zip(opt.steps, final.programs) if s.node is not None}
    plan = build_plan(model, other, arch="sm_86", sm_count=46, dims=dims, constants=memo, tune=False, prefer=prefer)
    assert [s.candidates[0].label for s in plan.steps if s.node is not None] == \
        [p.label for s, p in zip(opt.steps, final.programs) if s.node is not None]
    assert set(plan.kernels) <= set(opt.kernels)
