"""The IR: plain typed data classes for models, graphs, nodes and tensor types.

Edges are value names, as in ONNX: a node reads the values named in ``inputs`` and defines
the ones named in ``outputs``. An empty name stands for an omitted optional input or output.
Every value a graph defines or reads has an entry in ``Graph.types`` once inference has run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Union

import numpy as np

from .dtypes import DType

# A dimension is a size (int), a named symbol shared across tensors (str, e.g. "batch"),
# or unknown (None).
Dim = Union[int, str, None]
Shape = tuple[Dim, ...]
MAX_DIM = (1 << 63) - 1  # sizes are int64, as in ONNX


@dataclass(frozen=True)
class TensorType:
    """Element type and shape of a tensor; ``shape is None`` means the rank is unknown."""

    dtype: DType
    shape: Shape | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype.short}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.short}[{dims}]"

    @staticmethod
    def of(array: np.ndarray) -> "TensorType":
        return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))


@dataclass(frozen=True)
class NodePrecision:
    """The precision a backend should compute a node in: ``compute`` is the math mode of
    multiplies ("fp32", "tf32", "fp16", "bf16", later "int8"/"fp8"), ``accumulate`` the type of
    sums, reductions and statistics ("fp32" or "fp16")."""

    compute: str
    accumulate: str = "fp32"


@dataclass(frozen=True)
class Storage:
    """How a backend stores a value on the device. The logical type stays ``Graph.types``'s:
    annotations never change what the graph computes, only how a backend may compute it.

    ``layout`` is "" (as the logical shape says) or "NHWC" (a logical N,C,H,W... tensor kept
    channels-last in memory). ``scale``/``zero_point`` name the tensors of a quantized
    (int8/fp8) storage type."""

    dtype: DType
    layout: str = ""
    scale: str = ""
    zero_point: str = ""


@dataclass
class Node:
    """One operator application. ``attrs`` holds plain Python values: int, float, str,
    lists of those, numpy arrays (tensor attributes) or Graphs (subgraph attributes)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    precision: NodePrecision | None = None

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    @property
    def label(self) -> str:
        """How error messages name this node."""
        return f"{self.op_type} node {self.name!r}" if self.name else f"{self.op_type} node"

    def subgraphs(self) -> Iterator["Graph"]:
        """Graph-valued attributes, including those in lists of graphs."""
        for value in self.attrs.values():
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, Graph):
                    yield item


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    types: dict[str, TensorType] = field(default_factory=dict)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "main"
    # Device storage of values whose storage differs from their logical type (see Storage).
    storage: dict[str, Storage] = field(default_factory=dict)
    # Initializers a weightless file leaves out (name -> type); refit attaches them.
    stripped: dict[str, TensorType] = field(default_factory=dict)

    def producers(self) -> dict[str, Node]:
        """Map from value name to the node that defines it."""
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Map from value name to the nodes (of this graph) that read it."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    users.setdefault(name, []).append(node)
        return users

    def walk(self) -> Iterator[Node]:
        """Every node, including those of nested subgraphs."""
        for node in self.nodes:
            yield node
            for sub in node.subgraphs():
                yield from sub.walk()

    def outer_reads(self) -> set[str]:
        """Names this graph (as a subgraph, with those nested in it) reads from the scopes
        around it."""
        defined: set[str] = set()
        used: set[str] = set()
        for g in self.graphs():
            defined.update(g.inputs, g.initializers)
            for node in g.nodes:
                defined.update(node.outputs)
                used.update(n for n in node.inputs if n)
            used.update(g.outputs)
        return used - defined

    def graphs(self) -> Iterator["Graph"]:
        """This graph and every graph nested in it."""
        yield self
        for node in self.nodes:
            for sub in node.subgraphs():
                yield from sub.graphs()

    def weight_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.initializers.values())


@dataclass
class Model:
    graph: Graph
    # Operator set versions by domain ("" is the default ONNX domain).
    opsets: dict[str, int] = field(default_factory=lambda: {"": 21})
    producer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        return self.opsets.get("", 0)
