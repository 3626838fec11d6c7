"""Lowering templates (plan/lowering_templates.py): a node of a generic plan is lowered once
per guard class and re-evaluated at other shapes, never serving a shape its lowering would
have treated differently.

Each test drives one node through LoweringTemplates.programs with a small lowering of its
own, at several values of the node's one dim argument, and counts the lowerings it made."""
from __future__ import annotations

import traceback

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import DimInt, dim_bindings, peek, recording_guards
from rtxrt.backends.cuda.ops.context import LowerContext, WrongForm
from rtxrt.backends.cuda.plan.forms import TensorForm
from rtxrt.backends.cuda.plan.lowering_memo import lowering_key
from rtxrt.backends.cuda.plan.lowering_templates import MAX_TEMPLATES_PER_NODE, LoweringTemplates
from rtxrt.backends.cuda.plan.program import Launch, NodeProgram, Ref
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node

NAME = "rtxd_i0_0"  # the node's one dim argument: input 0, axis 0
LOW, HIGH = 1, 4096


def context(n: int) -> LowerContext:
    x = TensorForm(DType.FLOAT32, (DimInt(n, NAME, LOW, HIGH), 64))
    return LowerContext(Node("Relu", ["x"], ["y"], name="relu"), [x], [x], [None], 17, "sm_86", 46)


class Counted:
    """A lowering that counts its calls."""

    def __init__(self, body):
        self.body, self.calls = body, 0

    def __call__(self, ctx: LowerContext):
        self.calls += 1
        return self.body(ctx), set(ctx.reads)


def program(grid: int, label: str) -> list[NodeProgram]:
    launch = Launch("k", (grid, 1, 1), (256, 1, 1), (Ref.input(0), Ref.output(0)))
    return [NodeProgram([launch], [None], {"k": "source"}, label=label)]


