"""Graph inputs that are parameters rather than data: the axes of a reduction, a Resize's
scales, a Slice's starts, a Pad's pads, given as inputs instead of constants. A GPU kernel
needs them when the plan is made (they decide its shape and its code), so a plan that does
not know them runs their nodes on the host (NeedsValue). The runtime reads such inputs on the
host at each run instead (a few numbers) and plans the model per value, as a model of its own
whose parameters are constants (``with_values``), cached by value like any engine.

What counts: every graph input a needed value is computed from, as long as each is small
(MAX_PARAMETER_ELEMENTS, a static shape). The walk stops at Shape and Size, whose outputs
follow from shapes alone, known when the plan is made. A needed value computed from data
(a tensor's contents) is not a parameter: its node stays on the host.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from ..ir.graph import Model
from ..ir.rewrite import node_reads

MAX_PARAMETER_ELEMENTS = 1024
_FROM_SHAPES = ("Shape", "Size")  # outputs known from the input shapes alone


def parameter_inputs(model: Model, needed: Iterable[str]) -> list[str]:
    """The graph inputs the values ``needed`` are computed from, sorted; [] where one of them
    is not a parameter (no static shape, or more than MAX_PARAMETER_ELEMENTS elements)."""
    graph = model.graph
    producers = graph.producers()
    data = set(graph.inputs) - set(graph.initializers)
    found: set[str] = set()
    seen: set[str] = set()
    todo = [n for n in needed if n]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in data:
            found.add(name)
            continue
        node = producers.get(name)
        if node is not None and not (node.domain == "" and node.op_type in _FROM_SHAPES):
            todo += [n for n in node_reads(node) if n]
    for name in found:
        t = graph.types.get(name)
        if t is None or not t.is_static or math.prod(int(d) for d in t.shape) > MAX_PARAMETER_ELEMENTS:
            return []
    return sorted(found)


def with_values(model: Model, values: Mapping[str, np.ndarray]) -> Model:
    """``model`` with the inputs ``values`` names turned into constants of those values
    (nodes and other weights shared, not copied)."""
    graph = model.graph
    initializers = dict(graph.initializers)
    for name, value in values.items():
        initializers[name] = np.require(value, graph.types[name].dtype.numpy, "C")  # (ascontiguousarray makes a scalar 1-D)
    inputs = [n for n in graph.inputs if n not in values]
    return replace(model, graph=replace(graph, inputs=inputs, initializers=initializers, types=dict(graph.types)))
