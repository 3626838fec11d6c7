"""An ``If`` whose condition is known when the plan is made (a comparison of shapes, a flag
in the weights) is replaced by the branch it takes, so the branch's nodes are planned like
any others (on the GPU, their shape arithmetic at plan time) instead of the If running on the
host as one opaque node."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..ir.graph import Graph, Model, Node


def inline_known_ifs(model: Model, known: Mapping[str, np.ndarray]) -> bool:
    """Replace, in place, each If of the main graph whose condition ``known`` holds by its
    taken branch; True if any was replaced."""
    graph = model.graph
    changed = False
    nodes: list[Node] = []
    for index, node in enumerate(graph.nodes):
        cond = known.get(node.inputs[0]) if node.op_type == "If" and not node.domain and node.inputs else None
        inlined = _inline(graph, node, index, cond) if cond is not None and np.size(cond) == 1 else None
        if inlined is None:
            nodes.append(node)
        else:
            nodes += inlined
            changed = True
    graph.nodes = nodes
    return changed


def _inline(graph: Graph, node: Node, index: int, cond: np.ndarray) -> list[Node] | None:
    """The taken branch's nodes, renamed apart from the main graph, then one Identity per
    output; None where a nested subgraph reads a value the branch defines (left to the If)."""
    branch = node.attrs["then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"]
    if not isinstance(branch, Graph) or branch.inputs:
        return None
    prefix = f"{node.name or f'If_{index}'}/"
    defined = set(branch.initializers) | {o for n in branch.nodes for o in n.outputs if o}
    for inner in branch.nodes:
        for sub in inner.subgraphs():
            if _outer_reads(sub) & defined:
                return None
    rename = {name: prefix + name for name in defined}
    for old, new in rename.items():
        if old in branch.initializers:
            graph.initializers[new] = branch.initializers[old]
        if old in branch.types:
            graph.types[new] = branch.types[old]
        if old in branch.storage:
            graph.storage[new] = branch.storage[old]
    nodes = [Node(n.op_type, [rename.get(i, i) for i in n.inputs], [rename.get(o, o) for o in n.outputs],
                  dict(n.attrs), prefix + n.name if n.name else "", n.domain, n.precision) for n in branch.nodes]
    for out, inner in zip(node.outputs, branch.outputs):
        if out:
            nodes.append(Node("Identity", [rename.get(inner, inner)], [out], name=f"{prefix}output {out}"))
    return nodes


def _outer_reads(graph: Graph) -> set[str]:
    """Names a subgraph (and those nested in it) reads from the scopes around it."""
    defined, used = set(), set()
    for g in graph.graphs():
        defined.update(g.inputs, g.initializers)
        for n in g.nodes:
            defined.update(n.outputs)
            used.update(i for i in n.inputs if i)
        used.update(g.outputs)
    return used - defined
