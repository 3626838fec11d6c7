"""Planning a generic engine's new shape with what earlier plans left behind (the constants
memo, codegen/dynamic.py's plan memos, the profile's lowering templates) gives exactly the
plan made cold, and most of its nodes then come from templates instead of lowerings.

As GenericEngines does: each zoo model is planned at its opt shape with every tactic, one
tactic is chosen per node (the last offered: never the default, so that ``prefer`` matters),
and then several random shapes of the profile are planned in turn with ``tune=False`` and
that tactic preferred, the memos kept warm and the templates checked at the profile's sample
shapes first. Each finalized plan must equal the plan of its shape made with every memo
cleared, a fresh constants memo and no templates: launches (kernels, grids,
blocks, pointers, dim arguments), cuBLAS calls and copies, kernel names and sources, scratch,
constants, forms, and the arena (every offset and size). A memo that returned a value left
from another shape fails here."""
from __future__ import annotations

import dataclasses
import enum

import numpy as np
import pytest

pytest.importorskip("torch", reason="the zoo models are exported from torch")

from rtxrt.aot import compile_onnx  # noqa: E402
from rtxrt.aot.options import AotOptions  # noqa: E402
from rtxrt.backends.cuda.codegen.dynamic import clear_plan_memos  # noqa: E402
from rtxrt.backends.cuda.plan.builder import FinalPlan, Plan, build_plan, finalize  # noqa: E402
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes  # noqa: E402
from rtxrt.backends.cuda.plan.lowering_templates import LoweringTemplates  # noqa: E402
from rtxrt.ir.graph import Model, Node  # noqa: E402

ARCH, SMS = "sm_86", 46
# (ranges, how many random shapes, the step image sizes must be a multiple of)
CASES = {
    "resnet18": ({"input": ((1, 3, 16, 16), (1, 3, 32, 32), (3, 3, 64, 64))}, 4, 1),
    "yolo_tiny": ({"input": ((1, 3, 32, 32), (1, 3, 64, 64), (3, 3, 128, 128))}, 3, 32),
    "bert": ({n: ((1, 1), (2, 8), (4, 32)) for n in ("input_ids", "attention_mask", "token_type_ids")}, 4, 1),
}


def random_shapes(ranges: dict, count: int, step: int, rng: np.random.Generator) -> list[dict]:
    """``count`` distinct shapes of the profile (one draw for every input: they share dims)."""
    low, _, high = next(iter(ranges.values()))
    shapes: list[dict] = []
    while len(shapes) < count:
        dims = [int(rng.integers(lo // step, hi // step + 1)) * step if k >= 2 and step > 1 else
                int(rng.integers(lo, hi + 1)) for k, (lo, hi) in enumerate(zip(low, high))]
        shape = {n: tuple(dims) for n in ranges}
        if shape not in shapes and shape != {n: tuple(r[1]) for n, r in ranges.items()}:
            shapes.append(shape)
    return shapes


def canonical(value):
    """Everything a finalized plan holds, as comparable plain data (arrays by their bytes, a
    node by its label, the specialized model left out: its types are the plan's forms)."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, Model):
        return "model"
    if isinstance(value, Node):
        return value.label
    if isinstance(value, enum.Enum):
        return repr(value)
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, tuple((f.name, canonical(getattr(value, f.name)))
                                            for f in dataclasses.fields(value)))
    if isinstance(value, dict):
        return tuple((canonical(k), canonical(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(map(repr, value)))
    if isinstance(value, int) and not isinstance(value, bool):
        return (type(value).__name__, int(value))  # a DimInt left in a plan shows
    return value


def first_difference(warm: FinalPlan, cold: FinalPlan) -> str:
    for i, (a, b) in enumerate(zip(warm.programs, cold.programs)):
        if canonical(a) != canonical(b):
            return f"step {i} ({warm.plan.steps[i].label}): {a} != {b}"
    for part in ("plan", "memory", "layout"):
        if canonical(getattr(warm, part)) != canonical(getattr(cold, part)):
            return f"the {part} differs"
    return "the programs differ"


def choices_by_label(plan: Plan, labels: dict[int, str]) -> dict[int, int]:
    """Step index -> candidate index of the tactic ``labels`` names (as jit._choices reads the
    tactics the runtime cache stored)."""
    return {i: [p.label for p in plan.steps[i].candidates].index(label) for i, label in labels.items()
            if label in [p.label for p in plan.steps[i].candidates]}


@pytest.mark.parametrize("name", list(CASES))
def test_a_new_shape_planned_with_warm_memos_is_the_plan_made_cold(exported_dynamic, name):
    ranges, count, step = CASES[name]
    model = compile_onnx(exported_dynamic(name), AotOptions(precision="fp16"))
    dims, memo = dim_ranges(model, sample_shapes(ranges)), {}
    opt = build_plan(model, {n: r[1] for n, r in ranges.items()}, arch=ARCH, sm_count=SMS, dims=dims, constants=memo)
    tuned = finalize(opt, {i: len(s.candidates) - 1 for i, s in enumerate(opt.steps)})
    prefer = {s.label: p.label for s, p in zip(opt.steps, tuned.programs) if s.node is not None}
    labels = {i: p.label for i, p in enumerate(tuned.programs)}

    def plan_at(shapes: dict, constants: dict, templates: LoweringTemplates | None = None) -> FinalPlan:
        plan = build_plan(model, shapes, arch=ARCH, sm_count=SMS, dims=dims, constants=constants, tune=False,
                          prefer=prefer, templates=templates)
        return finalize(plan, choices_by_label(plan, labels))

    templates = LoweringTemplates()
    for sample in sample_shapes(ranges)[1:]:  # as GenericEngines checks them when it is built
        plan_at(sample, memo, templates)
    shapes = random_shapes(ranges, count, step, np.random.default_rng(len(name)))
    replayed, lowered = templates.replayed, templates.lowered
    warm = [plan_at(s, memo, templates) for s in shapes]  # in turn, as an engine meets them
    assert len({w.layout.arena_bytes for w in warm}) > 1, "the shapes should differ in size"
    replayed, lowered = templates.replayed - replayed, templates.lowered - lowered
    assert replayed > 3 * lowered, f"{replayed} nodes replayed, {lowered} lowered"
    for s, w in zip(shapes, warm):
        clear_plan_memos()
        cold = plan_at(s, {})
        assert canonical(w) == canonical(cold), f"{name} at {s}: {first_difference(w, cold)}"
        assert [p.label for st, p in zip(w.plan.steps, w.programs) if st.node is not None] == \
            [prefer[st.label] for st in w.plan.steps if st.node is not None]  # the tactics tuned at opt
