"""The project's modules import each other one way: no module reaches back into one that
imports it, at module level or inside a function (the import graph has no cycles)."""
from __future__ import annotations

import sys

from tests.architecture.imports import cycles, import_graph


def test_the_import_graph_has_no_cycles():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # rtxrt.runtime.session imports the JIT driver inside its methods, relatively
    assert "rtxrt.backends.cuda.jit" in graph["rtxrt.runtime.session"]
    assert "rtxrt.ir.graph" in graph["rtxrt.ir.ops.registry"]
