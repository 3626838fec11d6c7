"""Base class of reference kernels: one small ``OpRun`` subclass per operator.

A subclass is found by its operator name (the class name, or ``op_type`` when the name is
not a valid class name) and registers itself in ``KERNELS`` when its module (one family of
operators per module of rtxrt.backends.reference.ops) is imported. ``run`` receives
the node's inputs as numpy arrays (``None`` for omitted optional inputs) and returns one
array or a tuple of arrays, one per output.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from ...errors import ExecutionError
from ...host_memory import physical_memory
from ...ir.graph import Graph, Node
from ...ir.ops.registry import SCHEMA_DEFAULT, attribute_default
from ...op_table import OpTable

# Runs a subgraph with given feeds and an enclosing scope, and returns its outputs.
SubgraphRunner = Callable[[Graph, dict[str, Any], Mapping[str, Any]], list[Any]]


# The largest array a kernel may create when its size comes from tensor values or attributes
# (shapes, repeats, pads, counts), which a model may set to anything. Numpy would try, and on
# an overcommitting OS an array larger than memory can "succeed" until its pages are touched.
MAX_TENSOR_BYTES = physical_memory()  # None (Windows): allocations fail at once there


def refuse_over_limit(nbytes: int, what: str) -> None:
    """Raise ExecutionError when ``what`` (a sentence's subject, naming the node) would take
    more than MAX_TENSOR_BYTES."""
    if MAX_TENSOR_BYTES is not None and nbytes > MAX_TENSOR_BYTES:
        raise ExecutionError(f"{what} would take {nbytes:,} bytes, more than the {MAX_TENSOR_BYTES:,} bytes "
                             "of this machine's memory")

KERNELS: OpTable[type["OpRun"]] = OpTable("reference kernel", __name__.rpartition(".")[0] + ".ops")


class OpRun:
    op_type: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    # Values visible where the node runs; the executor sets it before ``run`` for nodes
    # with subgraphs, which may read values of the enclosing graphs.
    scope: Mapping[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return  # shared bases, not operators
        if "op_type" not in cls.__dict__:
            cls.op_type = cls.__name__
        KERNELS.add(cls.op_type, cls, cls.domain)

    def __init__(self, node: Node, opset: int, run_subgraph: SubgraphRunner):
        self.node = node
        self.opset = opset
        self._run_subgraph = run_subgraph
        self.has_subgraphs = any(True for _ in node.subgraphs())

    def attr(self, key: str, default: Any = SCHEMA_DEFAULT) -> Any:
        """The node's attribute ``key``; left out, ``default`` if given, else the default its
        operator's schema declares (None where it has none)."""
        if key in self.node.attrs:
            return self.node.attrs[key]
        return attribute_default(self.node, key, self.opset) if default is SCHEMA_DEFAULT else default

    def check_size(self, shape: Sequence[int], dtype: np.dtype | type, what: str = "output") -> None:
        """Refuse, naming the node, to create an array of ``shape`` larger than MAX_TENSOR_BYTES."""
        dims = tuple(int(d) for d in shape)
        nbytes = math.prod(max(d, 0) for d in dims) * np.dtype(dtype).itemsize  # numpy refuses negative dims
        self.check_bytes(nbytes, f"its {what} of shape {dims}")

    def check_bytes(self, nbytes: int, what: str) -> None:
        refuse_over_limit(nbytes, f"{self.node.label}: {what}")

    def run_subgraph(self, graph: Graph, feeds: dict[str, Any], outer: Mapping[str, Any] | None = None) -> list[Any]:
        """Run a subgraph attribute with ``feeds``; it sees ``outer`` (default: this node's scope)."""
        return self._run_subgraph(graph, feeds, self.scope if outer is None else outer)

    def run(self, *inputs: np.ndarray | None) -> np.ndarray | tuple[np.ndarray, ...]:
        raise NotImplementedError


def find_kernel(op_type: str, domain: str = "") -> type[OpRun] | None:
    return KERNELS.get(op_type, domain)


def all_kernels() -> dict[tuple[str, str], type[OpRun]]:
    return dict(KERNELS.entries())
