"""Data-dependent shapes split the model, never send it whole to the host
(backends/data_dependent.py, runtime/split_run.py): a model is cut at the nodes whose output
shapes depend on values (NonZero here); the part before them and the part after them are
ordinary models with static plans (planned here for sm_86, no GPU needed), and running the
parts in turn gives what the whole model gives."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.data_dependent import data_dependent_nodes, split_model
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.errors import GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from rtxrt.runtime.split_run import SplitRun

F32 = DType.FLOAT32


def nonzero_model() -> Model:
    """y = 2x (an output); the positions of y's positive entries (NonZero: data-dependent),
    transposed to [K, 2], cast, summed per position, plus y's maximum (a value from before the cut)."""
    nodes = [
        Node("Mul", ["x", "two"], ["y"], name="double"),
        Node("Greater", ["y", "zero"], ["positive"], name="positive"),
        Node("ReduceMax", ["y"], ["peak"], {"keepdims": 0}, name="peak"),
        Node("NonZero", ["positive"], ["where"], name="where"),
        Node("Transpose", ["where"], ["pairs"], {"perm": [1, 0]}, name="pairs"),
        Node("Cast", ["pairs"], ["pairs_f"], {"to": int(F32)}, name="to_float"),
        Node("ReduceSum", ["pairs_f", "axis1"], ["sums"], {"keepdims": 0}, name="sum"),
        Node("Add", ["sums", "peak"], ["out"], name="plus_peak"),
    ]
    graph = Graph(nodes, ["x"], ["y", "out"], {"x": TensorType(F32, ("n", 4))},
                  {"two": np.array(2.0, np.float32), "zero": np.array(0.0, np.float32),
                   "axis1": np.array([1], np.int64)})
    return infer_types(Model(graph, {"": 17}))


def test_a_static_plan_refuses_a_model_with_a_data_dependent_node():
    with pytest.raises(GraphError, match="NonZero"):
        build_plan(nonzero_model(), {"x": (3, 4)}, arch="sm_86", sm_count=46)


def test_the_cut_is_the_data_dependent_node_and_nothing_else():
    model = nonzero_model()
    assert [n.name for n in data_dependent_nodes(model, {"x": (3, 4)})] == ["where"]
    split = split_model(model, {"x": (3, 4)})
    assert [n.name for n in split.before.graph.nodes] == ["double", "positive", "peak"]
    assert [n.name for n in split.cut.graph.nodes] == ["where"]
    assert [n.name for n in split.after.graph.nodes] == ["pairs", "to_float", "sum", "plus_peak"]
    # each part passes on exactly what a later part or the caller reads
    assert split.before.graph.outputs == ["y", "positive", "peak"]
    assert split.cut.graph.inputs == ["positive"] and split.cut.graph.outputs == ["where"]
    assert split.after.graph.inputs == ["where", "peak"] and split.after.graph.outputs == ["out"]


def test_the_parts_around_the_cut_have_static_gpu_plans():
    split = split_model(nonzero_model(), {"x": (3, 4)})
    before = build_plan(split.before, {"x": (3, 4)}, arch="sm_86", sm_count=46)
    after = build_plan(split.after, {"where": (2, 5), "peak": ()}, arch="sm_86", sm_count=46)
    assert before.host_steps == [] and after.host_steps == []


def test_a_model_without_data_dependent_nodes_is_not_split():
    graph = Graph([Node("Relu", ["x"], ["y"])], ["x"], ["y"], {"x": TensorType(F32, ("n", 4))})
    with pytest.raises(GraphError, match="no data-dependent node"):
        split_model(infer_types(Model(graph, {"": 17})), {"x": (2, 4)})


class ReferenceSession:
    """Stands in for a GPU session of one part: the reference backend, numpy in and out."""

    def __init__(self, model: Model):
        self.model, self.executor, self.stats = model, ReferenceExecutor(model), {"host_nodes": []}

    def run(self, names, feeds):
        results = self.executor.run(feeds)
        return [results[n] for n in self.model.graph.outputs]


@pytest.mark.parametrize("rows", [1, 3, 7])
def test_running_the_parts_in_turn_gives_what_the_whole_model_gives(rows):
    model = nonzero_model()
    x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
    run = SplitRun(split_model(model, {"x": x.shape}), ReferenceSession, upload=lambda a: a)
    got = run.run({"x": x})
    want = ReferenceExecutor(model).run({"x": x})
    for name in model.graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    assert run.host_nodes == ["NonZero node 'where'"]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_if_on_a_runtime_condition_runs_the_branch_it_takes(sign):
    from rtxrt.aot import compile_onnx
    from tests.backends.cuda.test_plan_coverage import runtime_if_model

    model = compile_onnx(runtime_if_model().SerializeToString())
    x = sign * np.abs(np.random.default_rng(0).standard_normal((3, 4))).astype(np.float32)
    split = split_model(model, {"x": x.shape})
    assert [n.op_type for n in split.cut.graph.nodes] == ["If"]
    run = SplitRun(split, ReferenceSession, upload=lambda a: a)
    got = run.run({"x": x})
    np.testing.assert_array_equal(got["y"], ReferenceExecutor(model).run({"x": x})["y"])
    assert run.host_nodes == []  # the host read the condition only
    assert len(run.cut.sessions()) == 1  # only the branch taken was made
