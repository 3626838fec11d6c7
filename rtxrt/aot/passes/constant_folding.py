"""Constant folding: nodes whose inputs are all known before run time are evaluated with the
reference kernels and replaced by initializers.

A folded value keeps its name, so the result is deterministic and a weight computed from
weights (BatchNorm folded into a Conv, say) can be recomputed by name at refit time.
"""
from __future__ import annotations

import numpy as np

from ...backends.reference.kernel import find_kernel
from ...ir.graph import Graph, Model, Node, TensorType
from ...ir.ops.facts import NONDETERMINISTIC_OPS
from ...ir.rewrite import constants, remove_nodes
from ..options import AotOptions
from ..pass_result import PassResult

# Ops whose result is not a function of their inputs: folding them would freeze one draw.


def fold_constants(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    known = constants(graph)
    folded: list[Node] = []
    for node in graph.nodes:
        if is_constant_node(node):
            if isinstance(node.attrs.get("value"), np.ndarray):
                known[node.outputs[0]] = node.attrs["value"]
                folded.append(node)
                result.add("Constant node to initializer")
            continue
        if not foldable(node) or any(name and name not in known for name in node.inputs):
            continue
        values = evaluate(node, [known[n] if n else None for n in node.inputs], model.opset, graph, options.fold_max_bytes)
        if values is None:
            continue
        for name, value in zip(node.outputs, values):
            if name:
                known[name] = value
        folded.append(node)
        result.add(f"folded {node.op_type}")
    remove_nodes(graph, folded)
    for node in folded:  # in graph order: the initializer order, hence the file, is deterministic
        for name in node.outputs:
            if name:
                graph.initializers[name] = known[name]
    return result


def is_constant_node(node: Node) -> bool:
    return node.op_type == "Constant" and node.domain == ""


def foldable(node: Node) -> bool:
    """Whether evaluating ``node`` once, here, is the same as evaluating it at run time."""
    return node.op_type not in NONDETERMINISTIC_OPS and not any(True for _ in node.subgraphs())


def evaluate(node: Node, inputs: list[np.ndarray | None], opset: int, graph: Graph,
             max_bytes: int) -> list[np.ndarray] | None:
    """The node's outputs computed by its reference kernel, typed as the graph declares them;
    None when there is no kernel, the kernel fails (the error is left for run time, where it
    names the node) or an output would exceed ``max_bytes``."""
    declared = [graph.types.get(name) if name else None for name in node.outputs]
    if any(_static_bytes(t) > max_bytes for t in declared if t is not None):
        return None  # too big: do not even compute it
    kernel_class = find_kernel(node.op_type, node.domain)
    if kernel_class is None:
        return None
    try:
        raw = kernel_class(node, opset, run_subgraph=None).run(*inputs)
    except Exception:
        return None
    raw = raw if isinstance(raw, (tuple, list)) else (raw,)
    values = []
    for value, t in zip(raw, declared):
        value = np.asarray(value)
        if t is not None and value.dtype != t.dtype.numpy:
            value = value.astype(t.dtype.numpy)
        if not value.flags.c_contiguous or any(np.may_share_memory(value, x) for x in inputs if x is not None):
            value = value.copy()  # a view of another initializer (Reshape, Identity) gets its own data
        if value.nbytes > max_bytes:
            return None
        values.append(value)
    return values if len(values) >= len(node.outputs) else None


def _static_bytes(t: TensorType) -> int:
    if not t.is_static:
        return 0
    return int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize
