"""fuse_elementwise: the elementwise and broadcasting ops left after the other fusions →
rtxrt::Elementwise nodes, each an expression DAG the JIT compiles into one kernel.

A group grows from its result up through the producers of its inputs, latest first. A
producer joins when every reader of its value is already in the group (a value read
elsewhere ends the group there: it becomes the result of another group, so every group has
one output and fused groups never form a cycle) and the group then reads at most
``MAX_INPUTS`` tensors. One-element constants become initializers of the body rather than
inputs. Ops on integer tensors of rank 0 or 1 (constants aside) are shape arithmetic, left
outside for shape folding and the host. QuantizeLinear and DequantizeLinear join only per
tensor (a one-element scale and zero point): a per-axis or blocked scale does not broadcast as
a body's operands do (alone, the GPU generator lays it out). A group of one op is left as it is.
"""
from __future__ import annotations

import dataclasses
import heapq
import math

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Graph, Model, Node, TensorType
from ...ir.ops import elementwise_ops
from ...ir.rewrite import GraphIndex, NameGenerator, Replacements, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .patterns import fused_name

MAX_INPUTS = 8
QUANTIZATION = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Element types a generated kernel handles (not strings, complex, float4 or float8e8m0; float8
# and the sub-byte integers only in the ops that take them: Cast, Q/DQ, and IsNaN, IsInf for float8).
KERNEL_DTYPES = frozenset({
    DType.BOOL, DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
    DType.UINT32, DType.UINT64, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64,
    DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ,
    DType.INT4, DType.UINT4, DType.INT2, DType.UINT2,
})


def fuse_elementwise(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    index = GraphIndex(graph)
    names = NameGenerator(graph)
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    todo = Replacements()
    result = PassResult()
    for root in reversed(graph.nodes):  # results first: a group grows towards its inputs
        if todo.overlaps([root]) or not _fusible(graph, index, root):
            continue
        group = _grow(graph, index, position, root)
        if len(group) < 2:
            continue
        node = _fused_node(graph, index, names, group)
        if node.inputs:  # all-constant groups are constant folding's
            todo.add(group, node)
            result.add(f"Elementwise ({len(group)} ops)")
    todo.apply(graph)
    return result


def _fusible(graph: Graph, index: GraphIndex, node: Node) -> bool:
    if node.domain or node.op_type not in elementwise_ops() or len(node.outputs) != 1 or not node.outputs[0]:
        return False
    if node.op_type in QUANTIZATION and not _per_tensor(graph, node):
        return False
    tensors = [name for name in node.inputs if name and _inlined(index, name) is None] + node.outputs
    types = [value_type(graph, name) for name in tensors]
    return all(t is not None and t.dtype in KERNEL_DTYPES and not _shape_arithmetic(t) for t in types)


def _per_tensor(graph: Graph, node: Node) -> bool:
    """A QuantizeLinear/DequantizeLinear with one-element scale and zero point, all of whose
    types (inlined constants included: a float4e2m1 zero point would be) a kernel handles."""
    types = [value_type(graph, name) if name else None for name in node.inputs]
    if any(name and (t is None or t.dtype not in KERNEL_DTYPES) for name, t in zip(node.inputs, types)):
        return False
    params = [t for t in types[1:3] if t is not None]
    return all(t.is_static and math.prod(t.shape) == 1 for t in params)


def _shape_arithmetic(t: TensorType) -> bool:
    return t.dtype.is_integer and (t.rank is None or t.rank <= 1)


def _grow(graph: Graph, index: GraphIndex, position: dict[int, int], root: Node) -> list[Node]:
    """The group ending at ``root``, in graph order. Producers are tried from the latest
    back, so every reader of a value that could join is already in when it is tried."""
    members = {id(root): root}
    frontier: list[int] = []  # negated positions: a max-heap

    def push(node: Node) -> None:
        for name in node.inputs:
            producer = index.producer.get(name) if name else None
            if producer is not None and id(producer) not in members:
                heapq.heappush(frontier, -position[id(producer)])

    push(root)
    tried: set[int] = set()
    while frontier:
        at = -heapq.heappop(frontier)
        if at in tried:
            continue
        tried.add(at)
        node = graph.nodes[at]
        value = node.outputs[0]
        if not _fusible(graph, index, node) or value in index.outputs:
            continue
        if any(id(reader) not in members for reader in index.consumers.get(value, [])):
            continue
        if len(_inputs(index, [*members.values(), node])) > MAX_INPUTS:
            continue
        members[id(node)] = node
        push(node)
    return sorted(members.values(), key=lambda n: position[id(n)])


def _inputs(index: GraphIndex, group: list[Node]) -> list[str]:
    """The tensors the group reads from outside, in first-read order, inlined constants aside."""
    defined = {name for node in group for name in node.outputs}
    seen: dict[str, None] = {}
    for node in group:
        for name in node.inputs:
            if name and name not in defined and _inlined(index, name) is None:
                seen.setdefault(name, None)
    return list(seen)


def _inlined(index: GraphIndex, name: str) -> np.ndarray | None:
    value = index.constant(name)
    return value if value is not None and value.size == 1 else None


def _fused_node(graph: Graph, index: GraphIndex, names: NameGenerator, group: list[Node]) -> Node:
    """The rtxrt::Elementwise node computing the group's result. Inside the body the values
    the outer graph still names (inputs, constants, the result) get fresh names, so that
    renaming an outer value never reaches into the body; intermediates keep theirs."""
    output = group[-1].outputs[0]
    defined = {name for node in group for name in node.outputs}
    rename = {output: names(output)}
    inputs, body_inputs, initializers = [], [], {}
    for node in group:
        for name in node.inputs:
            if not name or name in defined or name in rename:
                continue
            rename[name] = names(name)
            value = _inlined(index, name)
            if value is None:
                inputs.append(name)
                body_inputs.append(rename[name])
            else:
                initializers[rename[name]] = np.array(value)
    nodes = [
        dataclasses.replace(node, inputs=[rename.get(n, n) for n in node.inputs],
                            outputs=[rename.get(n, n) for n in node.outputs], attrs=dict(node.attrs))
        for node in group
    ]
    types = {rename.get(n, n): value_type(graph, n) for node in group for n in [*node.inputs, *node.outputs] if n}
    name = fused_name(names, group, "Elementwise")
    body = Graph(nodes, body_inputs, [rename[output]], types, initializers, name=name)
    return Node("Elementwise", inputs, [output], {"body": body}, name=name, domain="rtxrt")
