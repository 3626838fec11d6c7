"""Shape-subgraph folding: PyTorch exports compute shapes at run time (Shape → Gather →
Unsqueeze → Concat → Reshape, Shape → Slice, ConstantOfShape, Equal/Where over shapes, Range).
Every such value that the inferred types already decide becomes an initializer.

The values come from the symbolic shape analysis (symbolic_shapes.py): small integer vectors
evaluated element by element, an element being a size, a symbol (a dim such as "batch", or a
fresh name for a "?" dim) or unknown.

With dynamic batch and sequence dims a value is often only partly known. What does not depend
on the symbols still folds (the Gather of a static dim of a Shape); a Reshape whose target is
known up to dims it copies from its input gets a constant target (0 copies an input dim, one
-1 takes the rest); values that provably hold the same numbers are merged, and an Expand or
Reshape that provably keeps its input's shape is removed. Constant folding, which runs next in
the pipeline, finishes the chains (ConstantOfShape, Range, Expand of now-constant inputs).
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import NameGenerator, bypass, remove_nodes, replace_uses
from ..options import AotOptions
from ..pass_result import PassResult
from .constant_folding import is_constant_node
from .symbolic_shapes import Partial, ShapeAnalysis


def fold_shape_subgraphs(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    shapes = ShapeAnalysis(model, options).run()
    _constant_reshape_targets(graph, shapes.reshape_targets)
    if shapes.reshape_targets:
        result.add("made Reshape target constant", len(shapes.reshape_targets))
    folded = [n for n in graph.nodes if _fully_known(n, shapes.values)]
    remove_nodes(graph, folded)
    for node in folded:
        for name in node.outputs:
            graph.initializers[name] = shapes.values[name].array()
    if folded:
        result.add("folded shape computation", len(folded))
    merged = _merge_equal_values(graph, shapes.values)
    if merged:
        result.add("merged equal shape values", merged)
    gone = {id(n) for n in folded}
    for node in shapes.keeps_shape:
        if id(node) not in gone and bypass(graph, node, node.outputs[0], node.inputs[0]):
            result.add(f"removed {node.op_type} that keeps the shape")
    return result


def _constant_reshape_targets(graph: Graph, targets: list[tuple[Node, np.ndarray]]) -> None:
    """Give each Reshape its constant target, as a new initializer."""
    fresh = NameGenerator(graph)
    for node, target in targets:
        name = fresh(f"{node.name or node.outputs[0]}_shape")
        graph.initializers[name] = target
        node.inputs[1] = name


def _merge_equal_values(graph: Graph, values: dict[str, Partial]) -> int:
    """Values with the same partial value hold the same numbers at run time (Shape(x)[1] and
    Shape(y)[1] when both dims are "sequence"): readers of later ones read the first."""
    first: dict[tuple, str] = {}
    merged = 0
    for node in list(graph.nodes):
        for name in node.outputs:
            p = values.get(name)
            if p is None or p.known or None in p.elems or name in graph.outputs:
                continue
            kept = first.setdefault((p.elems, p.dtype, p.scalar), name)
            if kept != name:
                replace_uses(graph, name, kept)
                merged += 1
    return merged


def _fully_known(node: Node, values: dict[str, Partial]) -> bool:
    outputs = [name for name in node.outputs if name]
    return bool(outputs) and not is_constant_node(node) and all(n in values and values[n].known for n in outputs)
