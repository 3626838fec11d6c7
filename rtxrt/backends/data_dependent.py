"""Data-dependent shapes split the model, not the plan's whole: a node whose output shape
depends on input values (NonZero, NonMaxSuppression, Unique, a Loop with a computed trip
count) cannot sit in a static plan, but everything that does not depend on it can.

``split_model`` cuts a model, at given input shapes, into ``before`` (every node that does not
read a data-dependent value: one static plan), ``cut`` (the nodes whose outputs first become
data-dependent: run on the host once their inputs are known) and ``after`` (the rest, a model
whose inputs include the cut's outputs: planned at the shapes the cut produced, and itself
split again if it holds more such nodes). Each part is an ordinary model, so each gets the
runtime's engines, generic shapes and cache like any other.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import GraphError
from ..ir.graph import Graph, Model, Node
from .memory_plan import node_reads, specialize


@dataclass
class Split:
    """Three models run in turn; ``before``/``after`` are None where that part has no node.
    Each part's outputs are what a later part or the caller reads."""

    before: Model | None
    cut: Model
    after: Model | None

    @property
    def cut_labels(self) -> list[str]:
        return [n.label for n in self.cut.graph.nodes]


def data_dependent_nodes(model: Model, shapes: Mapping[str, Sequence[int]]) -> list[Node]:
    """Where the model must be cut at ``shapes``: the nodes whose outputs have shapes no
    inference could make static, and the Ifs whose conditions are known only at run time,
    where every value they read has a static shape."""
    spec = specialize(model, shapes).graph
    static = {n for n, t in spec.types.items() if t is not None and t.is_static} | set(spec.initializers)
    branching = {n.outputs[0] for n in spec.nodes if is_runtime_if(n)}  # (an inlined If is gone)
    cut = []
    for node in model.graph.nodes:
        outputs = [o for o in node.outputs if o]
        if all(o in static for o in outputs) and not (outputs and outputs[0] in branching):
            continue
        if all(n in static for n in node_reads(node)):
            cut.append(node)
    return cut


def is_runtime_if(node: Node) -> bool:
    """An If still in a specialized model: its condition is known only at run time."""
    return node.op_type == "If" and not node.domain


def branch_model(model: Model, node: Node, taken: bool) -> Model:
    """The branch ``taken`` of If ``node`` as a model of its own: its inputs are the values
    it reads from around it, its outputs those it makes (an output that is a value from
    around it, the If's caller takes as is)."""
    graph = model.graph
    branch = node.attrs["then_branch" if taken else "else_branch"]
    scope = Graph(list(branch.nodes), [], list(branch.outputs), graph.types | branch.types,
                  graph.initializers | branch.initializers, name=branch.name, storage=graph.storage | branch.storage)
    part = _part(Model(scope, dict(model.opsets)), list(branch.nodes), [])
    if part is None:
        part = Model(Graph([], [], [], name=branch.name), dict(model.opsets))
    return part


def split_model(model: Model, shapes: Mapping[str, Sequence[int]]) -> Split:
    """``model`` cut at its data-dependent nodes at these input shapes (GraphError if it has
    none: then one static plan holds it)."""
    graph = model.graph
    cut = data_dependent_nodes(model, shapes)
    if not cut:
        raise GraphError("the model has no data-dependent node at these shapes; it needs no split")
    cut_ids = {id(n) for n in cut}
    tainted: set[str] = {o for n in cut for o in n.outputs if o}
    before, after = [], []
    for node in graph.nodes:
        if id(node) in cut_ids:
            continue
        if node_reads(node) & tainted:
            after.append(node)
            tainted.update(o for o in node.outputs if o)
        else:
            before.append(node)
    later = [n for part in (cut, after) for node in part for n in node_reads(node)]
    return Split(_part(model, before, later), _part(model, cut, [n for node in after for n in node_reads(node)]),
                 _part(model, after, []))


def _part(model: Model, nodes: list[Node], read_later: Sequence[str]) -> Model | None:
    """The model of ``nodes``: its inputs are the values they read that they do not make
    (the original inputs among them, or values an earlier part makes); its outputs are what
    they make that a later part (``read_later``) or the model's caller reads."""
    if not nodes:
        return None
    graph = model.graph
    made = [o for n in nodes for o in n.outputs if o]
    made_set = set(made)
    read = []
    for node in nodes:
        for name in sorted(node_reads(node)):
            if name not in made_set and name not in graph.initializers and name not in read:
                read.append(name)
    wanted = set(read_later) | set(graph.outputs)
    outputs = [o for o in made if o in wanted]
    inputs = [n for n in graph.inputs if n in read] + [n for n in read if n not in graph.inputs]
    initializers = {n: graph.initializers[n] for node in nodes for n in node_reads(node) if n in graph.initializers}
    types = {n: graph.types.get(n) for n in [*inputs, *outputs]}  # dims that depend on data stay unknown
    types.update({n: t for n, t in graph.types.items() if n in made_set and n not in types})
    part = Graph(list(nodes), inputs, outputs, {n: t for n, t in types.items() if t is not None}, initializers,
                 name=graph.name, storage={n: s for n, s in graph.storage.items()
                                           if n in made_set or n in initializers})  # inputs come logical
    return Model(part, dict(model.opsets), model.producer, dict(model.metadata))
