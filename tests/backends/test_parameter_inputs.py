"""Parameters given as graph inputs (a reduction's axes, a Resize's scales, a Slice's starts):
a GPU kernel needs them when the plan is made, so a plan without them leaves their nodes on
the host and says which values it needed; the inputs those come from (small ones, never data)
are the model's parameter inputs, and a plan of the model with their values as constants
has every node on the GPU. The runtime does that per value (runtime/parameter_run.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.builder import DataDependentShape, build_plan
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.parameter_inputs import MAX_PARAMETER_ELEMENTS, parameter_inputs, with_values
from rtxrt.runtime.parameter_run import ParameterRun
from tests.helpers import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def reduce_model(axes_elements: int = 1, through_cast: bool = False):
    nodes = []
    axes = "axes"
    if through_cast:  # the parameter reaches the node through arithmetic
        nodes.append(helper.make_node("Cast", ["axes32"], ["axes"], to=I64))
    nodes.append(helper.make_node("ReduceSum", ["x", axes], ["y"], keepdims=1))
    inputs = [("x", F, [2, 3, 4]), ("axes32" if through_cast else "axes",
                                    TensorProto.INT32 if through_cast else I64, [axes_elements])]
    return compile_onnx(make_model(nodes, inputs, [("y", F, None)], {}, 18).SerializeToString())


def plan(model, shapes):
    return build_plan(model, shapes, arch="sm_86", sm_count=46, tune=False)


def needed(model, shapes) -> frozenset[str]:
    """The values a plan at ``shapes`` lacked: for a kernel, or for an output's shape."""
    try:
        return plan(model, shapes).needs_values
    except DataDependentShape as exc:  # the axes decide the output's shape
        return exc.needs_values


def test_a_plan_without_the_axes_says_it_needed_them():
    model = reduce_model()
    assert needed(model, {"x": (2, 3, 4), "axes": (1,)}) == {"axes"}
    assert parameter_inputs(model, {"axes"}) == ["axes"]


def test_a_plan_whose_shapes_are_known_names_the_values_its_kernels_lacked():
    """keepdims=0 over a known rank: the output's shape is declared, the kernel still needs
    the axes."""
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=1)
    proto = make_model([node], [("x", F, [2, 3, 4]), ("axes", I64, [1])], [("y", F, [2, 1, 4])], {}, 18)
    model = compile_onnx(proto.SerializeToString())
    p = plan(model, {"x": (2, 3, 4), "axes": (1,)})
    assert [s.node.op_type for s in p.host_steps] == ["ReduceMax"] and p.needs_values == {"axes"}


def test_the_walk_goes_through_arithmetic_to_the_graph_input():
    model = reduce_model(through_cast=True)
    assert parameter_inputs(model, needed(model, {"x": (2, 3, 4), "axes32": (1,)})) == ["axes32"]


def test_with_the_values_as_constants_every_node_is_on_the_gpu():
    model = reduce_model()
    frozen = with_values(model, {"axes": np.array([1])})
    assert "axes" not in frozen.graph.inputs and "axes" in model.graph.inputs  # the original is kept
    assert plan(frozen, {"x": (2, 3, 4)}).host_steps == []


def test_a_weight_given_as_an_input_is_data_not_a_parameter():
    """A Conv whose weights are an input is not planned per value: that would plan every run."""
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    proto = make_model([conv], [("x", F, [1, 2, 5, 5]), ("w", F, [3, 2, 3, 3])], [("y", F, None)], {}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert needed(model, {"x": (1, 2, 5, 5), "w": (3, 2, 3, 3)}) == frozenset()


def test_a_large_input_is_never_a_parameter():
    model = reduce_model(axes_elements=MAX_PARAMETER_ELEMENTS + 1)
    assert parameter_inputs(model, ["axes"]) == []


def test_the_walk_stops_at_shapes():
    """Axes computed from x's shape and a parameter: x is not read as a value."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["rank"]),
             helper.make_node("Sub", ["rank", "k"], ["axis"]), helper.make_node("Unsqueeze", ["axis", "zero"], ["axes"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"])]
    proto = make_model(nodes, [("x", F, ["n", 3, 4]), ("k", I64, [])], [("y", F, None)],
                       {"zero": np.array([0], np.int64)}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert parameter_inputs(model, ["axes"]) == ["k"]


def test_coverage_plans_at_the_values_given_and_notes_them_otherwise():
    model = reduce_model()
    shapes = {"x": (2, 3, 4), "axes": (1,)}
    with_given = plan_coverage(model, shapes, "sm_86", values={"axes": np.array([2])})
    assert with_given.host_nodes == [] and with_given.parameter_inputs == ["axes"]
    without = plan_coverage(model, shapes, "sm_86")
    assert [h.op for h in without.host_nodes] == ["ReduceSum"] and without.parameter_inputs == ["axes"]
    assert "the runtime plans per value of input(s) 'axes'" in without.host_nodes[0].why


class Recorder:
    """A stand-in session: remembers the model it was made for and the feeds it ran."""

    def __init__(self, model):
        self.model, self.feeds, self.kernels_compiled_total = model, [], 2

    def run(self, wanted, feeds):
        self.feeds.append(dict(feeds))
        return [self.model.graph.initializers["axes"].copy()]


def test_a_parameter_run_keeps_one_session_per_value():
    made = []

    def session_for(model):
        made.append(Recorder(model))
        return made[-1]

    run = ParameterRun(reduce_model(), ["axes"], session_for)
    x = np.zeros((2, 3, 4), np.float32)
    for axes in ([1], [2], [1]):
        (got,) = run.run(["y"], {"x": x, "axes": np.array(axes)})
        np.testing.assert_array_equal(got, axes)  # the session made for that value ran
    assert len(made) == 2 and [len(m.feeds) for m in made] == [2, 1]
    assert set(made[0].feeds[0]) == {"x"}  # the parameter is a constant there, not a feed
    assert run.kernels_compiled == 4


def test_a_parameter_run_lets_go_of_the_least_recently_run_values(monkeypatch):
    from rtxrt.runtime import parameter_run

    monkeypatch.setattr(parameter_run, "MAX_LIVE_VALUES", 2)
    run = ParameterRun(reduce_model(), ["axes"], Recorder)
    x = np.zeros((2, 3, 4), np.float32)
    for axes in ([0], [1], [0], [2]):
        run.run(["y"], {"x": x, "axes": np.array([axes[0]])})
    kept = [int(s.model.graph.initializers["axes"][0]) for s in run.sessions.values()]
    assert kept == [0, 2]
    assert run.kernels_compiled == 3 * 2  # the dropped session's compiles still count


@pytest.mark.parametrize("value, why", [(np.array([1], np.int32), "expected int64[1], got int32[1]"),
                                        (np.array([1, 2]), "expected int64[1], got int64[2]")])
def test_a_parameter_of_the_wrong_type_or_shape_is_refused_by_name(value, why):
    from rtxrt.errors import InputError

    run = ParameterRun(reduce_model(), ["axes"], Recorder)
    with pytest.raises(InputError, match=re.escape(f"input 'axes': {why}")):
        run.run(["y"], {"x": np.zeros((2, 3, 4), np.float32), "axes": value})
    assert not run.sessions  # nothing was planned for it


@pytest.mark.parametrize("op, inputs", [
    ("Slice", {"starts": [1], "ends": [3], "axes": [1], "steps": [1]}),
    ("Pad", {"pads": [0, 1, 0, 1]}),
])
def test_every_parameter_of_a_node_is_found_at_once(op, inputs):
    """A lowering stops at the first value it lacks; the plan names all the node's parameters,
    so the runtime plans once per value, not once per parameter."""
    names = ["x", *inputs]
    node = helper.make_node(op, names, ["y"])
    proto = make_model([node], [("x", F, [2, 4])] + [(n, I64, [len(v)]) for n, v in inputs.items()],
                       [("y", F, None)], {}, 18)
    model = compile_onnx(proto.SerializeToString())
    found = needed(model, {"x": (2, 4), **{n: (len(v),) for n, v in inputs.items()}})
    assert sorted(parameter_inputs(model, found)) == sorted(inputs)


def test_a_scalar_parameter_becomes_a_scalar_constant():
    """(np.ascontiguousarray would make it 1-D, and shape inference then contradicts the
    declared scalar: ONNX's expanded window functions take their size so.)"""
    model = compile_onnx(make_model([helper.make_node("Range", ["start", "limit", "delta"], ["y"])],
                                    [("start", F, []), ("limit", F, []), ("delta", F, [])], [("y", F, None)], {}, 18)
                         .SerializeToString())
    made = with_values(model, {"start": np.array(1.0, np.float32), "limit": np.float32(4)})
    assert made.graph.initializers["start"].shape == () and made.graph.initializers["limit"].shape == ()
    assert made.graph.inputs == ["delta"]
