"""Running a model cut at its data-dependent nodes (backends/data_dependent.py): the part
before the cut and the part after it each on a session of their own (GPU engines, generic
shapes, the runtime cache), the cut itself on the host with the reference backend. Only the
values the cut reads go to the host and only its outputs come back."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..backends.data_dependent import Split, branch_model, is_runtime_if
from ..backends.reference.executor import ReferenceExecutor
from ..ir.graph import Model


class SplitRun:
    """``session_for(model)``: a session for one part (the caller's options); ``upload``:
    a host array as the parts take it (a CuPy array by default)."""

    def __init__(self, split: Split, session_for: Callable[[Model], Any],
                 upload: Callable[[np.ndarray], Any] | None = None):
        self.split = split
        upload = upload or _to_cupy
        self.before = session_for(split.before) if split.before is not None else None
        nodes = split.cut.graph.nodes
        self.cut = Branches(split.cut, session_for) if len(nodes) == 1 and is_runtime_if(nodes[0]) \
            else HostCut(split.cut, upload)
        self.after = session_for(split.after) if split.after is not None else None

    def sessions(self) -> list[Any]:
        """The parts' sessions: before, after, and the branches made so far."""
        return [part for part in (self.before, self.after, *self.cut.sessions()) if part is not None]

    @property
    def host_nodes(self) -> list[str]:
        """Labels of every node run on the host: the cut's (none for an If, which only reads
        its condition), then those the parts' last runs ran there."""
        labels = list(self.cut.host_nodes)
        for part in self.sessions():
            labels += [n for n in part.stats.get("host_nodes", []) if n not in labels]
        return labels

    def run(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """``arrays``: the model's inputs as the parts take them (CuPy arrays); returns every
        value the parts make that the caller may read (the model's outputs among them)."""
        values = dict(arrays)
        if self.before is not None:
            values.update(_run(self.before, values))
        cut = self.split.cut.graph
        values.update(self.cut.run({n: values[n] for n in cut.inputs if n not in cut.initializers}))
        if self.after is not None:
            values.update(_run(self.after, values))
        return values


class HostCut:
    """Data-dependent nodes, run on the host: their inputs come down, their outputs go up."""

    def __init__(self, cut: Model, upload: Callable[[np.ndarray], Any]):
        self.model, self.upload = cut, upload
        self.executor = ReferenceExecutor(cut)
        self.host_nodes = [n.label for n in cut.graph.nodes]

    def sessions(self) -> list[Any]:
        return []

    def run(self, values: Mapping[str, Any]) -> dict[str, Any]:
        host = self.executor.run({n: to_host(v) for n, v in values.items()})
        return {n: self.upload(host[n]) for n in self.model.graph.outputs}


class Branches:
    """An If whose condition is known only at run time: the host reads the condition (one
    scalar) and the branch it picks runs as a model of its own (a session per branch, made
    when first taken)."""

    def __init__(self, cut: Model, session_for: Callable[[Model], Any]):
        self.model, self.session_for = cut, session_for
        self.node = cut.graph.nodes[0]
        self.host_nodes: list[str] = []
        self._parts: dict[bool, tuple[Model, Any]] = {}

    def sessions(self) -> list[Any]:
        return [session for _, session in self._parts.values() if session is not None]

    def run(self, values: Mapping[str, Any]) -> dict[str, Any]:
        taken = bool(to_host(values[self.node.inputs[0]]).reshape(-1)[0])
        if taken not in self._parts:
            part = branch_model(self.model, self.node, taken)
            self._parts[taken] = (part, self.session_for(part) if part.graph.nodes else None)
        part, session = self._parts[taken]
        made = _run(session, values) if session is not None else {}
        branch = self.node.attrs["then_branch" if taken else "else_branch"]
        return {out: made[inner] if inner in made else values[inner]  # an output from around the If
                for out, inner in zip(self.node.outputs, branch.outputs) if out}


def _run(session: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    graph = session.model.graph
    feeds = {n: values[n] for n in graph.inputs if n not in graph.initializers}
    return dict(zip(graph.outputs, session.run(None, feeds)))


def to_host(value: Any) -> np.ndarray:
    """``value`` (numpy, CuPy, or anything numpy takes) as a numpy array."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        return value.get()
    return np.asarray(value)


def _to_cupy(array: np.ndarray) -> Any:
    import cupy

    return cupy.asarray(array)
