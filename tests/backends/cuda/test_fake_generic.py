"""A generic plan (one plan for every shape of a profile, its kernels taking the varying dims
as arguments: codegen/dynamic.py) computes what the reference backend computes at every
shape of the profile, run whole on the fake device (tests/fake_gpu).

For each zoo model the real builder plans generically (``dims`` from the profile) at the opt
shape, then at the profile's min and max and at an odd shape, as GenericEngines does: the
constants memo shared, the same tactic at every shape (the one chosen at opt; cuBLAS where a
node offers it, as the interpreter cannot run the tiled GEMMs), and the engines sharing one
SharedMemory (kernels, weights, an arena reserved for the max shape) on one stream. At every
shape the device must run the plan's launches in order with the dim arguments the plan
carries, every pointer must point at the buffer its KernelArg means, and, where every kernel
is one the interpreter runs (grid-stride kernels: not the warp-shuffle reductions of
LayerNorm / InstanceNorm or the attention kernels), the outputs must match the reference
(fp32 1e-5, fp16 1e-2 of each output's largest magnitude).

It also holds the plans to being generic: at every shape, the kernels are among those of the
opt shape (no compile for a new shape) and each node offers the same tactics. Kernel
families still being made generic are listed in NOT_YET_GENERIC (switch: empty it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("torch", reason="the zoo models are exported from torch")

from rtxrt.aot import compile_onnx  # noqa: E402
from rtxrt.aot.options import AotOptions  # noqa: E402
from rtxrt.backends.cuda.plan.builder import Plan, finalize  # noqa: E402
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes  # noqa: E402
from rtxrt.backends.cuda.plan.lowering_templates import LoweringTemplates  # noqa: E402
from rtxrt.backends.cuda.run.executor import SharedMemory  # noqa: E402
from rtxrt.frontend.onnx_import import load_onnx  # noqa: E402
from tests.fake_gpu.cuda_c import DeviceFault  # noqa: E402
from tests.fake_gpu.device import FakeDevice, LaunchRecord  # noqa: E402
from tests.fake_gpu.engine import (  # noqa: E402
    TOLERANCE,
    KernelCatalog,
    check_bindings,
    check_matches_reference,
    check_plan_order,
    choose,
    conv_buffer,
    cublas_tactic,
    load_engine,
    plan_model,
    reference_outputs,
    run_engine,
)
from tests.models import zoo  # noqa: E402

# ----------------------------------------------------------------------------- the switch

# Kernel families (name prefixes) whose generators are not yet generic: a plan at another
# shape may bring new kernels of these families, so the subset check skips them; every other
# family must be generic. Empty: the check covers the whole plan (every generator is generic;
# .bench/generic_check.py shows what is not). Add a prefix here only while its generator is
# being made generic.
NOT_YET_GENERIC: frozenset[str] = frozenset()
# Whether each node must offer the same candidate tactics at every shape (the tactic tuned at
# opt is reused at every shape, so its list must not depend on the shape).
SAME_CANDIDATES = True


def generic_part(kernels) -> set[str]:
    return {k for k in kernels if not k.startswith(tuple(NOT_YET_GENERIC))}


# ----------------------------------------------------------------------------- the models

IMAGE = {"input": ((1, 3, 16, 16), (1, 3, 24, 24), (2, 3, 32, 32))}
TEXT_RANGES = ((1, 1), (2, 8), (3, 16))


@dataclass(frozen=True)
class Case:
    """A zoo model's profile, the shapes run besides opt (min and max among them), and whether
    every kernel of its plan is one the interpreter runs (so its outputs can be compared)."""

    ranges: dict
    shapes: tuple[dict, ...]
    interpretable: bool

    @property
    def opt(self) -> dict:
        return {n: tuple(r[1]) for n, r in self.ranges.items()}


def _image(odd: tuple[int, ...], interpretable: bool, ranges: dict = IMAGE) -> Case:
    (low, _, high), = ranges.values()
    return Case(ranges, ({"input": low}, {"input": odd}, {"input": high}), interpretable)


def _text(names: list[str]) -> Case:
    ranges = {n: TEXT_RANGES for n in names}
    shapes = tuple({n: s for n in names} for s in ((1, 1), (3, 7), (3, 16)))
    return Case(ranges, shapes, False)  # LayerNorm reduces with warp shuffles; attention tiles


CASES = {
    "resnet18": _image((2, 3, 29, 19), True),
    "mobilenetv3_small": _image((2, 3, 29, 19), True),
    # the detection heads concatenate grids of strides 8, 16 and 32: sizes divisible by 32
    "yolo_tiny": _image((3, 3, 32, 64), True, {"input": ((1, 3, 32, 32), (1, 3, 64, 64), (3, 3, 64, 64))}),
    # InstanceNorm reduces with warp shuffles; the skip connections want sizes divisible by 4
    "unet": _image((3, 3, 20, 28), False, {"input": ((1, 3, 16, 16), (1, 3, 24, 24), (3, 3, 32, 32))}),
    "bert": _text(["input_ids", "attention_mask", "token_type_ids"]),
    "gpt2": _text(["input_ids", "attention_mask"]),
}


ALSO = {  # one more shape of each profile, like the odd one (planned from templates)
    "resnet18": {"input": (2, 3, 27, 21)},
    "mobilenetv3_small": {"input": (2, 3, 27, 21)},
    "yolo_tiny": {"input": (2, 3, 64, 32)},
    "unet": {"input": (2, 3, 28, 20)},
    "bert": {n: (2, 9) for n in ("input_ids", "attention_mask", "token_type_ids")},
    "gpt2": {n: (2, 9) for n in ("input_ids", "attention_mask")},
}


def feeds_at(name: str, shapes: dict, seed: int) -> dict[str, np.ndarray]:
    if name in zoo.TEXT_MODELS:
        batch, seq = next(iter(shapes.values()))
        return zoo.TEXT_MODELS[name].make_inputs(seed, batch=batch, seq=seq)
    return {"input": np.random.default_rng(seed).standard_normal(shapes["input"]).astype(np.float32)}


# ----------------------------------------------------------------------------- the check

def tactics(plan: Plan, opt: Plan, opt_choices: dict[int, int]) -> dict[int, int]:
    """The tactic chosen at opt, at every step (by label: a generic plan reuses it)."""
    assert [s.node and s.label for s in plan.steps] == [s.node and s.label for s in opt.steps]  # (conversions
    # are labelled with their shapes)
    choices = {}
    for i, (step, base) in enumerate(zip(plan.steps, opt.steps)):
        label = base.candidates[opt_choices.get(i, 0)].label
        labels = [c.label for c in step.candidates]
        assert label in labels, f"{step.label}: tactic {label!r} chosen at opt is not offered here: {labels}"
        choices[i] = labels.index(label)
        if SAME_CANDIDATES:
            assert labels == [c.label for c in base.candidates], f"{step.label}: other candidates than at opt"
    return choices


def run_generic(monkeypatch, name: str, path: str, precision: str, templates: LoweringTemplates | None = None):
    """Plan ``name`` generically at opt and at each shape of its case, load the engines on one
    fake device sharing one SharedMemory, run each shape (then opt again), and check each run.
    ``templates``: plan the other shapes as GenericEngines does, each node's opt tactic
    preferred and its lowering template re-evaluated where one serves (one more shape, so that
    a template checked at one shape serves the next), and placed in the memory plan of the
    largest shape where its values fit it."""
    case = CASES[name]
    catalog = KernelCatalog().install(monkeypatch)
    device = FakeDevice(256 << 20, opaque="raise" if case.interpretable else "skip").install(monkeypatch)
    model = compile_onnx(path, AotOptions(precision=precision))
    dims, memo = dim_ranges(model, sample_shapes(case.ranges)), {}
    opt = plan_model(model, case.opt, dims=dims, constants=memo)
    opt_choices = choose(opt, cublas_tactic)
    plans = [(case.opt, opt, opt_choices)]
    prefer = {s.label: s.candidates[opt_choices.get(i, 0)].label for i, s in enumerate(opt.steps) if s.node}
    for shapes in case.shapes if templates is None else (*case.shapes, ALSO[name]):
        if templates is None:
            plan = plan_model(model, shapes, dims=dims, constants=memo)
        else:
            plan = plan_model(model, shapes, dims=dims, constants=memo, tune=False, prefer=prefer, templates=templates)
        new = generic_part(plan.kernels) - set(opt.kernels)
        assert not new, f"{name} {precision} at {shapes}: kernels the opt plan lacks: {sorted(new)}"
        plans.append((shapes, plan, tactics(plan, opt, opt_choices) if templates is None else {}))

    finals = [finalize(plan, choices) for _, plan, choices in plans]
    high = max(finals, key=lambda f: f.layout.arena_bytes)
    if templates is not None:  # as GenericEngines: each shape placed in the largest one's memory plan where it fits
        finals = [finalize(plan, choices, reference=high.memory) for _, plan, choices in plans]
        places = list(high.memory.offsets.values())
        reused = [f for f in finals if f is not high and list(f.memory.offsets.values()) == places]
        assert reused, f"{name}: no smaller shape took the largest one's places"
    shared = SharedMemory(arena_bytes=high.layout.arena_bytes)  # reserved for the largest, as GenericEngines
    stream = device.cupy.cuda.Stream(non_blocking=True)
    engines = [load_engine(device, final, shared=shared, stream=stream) for final in finals]
    assert all(e.weights is engines[0].weights and e.arena is engines[0].arena for e in engines)
    assert len(shared.functions) == len(set().union(*(f.kernels for f in finals)))

    reference = load_onnx(path)
    runs = []
    for k, ((shapes, plan, _), engine) in enumerate([*zip(plans, engines), (plans[0], engines[0])]):
        feeds = feeds_at(name, shapes, seed=k)
        mark = device.mark()
        outputs = run_engine(engine, feeds)
        records = device.since(mark)
        what = f"{name} {precision} at {shapes}"
        check_plan_order(engine, records)  # (with each launch's dim arguments)
        assert check_bindings(engine, catalog, records, meaning=conv_buffer)
        launches = [r for r in records if isinstance(r, LaunchRecord)]
        if case.interpretable:
            assert all(r.executed for r in launches), [(r.kernel, r.why_not) for r in launches if not r.executed]
            check_matches_reference(outputs, reference_outputs(reference, feeds), tol=TOLERANCE[precision], what=what)
        runs.append((shapes, plan, launches))
    return runs


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(CASES))
def test_a_generic_plan_matches_the_reference_at_every_shape_of_its_profile(monkeypatch, exported_dynamic, name, precision):
    runs = run_generic(monkeypatch, name, exported_dynamic(name), precision)
    assert {tuple(s.values()) for s, _, _ in runs} >= {tuple(r[i] for r in CASES[name].ranges.values())
                                                       for i in range(3)}  # min, opt and max all ran
    # the kernels that take dims got each shape's own values
    dims_by_shape = [{r.kernel: r.scalars for r in launches if r.scalars} for _, _, launches in runs[:-1]]
    assert any(dims_by_shape), f"{name}: no kernel took a dim argument"
    shared = set.intersection(*(set(d) for d in dims_by_shape))
    assert any(len({d[k] for d in dims_by_shape}) == len(dims_by_shape) for k in shared), \
        f"{name}: no kernel launched with different dims at each shape"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case.interpretable])
def test_shapes_planned_from_lowering_templates_match_the_reference(monkeypatch, exported_dynamic, name, precision):
    """What a generic engine runs at a new shape, its nodes re-evaluated from templates
    (plan/lowering_templates.py), computes what the reference does on the device."""
    templates = LoweringTemplates()
    run_generic(monkeypatch, name, exported_dynamic(name), precision, templates)
    assert templates.replayed > 0, f"{name}: no node came from a template"


# ----------------------------------------------------------------------------- the fake device

KERNEL = '''extern "C" __global__ void __launch_bounds__(256) k(const float* __restrict__ x, float* __restrict__ y,
                                                        int rtxd_i0_0, long long scale) {
  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned int)(rtxd_i0_0 * 2);
       i += gridDim.x * blockDim.x) {
    y[i] = x[i] * (float)(scale + (long long)rtxd_i0_0);
  }
}'''


@pytest.fixture
def device(monkeypatch):
    return FakeDevice().install(monkeypatch)


def test_a_kernel_takes_its_dims_as_int_arguments_after_the_pointers(device):
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(KERNEL.encode())
    x, y = cupy.asarray(np.arange(8, dtype=np.float32)), cupy.asarray(np.zeros(8, np.float32))
    module.get_function("k")((1, 1, 1), (256, 1, 1), (x, y, np.int32(3), np.int64(10)))
    (record,) = device.launches
    assert record.args == (x.data.ptr, y.data.ptr) and record.scalars == (3, 10) and record.executed
    np.testing.assert_array_equal(y.get(), [0, 13, 26, 39, 52, 65, 0, 0])  # 2 * 3 elements, times 10 + 3


@pytest.mark.parametrize("dim, scale, why", [
    (3, np.int64(10), "int 3 is passed as 8"),  # CuPy passes a Python int as 8 bytes
    (np.uint64(3), np.int64(10), "takes 4 bytes"),
    (np.int32(3), np.int32(10), "takes 8 bytes"),
])
def test_a_scalar_argument_of_the_wrong_size_is_a_fault(device, dim, scale, why):
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(KERNEL.encode())
    x, y = cupy.asarray(np.zeros(8, np.float32)), cupy.empty(8, np.float32)
    with pytest.raises(DeviceFault, match=why):
        module.get_function("k")((1, 1, 1), (256, 1, 1), (x, y, dim, scale))
    with pytest.raises(DeviceFault, match="3 arguments, the kernel takes 4"):
        module.get_function("k")((1, 1, 1), (256, 1, 1), (x, y, np.int32(3)))
