"""Typed buffer plumbing of the CUDA backend, without a GPU: buffer roles are one enum (Ref's
and KernelArg's), and one layout (plan/arena.py) turns every Ref of a step into an allocation
and an offset, for the engine's arena and weights and for the autotuner's step on its own."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.codegen.kernel_source import GridLaunch, KernelArg, KernelSource
from rtxrt.backends.cuda.ops.context import kernel_args
from rtxrt.backends.cuda.plan.arena import (
    Allocation,
    Place,
    StepLayout,
    aligned,
    pack,
    step_alone,
)
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.program import BufferRole, Copy, Gemm, Launch, NodeProgram, Ref
from rtxrt.backends.memory_plan import ALIGNMENT
from rtxrt.ir.dtypes import DType
from tests.helpers import make_model

ARENA, WEIGHTS = Allocation.ARENA, Allocation.WEIGHTS


def arg(role, index: int) -> KernelArg:
    return KernelArg(f"p{index}", role, index, DType.FLOAT32, (4,))


# --- roles -----------------------------------------------------------------------------------


def test_kernel_args_are_node_inputs_or_outputs_and_say_their_ref():
    a, b = arg(BufferRole.IN, 2), arg(BufferRole.OUT, 0)
    assert a.ref == Ref.input(2) == Ref(BufferRole.IN, 2) and b.ref == Ref.output(0)
    with pytest.raises(ValueError, match="inputs and outputs"):
        arg(BufferRole.SCRATCH, 0)
    with pytest.raises(ValueError):
        arg("input", 0)  # a role is a BufferRole, not a word


def test_refs_are_typed():
    assert Ref.scratch("ws").role is BufferRole.SCRATCH and Ref.const("W").role is BufferRole.CONST
    with pytest.raises(TypeError):
        Ref("in", 1)


def test_kernel_args_map_each_argument_to_its_ref_unless_bound_elsewhere():
    args = (arg(BufferRole.IN, 0), arg(BufferRole.IN, 2), arg(BufferRole.OUT, 0))
    kernel = KernelSource("k", "", GridLaunch((1, 1, 1), (32, 1, 1)), args)
    assert kernel_args(kernel) == (Ref.input(0), Ref.input(2), Ref.output(0))
    assert kernel_args(kernel, {Ref.input(2): Ref.const("bias")}) == (Ref.input(0), Ref.const("bias"), Ref.output(0))


# --- layout ----------------------------------------------------------------------------------


def test_pack_aligns_every_buffer():
    assert aligned(0) == 0 and aligned(1) == ALIGNMENT and aligned(ALIGNMENT) == ALIGNMENT
    places, end = pack([("a", 1), ("b", 0), ("c", ALIGNMENT + 1)], WEIGHTS, start=ALIGNMENT)
    assert places == {"a": Place(WEIGHTS, ALIGNMENT), "b": Place(WEIGHTS, 2 * ALIGNMENT),
                      "c": Place(WEIGHTS, 2 * ALIGNMENT)}
    assert end == 4 * ALIGNMENT


def test_a_step_layout_resolves_each_role_to_its_allocation_and_offset():
    step = StepLayout((Place(ARENA, 512), None, Place(WEIGHTS, 0)), (Place(ARENA, 1024),),
                      {"ws": Place(ARENA, 2048)}, {"W": Place(WEIGHTS, 256)})
    assert step.place(Ref.input(0)) == Place(ARENA, 512)
    assert step.place(Ref.input(2)) == Place(WEIGHTS, 0)  # a constant the plan uploaded as an input
    assert step.place(Ref.output(0)) == Place(ARENA, 1024)
    assert step.place(Ref(BufferRole.SCRATCH, "ws", offset=64)) == Place(ARENA, 2112)
    assert step.place(Ref.const("W")) == Place(WEIGHTS, 256)
    with pytest.raises(KeyError):
        step.place(Ref.input(1))  # omitted
    address = step.addresses({ARENA: 1 << 20, WEIGHTS: 1 << 30})
    assert address(Ref.output(0)) == (1 << 20) + 1024 and address(Ref.const("W")) == (1 << 30) + 256


def test_a_step_alone_puts_inputs_then_outputs_then_scratch_and_its_constants_in_the_weights():
    program = NodeProgram([], [None], scratch={"ws": 100, "tmp": 1000},
                          consts={"W": np.zeros(10, np.float32), "b": np.zeros(3, np.float16)})
    layout = step_alone([300, None, 8], [4], program)
    (step,) = layout.steps
    assert step.inputs == (Place(ARENA, 0), None, Place(ARENA, 512))
    assert step.outputs == (Place(ARENA, 768),)
    assert step.scratch == {"ws": Place(ARENA, 1024), "tmp": Place(ARENA, 1280)}
    assert layout.arena_bytes == 1280 + aligned(1000)
    assert step.consts == {"W": Place(WEIGHTS, 0), "b": Place(WEIGHTS, 256)} and layout.weights_bytes == 512
    other = step_alone([300, None, 8], [4], NodeProgram([], [None]))
    assert other.steps[0].inputs == step.inputs and other.steps[0].outputs == step.outputs


# --- a finalized plan ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_plan():
    """Conv (packed constants, im2col scratch) -> a layout conversion -> Reshape (a view)."""
    rng = np.random.default_rng(0)
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Reshape", ["r", "shape"], ["y"])],
        [("x", TensorProto.FLOAT, [2, 3, 8, 8])], [("y", TensorProto.FLOAT, [2, 256])],
        {"w": rng.random((4, 3, 3, 3), np.float32), "b": np.zeros(4, np.float32), "shape": np.array([2, 256])})
    return build_plan(compile_onnx(model.SerializeToString()), {"x": (2, 3, 8, 8)}, arch="sm_86", sm_count=46)


def refs_of(program: NodeProgram) -> list[Ref]:
    refs = []
    for step in program.steps:
        if isinstance(step, Launch):
            refs += step.args
        elif isinstance(step, Gemm):
            refs += [step.a, step.b, step.c]
        elif isinstance(step, Copy):
            refs += [step.src, step.dst]
    return refs


@pytest.mark.parametrize("pick", ["first", "last"])
def test_every_ref_of_a_final_plan_resolves_inside_the_right_buffer(conv_plan, pick):
    plan = conv_plan
    final = finalize(plan, {i: 0 if pick == "first" else len(s.candidates) - 1 for i, s in enumerate(plan.steps)})
    layout, memory = final.layout, final.memory
    assert layout.arena_bytes == memory.arena_bytes and len(layout.steps) == len(plan.steps)
    assert any(p.scratch for p in final.programs) and any(p.consts for p in final.programs)
    assert memory.aliases  # the Reshape is a view
    seen = set()
    for i, (step, program, places) in enumerate(zip(plan.steps, final.programs, layout.steps)):
        for ref in refs_of(program):
            place = places.place(ref)
            seen.add(ref.role)
            if ref.role is BufferRole.IN or ref.role is BufferRole.OUT:
                value = (step.inputs if ref.role is BufferRole.IN else step.outputs)[ref.key]
                assert place == layout.values[value].plus(ref.offset)
                expected = WEIGHTS if value in plan.consts else ARENA
                assert place.allocation is expected and place.offset % ALIGNMENT == 0
                if expected is ARENA:
                    assert place.offset == memory.offsets[value]
            elif ref.role is BufferRole.SCRATCH:
                start = memory.offsets[f"#scratch{i}"]
                assert place.allocation is ARENA
                assert start <= place.offset < start + memory.sizes[f"#scratch{i}"]
            else:
                assert place.allocation is WEIGHTS and place == places.consts[ref.key]
    assert seen == set(BufferRole)
    # every constant lies in the weights, aligned, none overlapping another
    spans = sorted((place.offset, place.offset + array.nbytes) for place, array in final.constants())
    assert len(spans) == len(plan.consts) + sum(len(p.consts) for p in final.programs)
    assert all(lo % ALIGNMENT == 0 for lo, _ in spans)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:])) and spans[-1][1] <= layout.weights_bytes
