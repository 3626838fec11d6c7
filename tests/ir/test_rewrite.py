"""Graph-editing helpers that passes rely on."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.errors import GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Node, TensorType
from rtxrt.ir.rewrite import (
    GraphIndex, NameGenerator, Replacements, bypass, constants, is_private, node_reads, outer_reads,
    remove_unread_producers, replace_uses, topological_sort, value_type,
)


def chain() -> Graph:
    return Graph(
        [Node("Relu", ["x"], ["a"], name="r"), Node("Neg", ["a"], ["b"], name="n"), Node("Add", ["a", "b"], ["y"], name="add")],
        ["x"], ["y"], initializers={"w": np.ones(2, np.float32)},
    )


def test_index_knows_producers_consumers_and_constants():
    index = GraphIndex(chain())
    assert index.producer["b"].name == "n"
    assert [n.name for n in index.consumers["a"]] == ["n", "add"]
    assert index.only_consumer("b").name == "add" and index.only_consumer("a") is None
    assert index.only_consumer("y") is None  # a graph output has an outside reader
    np.testing.assert_array_equal(index.constant("w"), [1, 1])
    assert index.constant("a") is None


def test_replace_uses_rewires_readers_and_keeps_output_names():
    graph = chain()
    replace_uses(graph, "b", "a")
    assert graph.nodes[2].inputs == ["a", "a"]
    replace_uses(graph, "y", "b")  # y is a graph output: b's producer takes the name y
    assert graph.nodes[1].outputs == ["y"] and graph.outputs == ["y"]


def test_replacing_an_output_by_an_input_is_refused():
    with pytest.raises(GraphError):
        replace_uses(chain(), "y", "x")


def test_topological_sort_restores_a_valid_order_and_detects_cycles():
    graph = chain()
    graph.nodes.reverse()
    topological_sort(graph)
    assert [n.name for n in graph.nodes] == ["r", "n", "add"]
    graph.nodes[0].inputs = ["y"]
    with pytest.raises(GraphError, match="cycle"):
        topological_sort(graph)


def test_fresh_names_never_clash():
    fresh = NameGenerator(chain())
    assert fresh("a") == "a_1" and fresh("a") == "a_2" and fresh("new") == "new"


def test_replace_uses_leaves_a_subgraph_value_of_the_same_name_alone():
    body = Graph([Node("Neg", ["x"], ["a"], name="inner"), Node("Relu", ["a"], ["out"], name="inner2")], [], ["out"])
    graph = Graph([Node("Relu", ["x"], ["a"], name="r"), Node("If", ["c"], ["y"], {"then_branch": body, "else_branch": body}),
                   Node("Add", ["a", "y"], ["z"], name="add")], ["x", "c"], ["z"])
    replace_uses(graph, "a", "x")
    assert graph.nodes[2].inputs == ["x", "y"]
    assert body.nodes[1].inputs == ["a"]  # the body's own "a" is another value


def test_an_initializer_that_is_also_an_input_is_not_a_constant():
    graph = chain()
    graph.inputs.append("w")
    assert GraphIndex(graph).constant("w") is None


def test_value_type_knows_initializers_that_inference_leaves_untyped():
    graph = chain()
    graph.types["a"] = TensorType(DType.FLOAT32, ("batch", 2))
    assert value_type(graph, "w") == TensorType(DType.FLOAT32, (2,))
    assert value_type(graph, "a").shape == ("batch", 2) and value_type(graph, "b") is None


def test_constants_leave_out_initializers_that_are_input_defaults():
    graph = chain()
    graph.initializers["d"] = np.zeros(1, np.float32)
    graph.inputs.append("d")
    assert list(constants(graph)) == ["w"]


def test_what_a_subgraph_reads_from_outside_counts_as_read_by_its_node():
    body = Graph([Node("Neg", ["a"], ["n"]), Node("Add", ["n", "k"], ["out"])], ["k"], ["out"])
    loop = Node("If", ["c"], ["y"], {"then_branch": body})
    assert outer_reads(body) == {"a"}
    assert node_reads(loop) == {"c", "a"}


def test_bypass_rewires_readers_to_the_source():
    graph = chain()
    assert bypass(graph, graph.nodes[1], "b", "a")
    assert [n.name for n in graph.nodes] == ["r", "add"] and graph.nodes[1].inputs == ["a", "a"]


def test_bypass_refuses_an_output_that_cannot_take_the_name_or_an_omitted_one():
    graph = Graph([Node("Identity", ["x"], ["y"], name="id")], ["x"], ["y"])
    assert not bypass(graph, graph.nodes[0], "y", "x")  # x stays the caller's input name
    assert not bypass(graph, graph.nodes[0], "", "x")
    assert len(graph.nodes) == 1


def test_unread_producers_are_swept_up_the_graph_and_shared_ones_stay():
    graph = Graph(
        [Node("Shape", ["x"], ["s"], name="shape"), Node("Neg", ["x"], ["n"], name="neg"),
         Node("Reshape", ["x", "s"], ["r"], name="reshape"), Node("Add", ["r", "n"], ["y"], name="add"),
         Node("Relu", ["n"], ["z"], name="relu")],
        ["x"], ["y", "z"])
    gone = [n for n in graph.nodes if n.name in ("reshape", "add")]
    graph.nodes = [n for n in graph.nodes if n not in gone]
    remove_unread_producers(graph, gone)
    assert [n.name for n in graph.nodes] == ["neg", "relu"]  # Shape fed only the Reshape; n is read on


def test_a_group_is_private_when_only_its_result_is_read_outside():
    graph = chain()
    index = GraphIndex(graph)
    assert is_private(index, graph.nodes, ["y"])
    assert not is_private(index, graph.nodes[:2], ["b"])  # a is read by the Add outside


def test_replacements_put_each_new_node_where_its_group_ended():
    graph = chain()
    r, n, add = graph.nodes
    todo = Replacements()
    todo.add([r, n], Node("Fused", ["x"], ["b"], name="fused"))
    assert todo.overlaps([n]) and not todo.overlaps([add])
    with pytest.raises(ValueError):
        todo.add([n, add], Node("Other", ["x"], ["y"]))
    todo.apply(graph)
    assert [node.name for node in graph.nodes] == ["fused", "add"]
