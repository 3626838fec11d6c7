"""Horizontal fusion: parallel products or convolutions that read the same input become one
wider node followed by a Split.

- MatMul, Gemm and rtxrt::FusedMatMul with constant 2-D weights of the same K (the Q/K/V
  projections of a transformer layer): the weights and biases are concatenated along N and a
  Split on the last axis gives each result back.
- Conv and rtxrt::FusedConv with group 1 and the same kernel size, strides, pads and
  dilations (Inception's 1x1 branches): the filters and biases are concatenated along the
  output channels, and a Split on axis 1 follows.

Each output column (or channel) of the wide node is computed exactly as the narrow node
computed it, so the results are identical. Fused members must have the same activation and no
residual input: the activation is elementwise, so it applies to the concatenation as to each
part. A member without a bias gets zeros beside the others' biases.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import GraphIndex, NameGenerator, add_initializer, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .patterns import fused_name


@dataclass
class _Member:
    node: Node
    weight: np.ndarray  # the node's constant weight
    bias: np.ndarray | None  # 1-D, one value per output column or channel
    width: int  # its output columns or channels
    trans_b: int = 0  # products: the weight is B^T, (N, K)
    alpha: float = 1.0


def fuse_horizontal(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    index = GraphIndex(graph)
    names = NameGenerator(graph)
    groups: dict[tuple, list[_Member]] = {}
    for node in graph.nodes:
        found = _product(graph, index, node) or _conv(graph, index, node)
        if found is not None:
            groups.setdefault(found[0], []).append(found[1])
    replaced: dict[int, list[Node]] = {}  # first member's id -> the nodes that take its place
    for signature, members in groups.items():
        if len(members) < 2:
            continue
        replaced[id(members[0].node)] = _merge(graph, model.opset, names, signature, members)
        replaced.update({id(m.node): [] for m in members[1:]})
        result.add(_kind(index, signature, members))
    if replaced:
        graph.nodes = [new for node in graph.nodes for new in replaced.get(id(node), [node])]
        if any(n.domain == "rtxrt" for nodes in replaced.values() for n in nodes):
            model.opsets.setdefault("rtxrt", 1)
    return result


def _product(graph: Graph, index: GraphIndex, node: Node) -> tuple[tuple, _Member] | None:
    """(signature, member) of a matrix product by a constant 2-D weight; members with equal
    signatures merge (the same x gives the same K)."""
    op = (node.domain, node.op_type)
    if op == ("", "MatMul"):
        trans_b, alpha, epilogue, bias_name = 0, 1.0, ("none", ()), ""
    elif op == ("", "Gemm"):
        if node.attr("transA", 0) or (len(node.inputs) > 2 and node.inputs[2] and node.attr("beta", 1.0) != 1.0):
            return None
        trans_b, alpha, epilogue = int(node.attr("transB", 0)), float(node.attr("alpha", 1.0)), ("none", ())
        bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    elif op == ("rtxrt", "FusedMatMul"):
        if node.attr("residual", "none") != "none" or (len(node.inputs) > 3 and node.inputs[3]):
            return None
        trans_b, alpha = int(node.attr("trans_b", 0)), float(node.attr("alpha", 1.0))
        epilogue = (node.attr("activation", "none"), tuple(node.attr("activation_params", [])))
        bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    else:
        return None
    x, weight = node.inputs[0], index.constant(node.inputs[1])
    x_type = value_type(graph, x)
    if weight is None or weight.ndim != 2 or x_type is None or x_type.rank is None or x_type.rank < 2:
        return None
    if not x_type.dtype.is_float or weight.dtype != x_type.dtype.numpy:
        return None
    n = weight.shape[0 if trans_b else 1]
    bias = _bias(index, bias_name, n, weight.dtype, column_shapes=((n,), (1, n)))
    if bias is False:
        return None
    signature = ("MatMul", x, trans_b, alpha, epilogue, op[1] == "Gemm")
    return signature, _Member(node, weight, bias, n, trans_b, alpha)


def _conv(graph: Graph, index: GraphIndex, node: Node) -> tuple[tuple, _Member] | None:
    """(signature, member) of a group-1 convolution by a constant filter."""
    op = (node.domain, node.op_type)
    if op == ("rtxrt", "FusedConv"):
        if node.attr("residual", "none") != "none" or (len(node.inputs) > 3 and node.inputs[3]):
            return None
        epilogue = (node.attr("activation", "none"), tuple(node.attr("activation_params", [])))
    elif op == ("", "Conv"):
        epilogue = ("none", ())
    else:
        return None
    x, weight = node.inputs[0], index.constant(node.inputs[1])
    x_type = value_type(graph, x)
    if weight is None or weight.ndim < 3 or x_type is None or x_type.rank != weight.ndim:
        return None
    if int(node.attr("group", 1)) != 1 or not x_type.dtype.is_float or weight.dtype != x_type.dtype.numpy:
        return None
    spatial = weight.ndim - 2
    if tuple(node.attr("kernel_shape") or weight.shape[2:]) != weight.shape[2:]:
        return None
    auto_pad = node.attr("auto_pad", "NOTSET") or "NOTSET"
    window = (
        tuple(node.attr("strides") or (1,) * spatial),
        tuple(node.attr("dilations") or (1,) * spatial),
        tuple(node.attr("pads") or (0,) * 2 * spatial) if auto_pad == "NOTSET" else auto_pad,
    )
    channels = weight.shape[0]
    bias = _bias(index, node.inputs[2] if len(node.inputs) > 2 else "", channels, weight.dtype, ((channels,),))
    if bias is False:
        return None
    signature = ("Conv", x, weight.shape[1:], window, epilogue)
    return signature, _Member(node, weight, bias, channels)


def _bias(index: GraphIndex, name: str, width: int, dtype: np.dtype, column_shapes: tuple) -> np.ndarray | None | bool:
    """A constant bias as one value per output column: None when absent, False when it is not
    constant or does not vary along the columns only (a scalar is broadcast)."""
    if not name:
        return None
    value = index.constant(name)
    if value is None or value.dtype != dtype:
        return False
    if value.shape in column_shapes:
        return value.reshape(width)
    if value.size == 1 and value.ndim <= 2:
        return np.full(width, value.reshape(()), dtype)
    return False


def _merge(graph: Graph, opset: int, names: NameGenerator, signature: tuple, members: list[_Member]) -> list[Node]:
    """The wide node and its Split, defining the members' outputs."""
    family = signature[0]
    nodes = [m.node for m in members]
    base = fused_name(names, nodes, family)
    first = next((n for n in nodes if n.domain), nodes[0])  # a fused member gives the epilogue
    concat_axis = 0 if family == "Conv" or members[0].trans_b else 1  # filters, B^T's rows, B's columns
    weight = add_initializer(graph, names, f"{base}_weight", np.concatenate([m.weight for m in members], concat_axis))
    inputs = [nodes[0].inputs[0], weight]
    if any(m.bias is not None for m in members):
        zeros = [np.zeros(m.width, m.weight.dtype) if m.bias is None else m.bias for m in members]
        inputs.append(add_initializer(graph, names, f"{base}_bias", np.concatenate(zeros)))
    attrs = dict(first.attrs)
    if first.op_type == "Gemm":  # beta was 1 wherever there was a C
        attrs.update(transA=0, transB=members[0].trans_b, alpha=members[0].alpha, beta=1.0)
    wide = names(f"{base}_out")
    fused = Node(first.op_type, inputs, [wide], attrs, name=base, domain=first.domain)
    rank = value_type(graph, nodes[0].inputs[0]).rank
    axis = 1 if family == "Conv" else rank - 1
    widths = np.array([m.width for m in members], np.int64)
    outputs = [n.outputs[0] for n in nodes]
    if opset >= 13:
        split = Node("Split", [wide, add_initializer(graph, names, f"{base}_split", widths)], outputs, {"axis": axis})
    else:
        split = Node("Split", [wide], outputs, {"axis": axis, "split": widths.tolist()})
    split.name = names(f"{base}_split")
    return [fused, split]


def _kind(index: GraphIndex, signature: tuple, members: list[_Member]) -> str:
    kind = f"{len(members)} {signature[0]} → 1"
    readers = [index.consumers.get(m.node.outputs[0], []) for m in members]
    if len(members) == 3 and all(len(r) == 1 and r[0].op_type == "Attention" for r in readers):
        attention = readers[0][0]
        if attention.inputs[:3] == [m.node.outputs[0] for m in members]:
            kind += " (Q/K/V)"
    return kind
