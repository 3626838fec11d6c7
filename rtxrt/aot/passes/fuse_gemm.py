"""fuse_gemm: MatMul/Gemm + bias Add + activation + residual Add → one rtxrt::FusedMatMul,
a GEMM with its epilogue (see epilogue.py; the bias varies along the last axis).

Every MatMul and Gemm the fused op can express becomes one, so the JIT has one GEMM op to
generate: float operands of rank >= 2 (numpy's 1-D rules stay with MatMul), a Gemm without
transA (which would need a Transpose) and whose C is absent or a constant that varies along
the columns only (beta is folded into it). Others are left as they are.
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import GraphIndex, NameGenerator, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .epilogue import bias_input, fuse_producers, match_epilogue, replace_with_fused


def _operands(graph: Graph, index: GraphIndex, node: Node) -> tuple[dict, list[tuple[str, np.ndarray]]] | None:
    """The FusedMatMul attributes (trans_b, alpha) of ``node`` and its bias parts (see
    bias_input), or None when FusedMatMul cannot express it."""
    types = [value_type(graph, name) for name in (node.inputs[0], node.inputs[1], node.outputs[0])]
    if any(t is None or t.shape is None or len(t.shape) < 2 for t in types) or not types[2].dtype.is_float:
        return None
    if node.op_type == "MatMul":
        return {"trans_b": 0, "alpha": 1.0}, []
    if node.attr("transA", 0):
        return None
    attrs = {"trans_b": int(node.attr("transB", 0)), "alpha": float(node.attr("alpha", 1.0))}
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    beta = float(node.attr("beta", 1.0))
    if not c_name or beta == 0:  # Gemm ignores C when beta is 0
        return attrs, []
    c, columns = index.constant(c_name), types[2].shape[1]
    if c is None or c.ndim > 2 or not isinstance(columns, int):
        return None
    rows, width = ((1,) * (2 - c.ndim) + c.shape)
    if rows != 1 or width not in (1, columns):
        return None
    if beta == 1 and c.shape == (columns,):
        return attrs, [(c_name, c)]
    return attrs, [("", np.broadcast_to((beta * c.astype(np.float64)).reshape(-1), (columns,)))]


def _fuse(graph: Graph, index: GraphIndex, fresh: NameGenerator, node: Node, opset: int) -> str | None:
    operands = _operands(graph, index, node)
    if operands is None:
        return None
    attrs, parts = operands
    ep = match_epilogue(graph, index, node.outputs[0], -1, opset, take_bias=True)
    if ep.bias is not None:
        parts.append(ep.bias)
    bias = bias_input(graph, fresh, parts, value_type(graph, node.outputs[0]), node.name or node.outputs[0])
    return replace_with_fused(graph, node, "FusedMatMul", attrs, bias, ep)


def fuse_gemm(model: Model, options: AotOptions) -> PassResult:
    return fuse_producers(model, ("MatMul", "Gemm"), _fuse)
