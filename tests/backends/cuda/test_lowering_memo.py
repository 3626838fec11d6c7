"""Identical nodes of one plan are lowered once (plan/lowering_memo.py): two nodes alike in
op, attributes, forms and the constants their lowering reads share their programs, and the
plan is exactly the plan made by lowering every node on its own. Nodes that differ in any of
those, or that made constants of their own (packed weights), are lowered apart."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.codegen.dynamic import dim
from rtxrt.backends.cuda.plan import builder, lowering_memo
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.forms import TensorForm
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from tests.models import zoo

F32 = DType.FLOAT32


def model_of(nodes: list[Node], inputs: dict[str, tuple[int, ...]], outputs: list[str],
             initializers: dict[str, np.ndarray] | None = None) -> Model:
    graph = Graph(nodes, list(inputs), outputs, {n: TensorType(F32, s) for n, s in inputs.items()},
                  dict(initializers or {}))
    return Model(graph, {"": 21})


@pytest.fixture
def lowerings(monkeypatch) -> list[str]:
    """The op types the builder lowers, one entry a lowering."""
    calls: list[str] = []
    real = builder.lower

    def counted(ctx):
        calls.append(ctx.node.op_type)
        return real(ctx)

    monkeypatch.setattr(builder, "lower", counted)
    return calls


def plan(model: Model, shapes: dict[str, tuple[int, ...]], **kw):
    return build_plan(model, shapes, arch="sm_86", sm_count=46, **kw)


def described(p) -> list:
    return [(s.label, [(c.label, [repr(x) for x in c.steps], sorted(c.kernels), dict(c.scratch),
                        {k: v.tobytes() for k, v in c.consts.items()}, c.outputs) for c in s.candidates],
             s.inputs, s.outputs) for s in p.steps]


def test_alike_nodes_are_lowered_once(lowerings):
    nodes = [Node("Relu", ["x"], ["a"], name="r1"), Node("Relu", ["a"], ["b"], name="r2"),
             Node("Relu", ["b"], ["y"], name="r3")]
    p = plan(model_of(nodes, {"x": (4, 64)}, ["y"]), {"x": (4, 64)})
    assert [s.label for s in p.steps if s.node is not None] == ["Relu node 'r1'", "Relu node 'r2'", "Relu node 'r3'"]
    assert lowerings == ["Relu"]
    assert p.steps[0].candidates[0].steps == p.steps[2].candidates[0].steps


def test_the_same_input_twice_is_not_two_different_inputs(lowerings):
    nodes = [Node("Mul", ["x", "x"], ["a"], name="square"), Node("Mul", ["x", "z"], ["y"], name="product")]
    plan(model_of(nodes, {"x": (8,), "z": (8,)}, ["a", "y"]), {"x": (8,), "z": (8,)})
    assert lowerings == ["Mul", "Mul"]


def test_nodes_reading_different_small_constants_are_lowered_apart(lowerings):
    nodes = [Node("Slice", ["x", "s0", "e0"], ["a"], name="front"), Node("Slice", ["x", "s1", "e1"], ["b"], name="back"),
             Node("Slice", ["x", "s0", "e0"], ["c"], name="front again")]
    consts = {"s0": np.array([0]), "e0": np.array([4]), "s1": np.array([4]), "e1": np.array([8])}
    p = plan(model_of(nodes, {"x": (8, 3)}, ["a", "b", "c"], consts), {"x": (8, 3)})
    assert lowerings == ["Slice", "Slice"]  # "front again" reads what "front" read
    front, back, again = (s.candidates[0] for s in p.steps if s.node is not None)
    assert front.steps == again.steps and front.kernels != back.kernels


def test_nodes_packing_their_own_weights_keep_their_own(lowerings):
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((4, 3, 3, 3)).astype(np.float32) for _ in range(2))
    nodes = [Node("Conv", ["x", "w1"], ["a"], {"pads": [1, 1, 1, 1]}, name="c1"),
             Node("Conv", ["x", "w2"], ["b"], {"pads": [1, 1, 1, 1]}, name="c2")]
    p = plan(model_of(nodes, {"x": (1, 3, 8, 8)}, ["a", "b"], {"w1": w1, "w2": w2}), {"x": (1, 3, 8, 8)})
    assert lowerings == ["Conv", "Conv"]
    first, second = (s.candidates[0] for s in p.steps if s.node is not None)
    assert not np.array_equal(first.consts["W"], second.consts["W"])


def test_a_varying_dim_is_not_a_plain_int_of_its_value():
    varying = TensorForm(F32, (dim(5, "rtxd_i0_0", 1, 8), 64))
    assert varying == TensorForm(F32, (5, 64))  # as dataclasses they are equal...
    assert lowering_memo.form_key(varying) != lowering_memo.form_key(TensorForm(F32, (5, 64)))  # ...not as keys
    other_range = TensorForm(F32, (dim(5, "rtxd_i0_0", 1, 16), 64))
    assert lowering_memo.form_key(varying) != lowering_memo.form_key(other_range)


@pytest.mark.parametrize("name", ["bert", "resnet18"])
@pytest.mark.parametrize("generic", [False, True], ids=["specialized", "generic"])
def test_a_zoo_plan_is_the_plan_of_lowering_every_node_alone(zoo_dir, monkeypatch, name, generic):
    pytest.importorskip("torch", reason="the zoo models are exported from torch")
    if name in zoo.TEXT_MODELS:
        pytest.importorskip("transformers")
    path = zoo_dir / f"{name}_memo.onnx"
    if not path.exists():
        zoo.export(name, path, dynamic_size=name not in zoo.TEXT_MODELS)
    model = compile_onnx(path, AotOptions(precision="fp16"))
    inputs = [n for n in model.graph.inputs if n not in model.graph.initializers]
    if name == "bert":
        ranges = {n: ((1, 1), (2, 8), (3, 16)) for n in inputs}
        shapes = {n: (2, 5) for n in inputs}
    else:
        ranges = {n: ((1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64)) for n in inputs}
        shapes = {n: (2, 3, 40, 40) for n in inputs}
    dims = dim_ranges(model, sample_shapes(ranges)) if generic else None
    memoized = plan(model, shapes, dims=dims)
    monkeypatch.setattr(lowering_memo.LoweringMemo, "find", lambda self, ctx, key: None)  # nothing alike
    alone = plan(model, shapes, dims=dims)
    assert described(memoized) == described(alone)
