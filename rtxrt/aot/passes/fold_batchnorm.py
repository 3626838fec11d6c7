"""fold_batchnorm: an inference BatchNormalization after a Conv, ConvTranspose, Gemm, or a
MatMul by constant 2-D weights, folded into that node's weights and bias.

BN computes y = x * s + t per channel (axis 1), s = scale / sqrt(var + eps) and
t = B - mean * s. With constant weights W and bias b the producer can compute y itself from
W * s (along its output-channel axis) and b * s + t; the new weights are computed here, in
float64, as new initializers (the old ones may have other readers; dead ones are pruned).
A MatMul has no bias input, so t is added by an Add that fuse_gemm then takes in.

It does not fire when the producer's result is read elsewhere (another consumer, a graph
output), when a weight is not constant, in training mode, or where the BN's channel axis is
not the product's column axis (a MatMul result of rank > 2).
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import GraphIndex, NameGenerator, remove_nodes
from ..options import AotOptions
from ..pass_result import PassResult

_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _affine(index: GraphIndex, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) of an inference BN with constant statistics, in float64."""
    if int(bn.attr("training_mode", 0)) or any(bn.outputs[1:]) or int(bn.attr("spatial", 1)) != 1:
        return None
    values = [index.constant(name) for name in bn.inputs[1:5]]
    if any(v is None for v in values):
        return None
    scale, shift, mean, var = (v.astype(np.float64).reshape(-1) for v in values)
    s = scale / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
    return s, shift - mean * s


def _scaled_weights(node: Node, w: np.ndarray, s: np.ndarray, rank: int) -> np.ndarray | None:
    """``w`` with each output channel c multiplied by s[c], or None where ``node`` cannot
    carry the BN. ``rank`` is the rank of ``node``'s result."""
    w = w.astype(np.float64)
    if node.op_type == "Conv":  # W: (M, C/group, *kernel)
        return w * s.reshape(-1, *[1] * (w.ndim - 1))
    if node.op_type == "ConvTranspose":  # W: (C, M/group, *kernel); channel g * M/group + j
        group = int(node.attr("group", 1))
        grouped = w.reshape(group, w.shape[0] // group, w.shape[1], *w.shape[2:])
        return (grouped * s.reshape(group, 1, w.shape[1], *[1] * (w.ndim - 2))).reshape(w.shape)
    if rank != 2 or w.ndim != 2:  # Gemm and MatMul: the BN's axis 1 must be the columns
        return None
    if node.op_type == "Gemm" and node.attr("transB", 0):  # B: (N, K)
        return w * s.reshape(-1, 1)
    return w * s.reshape(1, -1)


def _new_bias(index: GraphIndex, node: Node, s: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """b * s + t, b being the node's (constant) bias; Gemm's beta is folded into it."""
    name = node.inputs[2] if len(node.inputs) > 2 else ""
    if not name:
        return t
    b = index.constant(name)
    if b is None:
        return None
    if node.op_type == "Gemm":  # C broadcasts to (M, N): scale along the columns
        beta = float(node.attr("beta", 1.0))
        return beta * b.astype(np.float64) * s + t
    return b.astype(np.float64).reshape(-1) * s + t


def _fold(graph: Graph, index: GraphIndex, fresh: NameGenerator, bn: Node) -> str | None:
    x = bn.inputs[0]
    node = index.producer.get(x)
    if node is None or node.domain != "" or node.op_type not in _PRODUCERS or index.only_consumer(x) is not bn:
        return None
    affine = _affine(index, bn)
    w = index.constant(node.inputs[1])
    out = graph.types.get(x)
    if affine is None or w is None or out is None or out.shape is None:
        return None
    s, t = affine
    weights = _scaled_weights(node, w, s, len(out.shape))
    bias = _new_bias(index, node, s, t) if node.op_type != "MatMul" else t
    if weights is None or bias is None:
        return None
    dtype = out.dtype.numpy
    w_name, b_name = fresh(f"{node.inputs[1]}_bn"), fresh(f"{node.name or x}_bn_bias")
    graph.initializers[w_name] = weights.astype(dtype)
    graph.initializers[b_name] = np.ascontiguousarray(bias, dtype=dtype)
    node.inputs = [node.inputs[0], w_name, *([] if node.op_type == "MatMul" else [b_name])]
    if node.op_type == "Gemm":
        node.attrs["beta"] = 1.0
    if node.op_type == "MatMul":  # the shift becomes a bias Add in the BN's place
        bn_at = next(i for i, n in enumerate(graph.nodes) if n is bn)
        graph.nodes[bn_at] = Node("Add", [x, b_name], [bn.outputs[0]], name=bn.name)
    else:
        node.outputs = [bn.outputs[0]]
        remove_nodes(graph, [bn])
    return f"BatchNormalization→{node.op_type}"


def fold_batchnorm(model: Model, options: AotOptions) -> PassResult:
    result = PassResult()
    graph = model.graph
    fresh = NameGenerator(graph)
    for bn in [n for n in graph.nodes if n.op_type == "BatchNormalization" and n.domain == ""]:
        kind = _fold(graph, GraphIndex(graph), fresh, bn)
        if kind:
            result.add(kind)
    return result
