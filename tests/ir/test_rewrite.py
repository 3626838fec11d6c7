"""Graph-editing helpers that passes rely on."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.errors import GraphError
from rtxrt.ir.graph import Graph, Node
from rtxrt.ir.rewrite import GraphIndex, NameGenerator, replace_uses, topological_sort


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
