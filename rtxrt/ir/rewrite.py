"""Helpers for passes that rewrite graphs in place: who produces and reads a value, types and
constant values, replacing uses, bypassing and removing nodes, replacing groups of nodes, fresh
names, topological order."""
from __future__ import annotations

import heapq
import itertools
from typing import Iterable, Sequence

import numpy as np

from ..errors import GraphError
from .graph import Graph, Node, TensorType


class GraphIndex:
    """Producers and consumers of every value of one graph (not its subgraphs), plus the
    values subgraphs read from it. Rebuild it after editing the graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producer: dict[str, Node] = {}
        self.consumers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for name in node.outputs:
                if name:
                    self.producer[name] = node
            for name in node.inputs:
                if name:
                    self.consumers.setdefault(name, []).append(node)
            for sub in node.subgraphs():  # a subgraph reading an outer value is a use of it
                for name in outer_reads(sub):
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = set(graph.outputs)

    def uses(self, name: str) -> int:
        """How many places read ``name``: node inputs plus graph outputs."""
        return len(self.consumers.get(name, [])) + (name in self.outputs)

    def only_consumer(self, name: str) -> Node | None:
        """The single node reading ``name`` when nothing else (no graph output) does."""
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.outputs and users[0].inputs.count(name) == 1:
            return users[0]
        return None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or the output of a Constant."""
        if name in self.graph.initializers:
            # An initializer that is also a graph input is only a default a caller may override.
            return None if name in self.graph.inputs else self.graph.initializers[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.domain == "":
            value = node.attrs.get("value")
            return value if isinstance(value, np.ndarray) else None
        return None


def value_type(graph: Graph, name: str) -> TensorType | None:
    """The type of value ``name``: inferred, or an initializer's (inference leaves those out)."""
    if name in graph.initializers:
        return TensorType.of(graph.initializers[name])
    return graph.types.get(name)


def constants(graph: Graph) -> dict[str, np.ndarray]:
    """The initializers that are constants: one that is also a graph input is only a default
    the caller may override."""
    inputs = set(graph.inputs)
    return {name: array for name, array in graph.initializers.items() if name not in inputs}


def outer_reads(graph: Graph) -> set[str]:
    """The values a (sub)graph reads from the graphs around it: read, and not defined in it."""
    defined = set(graph.inputs) | set(graph.initializers)
    reads: set[str] = set()
    for node in graph.nodes:
        reads.update(n for n in node.inputs if n and n not in defined)
        for sub in node.subgraphs():
            reads.update(n for n in outer_reads(sub) if n not in defined)
        defined.update(o for o in node.outputs if o)
    reads.update(o for o in graph.outputs if o not in defined)
    return reads


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Make every reader of ``old`` (nodes, nested subgraphs, graph outputs) read ``new``.
    A graph output keeps its name: the producer of ``new`` is renamed to it instead when
    ``new`` is not itself an input, initializer or output."""
    if old in graph.outputs:
        if not _can_take_over(graph, old, new):
            raise GraphError(f"cannot replace graph output {old!r} by {new!r}")
        _rename_value(graph, new, old)
        return
    _rename_reads(graph, old, new)


def _can_take_over(graph: Graph, output: str, new: str) -> bool:
    """Whether graph output ``output`` can give its name to ``new``'s producer: ``new`` is
    no input, initializer or output, whose names callers and other readers rely on."""
    return not (new in graph.inputs or new in graph.initializers or new in graph.outputs)


def _rename_reads(graph: Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        node.inputs = [new if n == old else n for n in node.inputs]
        for sub in node.subgraphs():
            if old not in _defined_in(sub):  # else the subgraph's own value shadows the outer one
                _rename_reads(sub, old, new)
                sub.outputs = [new if n == old else n for n in sub.outputs]


def _defined_in(graph: Graph) -> set[str]:
    defined = set(graph.inputs) | set(graph.initializers)
    for node in graph.nodes:
        defined.update(o for o in node.outputs if o)
    return defined


def _rename_value(graph: Graph, old: str, new: str) -> None:
    """Rename a value everywhere in ``graph``: its definition and every read."""
    for node in graph.nodes:
        node.outputs = [new if n == old else n for n in node.outputs]
    _rename_reads(graph, old, new)
    if old in graph.types:
        graph.types[new] = graph.types.pop(old)
    if old in graph.storage:
        graph.storage[new] = graph.storage.pop(old)


def remove_nodes(graph: Graph, doomed: Iterable[Node]) -> None:
    ids = {id(n) for n in doomed}
    graph.nodes = [n for n in graph.nodes if id(n) not in ids]


def bypass(graph: Graph, node: Node, output: str, source: str) -> bool:
    """Remove ``node``, whose ``output`` equals ``source``: readers of ``output`` read ``source``.
    Refused (False) when ``output`` is a graph output that cannot take over ``source``'s name,
    or is an omitted output (the node is dead code then, not a no-op)."""
    if not output or (output in graph.outputs and not _can_take_over(graph, output, source)):
        return False
    replace_uses(graph, output, source)
    remove_nodes(graph, [node])
    return True


def remove_unread_producers(graph: Graph, removed: Iterable[Node]) -> None:
    """After ``removed`` left the graph: remove the producers of what they read once nothing
    reads them any more, and so on up the graph (the Transposes, Reshapes and shape arithmetic
    that fed only what a fusion replaced)."""
    index = GraphIndex(graph)
    uses: dict[str, int] = {}
    dead: dict[int, Node] = {}
    frontier = list(removed)
    while frontier:
        for name in frontier.pop().inputs:
            node = index.producer.get(name)
            if node is None or id(node) in dead or any(uses.setdefault(o, index.uses(o)) for o in node.outputs if o):
                continue
            dead[id(node)] = node
            frontier.append(node)
            for read in filter(None, node.inputs):
                uses[read] = uses.setdefault(read, index.uses(read)) - 1
    remove_nodes(graph, dead.values())


def is_private(index: GraphIndex, group: Sequence[Node], results: Iterable[str]) -> bool:
    """Whether every value the group defines, except ``results``, is read only inside it."""
    members = {id(n) for n in group}
    kept = set(results)
    for node in group:
        for name in node.outputs:
            if not name or name in kept:
                continue
            if name in index.outputs or any(id(c) not in members for c in index.consumers.get(name, [])):
                return False
    return True


class Replacements:
    """Disjoint groups of nodes, each to become one new node, applied together: each new
    node takes the place of the last node of its group, so a group whose nodes all lead to
    its result keeps the graph in topological order."""

    def __init__(self) -> None:
        self._claimed: set[int] = set()
        self._groups: list[tuple[list[Node], Node]] = []

    def overlaps(self, group: Sequence[Node]) -> bool:
        """Whether a node of ``group`` already belongs to a recorded replacement."""
        return any(id(n) in self._claimed for n in group)

    def add(self, group: Sequence[Node], new: Node) -> None:
        if self.overlaps(group):
            raise ValueError(f"{new.label} would replace nodes another replacement takes")
        self._claimed.update(id(n) for n in group)
        self._groups.append((list(group), new))

    def apply(self, graph: Graph) -> None:
        position = {id(n): i for i, n in enumerate(graph.nodes)}
        new_at = {}
        for group, new in self._groups:
            new_at[max(position[id(n)] for n in group)] = new
        nodes = []
        for i, node in enumerate(graph.nodes):
            if i in new_at:
                nodes.append(new_at[i])
            elif id(node) not in self._claimed:
                nodes.append(node)
        graph.nodes = nodes


def prune_types(graph: Graph) -> None:
    """Forget types, storage and initializers of values nothing defines or reads any more."""
    live = set(graph.inputs) | set(graph.outputs)
    for node in graph.walk():
        live.update(n for n in node.inputs if n)
        live.update(n for n in node.outputs if n)
    for sub in _all_subgraphs(graph):
        live.update(sub.inputs)
        live.update(sub.outputs)
    graph.initializers = {k: v for k, v in graph.initializers.items() if k in live}
    graph.types = {k: v for k, v in graph.types.items() if k in live}
    graph.storage = {k: v for k, v in graph.storage.items() if k in live}


def _all_subgraphs(graph: Graph):
    for node in graph.walk():
        yield from node.subgraphs()


class NameGenerator:
    """Fresh value and node names that clash with nothing in the graph (subgraphs included)."""

    def __init__(self, graph: Graph):
        self.taken: set[str] = set(graph.inputs) | set(graph.outputs) | set(graph.initializers)
        for node in graph.walk():
            self.taken.update(node.inputs)
            self.taken.update(node.outputs)
            self.taken.add(node.name)

    def __call__(self, base: str) -> str:
        if base not in self.taken:
            self.taken.add(base)
            return base
        for i in itertools.count(1):
            name = f"{base}_{i}"
            if name not in self.taken:
                self.taken.add(name)
                return name
        raise AssertionError("unreachable")


def add_initializer(graph: Graph, names: NameGenerator, base: str, array: np.ndarray) -> str:
    """A new initializer holding ``array``, named fresh after ``base``; returns its name."""
    name = names(base)
    graph.initializers[name] = array
    return name


def topological_sort(graph: Graph) -> None:
    """Order nodes so that every value is defined before it is read; among ready nodes the
    original order is kept (Kahn's algorithm with a heap on the old position)."""
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    waiting: dict[int, int] = {}
    readers: dict[int, list[Node]] = {}
    for node in graph.nodes:
        deps = {id(producer[name]) for name in node_reads(node) if name in producer} - {id(node)}
        waiting[id(node)] = len(deps)
        for dep in deps:
            readers.setdefault(dep, []).append(node)
    ready = [(position[id(n)], n) for n in graph.nodes if waiting[id(n)] == 0]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for reader in readers.get(id(node), []):
            waiting[id(reader)] -= 1
            if waiting[id(reader)] == 0:
                heapq.heappush(ready, (position[id(reader)], reader))
    if len(ordered) != len(graph.nodes):
        stuck = next(n for n in graph.nodes if waiting[id(n)] > 0)
        raise GraphError(f"graph {graph.name!r} has a cycle through {stuck.label}")
    graph.nodes = ordered


def node_reads(node: Node) -> set[str]:
    """Every value ``node`` reads: its inputs and what its subgraphs read from outside them."""
    needs = {n for n in node.inputs if n}
    for sub in node.subgraphs():
        needs |= outer_reads(sub)
    return needs
