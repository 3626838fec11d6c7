"""The static memory plan reuses buffers by liveness and never lets a value be overwritten
while something still needs it."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest

from rtxrt.aot import AotOptions, aot_compile
from rtxrt.errors import InputError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Node, Storage, TensorType
from rtxrt.backends.memory_plan import (
    MemoryPlan,
    PlanError,
    _best_fit,
    _Buffer,
    check_plan,
    lifetimes,
    plan_memory,
    plan_model,
    planned_values,
    specialize,
    value_nbytes,
)

MB = 1 << 20
LIGHT_RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"


def chain(n: int, ops: list[str] | None = None) -> Graph:
    """x -> v0 -> v1 -> ... -> v{n-1} (the output)."""
    ops = ops or ["Relu"] * n
    names = ["x"] + [f"v{i}" for i in range(n)]
    nodes = [Node(op, [names[i]], [names[i + 1]], name=f"n{i}") for i, op in enumerate(ops)]
    return Graph(nodes, ["x"], [names[-1]])


def sizes_of(graph: Graph, size: int = MB) -> dict[str, int]:
    return {v: size for v in planned_values(graph)}


def planned(graph: Graph, nbytes=None, **kwargs) -> MemoryPlan:
    plan = plan_memory(graph, nbytes if nbytes is not None else sizes_of(graph), **kwargs)
    check_plan(plan, graph)
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes
    return plan


def overlap(plan: MemoryPlan, a: str, b: str) -> bool:
    return plan.offsets[a] < plan.offsets[b] + plan.sizes[b] and plan.offsets[b] < plan.offsets[a] + plan.sizes[a]


# --------------------------------------------------------------------------------------------
# Hand-built graphs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 10, 50])
def test_a_chain_of_same_size_values_needs_two_buffers(n):
    plan = planned(chain(n))
    assert plan.arena_bytes == 2 * MB
    assert plan.naive_bytes == n * MB
    assert len(set(plan.offsets.values())) == 2
    assert plan.reuse_ratio == n / 2
    assert "reuse" in plan.describe() and "2.00 MiB" in plan.describe()


def test_a_diamond_keeps_its_source_until_both_branches_have_read_it():
    # a -> b, a -> c, (b, c) -> d: while c is written, a and b are still needed.
    g = Graph([Node("Relu", ["x"], ["a"]), Node("Relu", ["a"], ["b"]), Node("Neg", ["a"], ["c"]),
               Node("Add", ["b", "c"], ["d"]), Node("Relu", ["d"], ["y"])], ["x"], ["y"])
    plan = planned(g)
    assert plan.lifetimes["a"] == (0, 2)
    assert not overlap(plan, "a", "c") and not overlap(plan, "b", "c") and not overlap(plan, "a", "b")
    assert not overlap(plan, "d", "b") and not overlap(plan, "d", "c")
    assert plan.arena_bytes == 3 * MB


def test_a_value_read_much_later_stays_live():
    g = chain(10)
    g.nodes.append(Node("Add", ["v9", "v0"], ["y"]))  # v0 is read again at the very end
    g.outputs = ["y"]
    plan = planned(g)
    assert plan.lifetimes["v0"] == (0, 10)
    assert not any(overlap(plan, "v0", f"v{i}") for i in range(1, 10))
    assert plan.arena_bytes == 3 * MB


def test_graph_outputs_are_never_overwritten():
    # v1 is an output produced early; the chain goes on past it; v0 is an output too.
    g = chain(8)
    g.outputs = ["v1", "v7", "v0"]
    plan = planned(g)
    end = len(g.nodes)
    assert plan.lifetimes["v0"] == (0, end) and plan.lifetimes["v1"] == (1, end)
    for out in g.outputs:  # nothing written after an output lands on it
        later = [v for v in plan.offsets if plan.lifetimes[v][0] > plan.lifetimes[out][0]]
        assert not any(overlap(plan, out, v) for v in later)
    assert {plan.offsets[v] for v in ["v2", "v3", "v4", "v5", "v6", "v7"]}.isdisjoint({plan.offsets["v0"], plan.offsets["v1"]})


def test_subgraph_reads_from_the_outer_scope_keep_a_value_alive():
    # v0 is read only inside the If's branch, at node 4: it must live until then.
    branch = Graph([Node("Identity", ["v0"], ["r"])], [], ["r"])
    g = chain(3)
    g.nodes += [Node("Relu", ["v2"], ["c"]), Node("If", ["c"], ["y"], attrs={"then_branch": branch, "else_branch": branch})]
    g.outputs = ["y"]
    plan = planned(g)
    assert plan.lifetimes["v0"] == (0, 4)
    assert not any(overlap(plan, "v0", v) for v in ["v1", "v2", "c", "y"])


def test_outputs_of_one_node_never_share_bytes():
    g = Graph([Node("Relu", ["x"], ["a"]), Node("Split", ["a"], ["s0", "s1", "s2"]),
               Node("Sum", ["s0", "s2"], ["y"])], ["x"], ["y"])
    plan = planned(g)
    assert plan.lifetimes["s1"] == (1, 1)  # never read, but still written
    assert not overlap(plan, "s0", "s1") and not overlap(plan, "s1", "s2") and not overlap(plan, "a", "s1")


def test_inputs_and_initializers_are_not_planned_and_offsets_are_aligned():
    g = Graph([Node("Add", ["x", "w"], ["a"]), Node("Relu", ["a"], ["b"]), Node("Mul", ["b", "a"], ["y"])],
              ["x"], ["y"], initializers={"w": np.ones(3, np.float32)})
    plan = planned(g, {"a": 1000, "b": 7, "y": 300})
    assert set(plan.offsets) == {"a", "b", "y"}
    assert all(off % 256 == 0 for off in plan.offsets.values())
    assert plan.naive_bytes == 1024 + 256 + 512


def test_a_small_value_fills_the_gap_a_dead_one_left():
    # a and b (4 MiB) overlap at node 1; c and y (1 MiB) live beside b only, after a has
    # died: they go where a was instead of raising the arena.
    g = Graph([Node("Relu", ["x"], ["a"]), Node("Relu", ["a"], ["b"]), Node("Relu", ["b"], ["c"]),
               Node("Add", ["b", "c"], ["y"])], ["x"], ["y"])
    plan = planned(g, {"a": 4 * MB, "b": 4 * MB, "c": MB, "y": MB})
    assert plan.arena_bytes == plan.lower_bound_bytes == 8 * MB
    assert plan.offsets["c"] < 4 * MB and plan.offsets["y"] < 4 * MB


def test_best_fit_takes_the_smallest_gap_that_fits():
    # placed: [2, 3) and [4, 5) MiB, both alive with the new buffer; gaps [0, 2) and [3, 4)
    placed = [_Buffer("p", MB, 0, 9, offset=2 * MB), _Buffer("q", MB, 0, 9, offset=4 * MB)]
    assert _best_fit(_Buffer("n", MB, 1, 2), placed, 256) == 3 * MB
    assert _best_fit(_Buffer("n", 2 * MB, 1, 2), placed, 256) == 0
    assert _best_fit(_Buffer("n", 3 * MB, 1, 2), placed, 256) == 5 * MB
    assert _best_fit(_Buffer("n", 3 * MB, 10, 12), placed, 256) == 0  # nothing alive beside it


@pytest.mark.parametrize("seed", range(20))
def test_random_dags_plan_safely(seed):
    rng = np.random.default_rng(seed)
    names, nodes = ["x"], []
    for i in range(int(rng.integers(5, 60))):
        inputs = list(rng.choice(names, size=min(len(names), int(rng.integers(1, 4))), replace=False))
        nodes.append(Node("Sum", inputs, [f"v{i}"]))
        names.append(f"v{i}")
    outputs = list(rng.choice(names[1:], size=int(rng.integers(1, 4)), replace=False))
    g = Graph(nodes, ["x"], outputs)
    nbytes = {v: int(rng.integers(1, 5 * MB)) for v in planned_values(g)}
    plan = planned(g, nbytes)
    # the heuristic stays close to the bound no plan can beat
    assert plan.arena_bytes <= 1.5 * plan.lower_bound_bytes


# --------------------------------------------------------------------------------------------
# Views and storage
# --------------------------------------------------------------------------------------------


def test_views_share_their_source_buffer_and_extend_its_life():
    g = chain(5, ["Relu", "Reshape", "Unsqueeze", "Relu", "Relu"])
    g.nodes[1].inputs.append("shape")
    g.initializers["shape"] = np.array([-1], np.int64)
    plain = planned(g)
    assert plain.aliases == {}
    plan = planned(g, allow_views=True)
    assert plan.aliases == {"v1": "v0", "v2": "v0"}  # a chain of views resolves to the root
    assert plan.offsets["v0"] == plan.offsets["v1"] == plan.offsets["v2"]
    # v3 reads v2 (stored in v0's buffer), so v3 may not be written over v0
    assert not overlap(plan, "v3", "v0")
    assert plan.arena_bytes == 2 * MB and "2 views" in plan.describe()


def test_no_view_when_the_source_is_read_after_the_view():
    g = chain(3, ["Relu", "Flatten", "Relu"])
    g.nodes.append(Node("Add", ["v2", "v0"], ["y"]))  # v0 is read again after the Flatten
    g.outputs = ["y"]
    assert planned(g, allow_views=True).aliases == {}


def test_no_view_of_a_graph_output_or_across_storage_layouts():
    g = chain(3, ["Relu", "Identity", "Relu"])
    g.outputs = ["v2", "v0"]
    assert planned(g, allow_views=True).aliases == {}
    g = chain(3, ["Relu", "Identity", "Relu"])
    g.storage["v0"] = Storage(DType.FLOAT32, layout="NHWC")  # a channels-last source is not a plain view
    g.types.update({v: TensorType(DType.FLOAT32, (1, 8, 4, 4)) for v in ["v0", "v1", "v2"]})
    assert planned(g, allow_views=True).aliases == {}


def test_fp16_storage_halves_sizes():
    g = chain(3)
    g.types.update({v: TensorType(DType.FLOAT32, (4, 1024)) for v in ["x", "v0", "v1", "v2"]})
    assert value_nbytes(g) == {"v0": 16384, "v1": 16384, "v2": 16384}
    g.storage.update({v: Storage(DType.FLOAT16) for v in ["v0", "v1"]})
    assert value_nbytes(g) == {"v0": 8192, "v1": 8192, "v2": 16384}
    assert plan_memory(g).arena_bytes == 8192 + 16384


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------


def test_the_checker_finds_a_value_overwritten_while_needed():
    g = Graph([Node("Relu", ["x"], ["a"]), Node("Relu", ["a"], ["b"]), Node("Add", ["a", "b"], ["y"])], ["x"], ["y"])
    plan = planned(g)
    bad = copy.deepcopy(plan)
    bad.offsets["b"] = bad.offsets["a"]
    with pytest.raises(PlanError, match="writes 'b'.*over 'a'"):
        check_plan(bad, g)
    bad = copy.deepcopy(plan)
    bad.offsets["a"] += 1
    with pytest.raises(PlanError, match="unaligned"):
        check_plan(bad, g)
    bad = copy.deepcopy(plan)
    bad.aliases["b"] = "a"  # a Relu is no view
    bad.offsets["b"] = bad.offsets["a"]
    with pytest.raises(PlanError, match="not a view"):
        check_plan(bad, g)


def test_the_checker_allows_reuse_once_a_value_is_dead():
    g = chain(4)
    plan = planned(g)
    assert plan.offsets["v0"] == plan.offsets["v2"]  # v0's last reader ran before v2 is written


# --------------------------------------------------------------------------------------------
# Specializing symbolic shapes
# --------------------------------------------------------------------------------------------


def test_specialize_binds_symbols_and_leaves_the_model_alone():
    from tests.helpers import add_relu_model

    model = aot_compile(add_relu_model()).model
    before = dict(model.graph.types)
    fixed = specialize(model, {"x": (3, 4)})
    assert all(t.is_static for t in fixed.graph.types.values())
    assert fixed.graph.types["y"].shape == (3, 4)
    assert model.graph.types == before
    assert fixed.graph.initializers["bias"] is model.graph.initializers["bias"]  # weights shared
    plan = plan_model(model, {"x": (3, 4)}, check=True)
    assert plan.sizes == {v: 48 for v in planned_values(fixed.graph)}
    with pytest.raises(InputError, match="does not fit"):
        specialize(model, {"x": (3, 5)})
    with pytest.raises(InputError, match="missing"):
        specialize(model, {})


# --------------------------------------------------------------------------------------------
# Real models
# --------------------------------------------------------------------------------------------


def report(name: str, plan: MemoryPlan) -> None:
    print(f"\n{name}: {plan.describe()} [arena {plan.arena_bytes} B, lower bound {plan.lower_bound_bytes} B, "
          f"naive {plan.naive_bytes} B]")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_light_resnet50(precision):
    model = aot_compile(LIGHT_RESNET50, AotOptions(precision=precision)).model
    plans = {views: plan_model(model, {"gpu_0/data_0": (1, 3, 224, 224)}, allow_views=views) for views in (False, True)}
    graph = specialize(model, {"gpu_0/data_0": (1, 3, 224, 224)}).graph
    for views, plan in plans.items():
        check_plan(plan, graph)
        report(f"light ResNet-50 {precision} views={views}", plan)
        assert plan.arena_bytes * 5 < plan.naive_bytes
        assert plan.arena_bytes <= 1.1 * plan.lower_bound_bytes
    fp32_activation = 1 * 64 * 112 * 112 * 4  # the first conv's output, the largest value
    assert plans[False].sizes[graph.nodes[0].outputs[0]] == fp32_activation // (2 if precision == "fp16" else 1)


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.models import zoo

    path = tmp_path_factory.mktemp("plan") / "bert.onnx"
    zoo.export("bert", path)
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bert_batch1_seq128(bert_onnx, precision):
    model = aot_compile(bert_onnx, AotOptions(precision=precision)).model
    shapes = {name: (1, 128) for name in ["input_ids", "attention_mask", "token_type_ids"]}
    graph = specialize(model, shapes).graph
    assert graph.types["last_hidden_state"].shape == (1, 128, 128)
    spans = lifetimes(graph)
    assert all(spans[o][1] == len(graph.nodes) for o in graph.outputs)
    for views in (False, True):
        plan = plan_memory(graph, allow_views=views)
        check_plan(plan, graph)
        report(f"BERT (2 layers, hidden 128) b1 s128 {precision} views={views}", plan)
        assert plan.arena_bytes * 4 < plan.naive_bytes
        assert plan.arena_bytes <= 1.1 * plan.lower_bound_bytes
        assert bool(plan.aliases) == views
