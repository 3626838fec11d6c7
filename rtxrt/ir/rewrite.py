"""Helpers for passes that rewrite graphs in place: who produces and reads a value, constant
values, replacing uses, removing nodes, fresh names, topological order."""
from __future__ import annotations

import heapq
import itertools
from typing import Iterable

import numpy as np

from ..errors import GraphError
from .graph import Graph, Node


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
                for name in _outer_reads(sub):
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
            return self.graph.initializers[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.domain == "":
            value = node.attrs.get("value")
            return value if isinstance(value, np.ndarray) else None
        return None


def _outer_reads(graph: Graph) -> set[str]:
    defined = set(graph.inputs) | set(graph.initializers)
    reads: set[str] = set()
    for node in graph.nodes:
        reads.update(n for n in node.inputs if n and n not in defined)
        for sub in node.subgraphs():
            reads.update(n for n in _outer_reads(sub) if n not in defined)
        defined.update(o for o in node.outputs if o)
    reads.update(o for o in graph.outputs if o not in defined)
    return reads


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Make every reader of ``old`` (nodes, nested subgraphs, graph outputs) read ``new``.
    A graph output keeps its name: the producer of ``new`` is renamed to it instead when
    ``new`` is not itself an input, initializer or output."""
    if old in graph.outputs:
        if new in graph.inputs or new in graph.initializers or new in graph.outputs:
            raise GraphError(f"cannot replace graph output {old!r} by {new!r}")
        _rename_value(graph, new, old)
        return
    _rename_reads(graph, old, new)


def _rename_reads(graph: Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        node.inputs = [new if n == old else n for n in node.inputs]
        for sub in node.subgraphs():
            if old not in sub.inputs and old not in sub.initializers:
                _rename_reads(sub, old, new)
                sub.outputs = [new if n == old else n for n in sub.outputs]


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


def topological_sort(graph: Graph) -> None:
    """Order nodes so that every value is defined before it is read; among ready nodes the
    original order is kept (Kahn's algorithm with a heap on the old position)."""
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    waiting: dict[int, int] = {}
    readers: dict[int, list[Node]] = {}
    for node in graph.nodes:
        deps = {id(producer[name]) for name in _needs(node) if name in producer} - {id(node)}
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


def _needs(node: Node) -> set[str]:
    needs = {n for n in node.inputs if n}
    for sub in node.subgraphs():
        needs |= _outer_reads(sub)
    return needs