def tiled(ctx: LowerContext) -> list[NodeProgram]:
    """A tile choice by size, as GEMM lowerings make them: a guarded decision."""
    n = ctx.inputs[0].shape[0]
    tile = 128 if n >= 1000 else 32
    return program(-(-(n * 64) // tile), f"tile{tile}")


def plan(templates: LoweringTemplates, lowering: Counted, n: int) -> list[NodeProgram]:
    with dim_bindings({NAME: n}):
        ctx = context(n)
        programs, _ = templates.programs(ctx, lowering_key(ctx, symbolic=True), lowering)
    return programs


def test_a_checked_template_serves_shapes_of_its_guard_class_without_lowering():
    templates, lowering = LoweringTemplates(), Counted(tiled)
    plan(templates, lowering, 50)  # made here
    plan(templates, lowering, 60)  # lowered again and compared: the template is checked
    assert lowering.calls == 2
    for n in (70, 999, 1):
        programs = plan(templates, lowering, n)
        assert programs[0].steps[0].grid == (-(-n * 64 // 32), 1, 1) and programs[0].label == "tile32"
        assert type(programs[0].steps[0].grid[0]) is int  # plain ints, as a fresh lowering gives
    assert lowering.calls == 2 and templates.replayed == 3


def test_a_shape_that_fails_a_guard_is_lowered_and_gets_a_template_of_its_own():
    templates, lowering = LoweringTemplates(), Counted(tiled)
    for n in (50, 60):
        plan(templates, lowering, n)
    assert plan(templates, lowering, 2000)[0].label == "tile128"  # n >= 1000 now: lowered
    assert lowering.calls == 3
    plan(templates, lowering, 3000)  # checks the second class's template
    assert plan(templates, lowering, 4000)[0].steps[0].grid == (2000, 1, 1)
    assert plan(templates, lowering, 10)[0].label == "tile32"
    assert lowering.calls == 4


def test_a_value_read_where_no_guard_sees_it_retires_the_template_at_its_check():
    def sized_by_numpy(ctx: LowerContext) -> list[NodeProgram]:  # numpy reads the int itself
        return program(int(np.int64(peek(ctx.inputs[0].shape[0])) * 2), "numpy")

    templates, lowering = LoweringTemplates(), Counted(sized_by_numpy)
    for n in (5, 6, 7, 8):
        assert plan(templates, lowering, n)[0].steps[0].grid == (2 * n, 1, 1)
    assert lowering.calls == 4 and templates.replayed == 0  # the check at 6 retired it


def test_a_bare_read_of_a_dim_pins_the_template_to_that_value_and_few_such_are_kept():
    def by_value(ctx: LowerContext) -> list[NodeProgram]:
        return program(int(ctx.inputs[0].shape[0]) + 1, "int")

    templates, lowering = LoweringTemplates(), Counted(by_value)
    assert [plan(templates, lowering, n)[0].steps[0].grid[0] for n in (5, 6, 5, 6)] == [6, 7, 6, 7]
    assert lowering.calls == 4  # a template per value, never checked at another
    for n in range(100, 100 + 3 * MAX_TEMPLATES_PER_NODE):
        assert plan(templates, lowering, n)[0].steps[0].grid[0] == n + 1
    assert sum(len(entries) for entries in templates._entries.values()) == MAX_TEMPLATES_PER_NODE


def test_a_refusal_is_replayed_as_the_same_error():
    def refuses_small(ctx: LowerContext) -> list[NodeProgram]:
        if ctx.inputs[0].shape[0] < 100:
            raise CodegenError("relu: too small for this lowering")
        return program(1, "big")

    templates, lowering = LoweringTemplates(), Counted(refuses_small)
    for n in (5, 6, 7):
        with pytest.raises(CodegenError, match="too small"):
            plan(templates, lowering, n)
    assert lowering.calls == 2
    assert plan(templates, lowering, 500)[0].label == "big"


def test_a_replayed_refusal_keeps_no_frames_alive():
    """Each replay raises a fresh error: re-raising the kept one would chain every replay's
    frames onto it (and with them the plans they were making) for as long as the engine lives."""
    def refuses(ctx: LowerContext) -> list[NodeProgram]:
        raise CodegenError("relu: refused")

    templates, lowering = LoweringTemplates(), Counted(refuses)
    depths, errors = [], []
    for n in range(5, 25):
        with pytest.raises(CodegenError) as refused:
            plan(templates, lowering, n)
        errors.append(refused.value)
        depths.append(len(traceback.extract_tb(refused.value.__traceback__)))
    assert lowering.calls == 2 and len(set(depths)) == 1
    assert len({id(e) for e in errors}) == len(errors)
    kept = [entry.template.outcome for entries in templates._entries.values() for entry in entries]
    assert kept and all(e.__traceback__ is None and e.__context__ is None for e in kept)


def test_a_wish_for_other_input_forms_is_replayed_with_those_forms_at_the_new_dims():
    def channels_last(ctx: LowerContext) -> list[NodeProgram]:
        x = ctx.inputs[0]
        raise WrongForm("relu: wants its input channels-last", {0: TensorForm(x.dtype, x.shape, "NHWC")})

    templates, lowering = LoweringTemplates(), Counted(channels_last)
    for n in (5, 6, 7):
        with pytest.raises(WrongForm) as refused:
            plan(templates, lowering, n)
        wanted = refused.value.wanted[0]
        assert wanted.layout == "NHWC" and wanted.shape == (n, 64) and type(wanted.shape[0]) is int
    assert lowering.calls == 2


def test_comparisons_of_dims_are_noted_as_guards_and_bare_reads_as_their_value():
    d = DimInt(7, NAME, LOW, HIGH)
    with recording_guards() as guards:
        assert d > 3 and not d == 8 and min(d, 100) is d
        assert int(d) == 7 and peek(d) == 7
    assert [(g[1], g[2], g[3]) for g in guards] == [(">", 3, True), ("==", 8, False), (">", 100, False),
                                                     ("==", 7, True)]  # (min asks 100 < d)
    assert d + 1 > d  # outside a recording nothing is noted, and nothing fails


def test_a_profile_engine_checks_its_templates_between_its_shapes_not_at_those_planned_already():
    from rtxrt.backends.cuda.generic import check_shapes

    image = {"input": ((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 1024, 1024))}
    assert check_shapes(image, reserved=True) == [{"input": (2, 3, 608, 608)}]  # 608 = 19 x 32, as 224 and 1024
    text = {n: ((1, 1), (4, 128), (8, 512)) for n in ("ids", "mask")}
    checked = check_shapes(text, reserved=True)
    assert [s["ids"] for s in checked] == [(5, 385), (4, 256), (2, 64)] and all(s["mask"] == s["ids"] for s in checked)
    assert {"ids": (8, 512), "mask": (8, 512)} not in checked and {"ids": (1, 1), "mask": (1, 1)} not in checked
