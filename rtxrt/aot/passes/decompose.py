"""decompose: ops the GPU backend has no lowering for → ops it has, with the same ONNX
semantics, so that a model runs on the GPU without host round trips.

- BatchNormalization (inference; those after a Conv are fold_batchnorm's): constant
  statistics → x * s + t with s, t precomputed per channel (shaped [C, 1, ...] to broadcast
  over axis 1); statistics computed at run time → (x - mean) / sqrt(var + eps) * scale + B.
- 1-D Conv, ConvTranspose, MaxPool, AveragePool on (N, C, L) → the 2-D op on (N, C, 1, L):
  Unsqueeze before, Squeeze after, weights (C_out, C_in, K) → (C_out, C_in, 1, K), the
  spatial attributes given a leading height of 1. Between such ops the Squeeze/Unsqueeze
  pair cancels, and a Squeeze moves below the elementwise ops reading it, so a 1-D
  Conv + activation (+ residual) still fuses, and a chain of them stays 4-D.
- 3-D Conv → one 2-D Conv over the depth taps (decompose_conv3d.py): strided depth slices
  side by side as channels, the output depth folded into the batch.
- DepthToSpace (DCR, CRD), SpaceToDepth → Reshape, Transpose, Reshape.
- MeanVarianceNormalization → (x - mean) / (sqrt(mean((x - mean)^2)) + 1e-9), its ONNX
  function; LpNormalization (p 1, 2) → x / norm, 0 where the norm is 0 (as onnxruntime).
  float16/bfloat16 statistics are computed in float32, as the reference backend does.
- Dropout in inference mode that noop_removal could not bypass (its output is a graph output
  that cannot take over its input's name, or its mask is read) → Identity (mask: all true).
- CastLike → Cast to its second input's type.
- Gemm with transA → Transpose + Gemm; Gemm whose C is not a bias over N with beta 1 →
  Gemm without C, then Add of (beta ×) C.
- Einsum (decompose_einsum.py) of float operands → MatMul, Mul, ReduceSum, Transpose, Reshape,
  Squeeze/Unsqueeze: any number of operands (contracted pairwise, left to right), explicit or
  implicit output, ellipsis dims (also of different ranks: they broadcast from the right), and
  static 1s broadcasting against other sizes. A pair with labels to contract is a batched
  MatMul: batch labels (in both and kept) stay apart and lead, the kept and the contracted
  labels of each operand are merged into one dim each ([batch..., M, K] @ [batch..., K, N]);
  a pair with none is a broadcast Mul; labels only one operand has and the output lacks are
  summed out first (ReduceSum, keepdims 0, over the axes where they are: the GPU's strided
  kernels reduce any axes, and the operand is transposed next anyway, smaller by then).
  Left as Einsum: integer operands (the GPU's MatMul takes floats), a label repeated within
  one operand (a diagonal), a label whose sizes in two operands are not provably equal (an
  unknown dim, or two symbols that might broadcast at run time), a static 0 dim, unknown ranks.
- STFT → a strided 2-D Conv with window × DFT basis weights; DFT → MatMul with the DFT basis
  (decompose_spectral.py), for constant sizes, window and axis.

Everything is shape-free (decompose_emitter.py): dims are never baked into constants, so
symbolic dims stay symbolic; where Reshape's 0 and -1 cannot say a shape, the sizes are read
with Shape/Gather/ReduceProd/Concat, computed at plan time.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Graph, Model, Node, TensorType
from ...ir.ops import elementwise_ops
from ...ir.rewrite import GraphIndex, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .decompose_conv3d import conv_3d
from .decompose_einsum import einsum
from .decompose_emitter import Emitter, Shape, merge_dims, split_dims
from .decompose_spectral import dft, stft
_NARROW = (DType.FLOAT16, DType.BFLOAT16)  # statistics of these are computed in float32
_MVN_EPSILON = 1e-9  # fixed by MeanVarianceNormalization's function body


# --------------------------------------------------------------------------- reductions


def _reduce(e: Emitter, op_type: str, x: str, axes: Sequence[int], rank: int) -> str:
    """``op_type`` (ReduceMean or ReduceSum, keepdims) over ``axes``: the GPU reduces any axes
    in one kernel (a strided one where they are not trailing)."""
    return e.reduce(op_type, x, sorted(axes))


def _axes(axes: Sequence[int], rank: int) -> list[int] | None:
    """Non-negative, distinct axes; None when out of range or repeated."""
    if any(not -rank <= a < rank for a in axes):
        return None
    result = sorted({int(a) % rank for a in axes})
    return result if len(result) == len(axes) else None


def _widened(e: Emitter, x: str, dtype: DType) -> tuple[str, DType]:
    """``x`` in the type its statistics are computed in."""
    if dtype in _NARROW:
        return e.op("Cast", [x], {"to": int(DType.FLOAT32)}), DType.FLOAT32
    return x, dtype


def _finish(e: Emitter, op_type: str, inputs: list[str], dtype: DType, wide: DType, output: str) -> None:
    """The last op of a computation done in ``wide``, writing ``output`` in ``dtype``."""
    if dtype == wide:
        e.op(op_type, inputs, output=output)
    else:
        e.op("Cast", [e.op(op_type, inputs)], {"to": int(dtype)}, output=output)


# --------------------------------------------------------------------------- the rewrites


def _float_input(e: Emitter, node: Node, min_rank: int = 0) -> TensorType | None:
    t = e.type_of(node.inputs[0]) if node.inputs and node.inputs[0] else None
    if t is None or not t.dtype.is_float or t.rank is None or t.rank < min_rank:
        return None
    return t


def _batch_norm(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    if int(node.attr("training_mode", 0)) or any(node.outputs[1:]) or int(node.attr("spatial", 1)) != 1:
        return None  # training, or (before opset 14) extra outputs, which also mean training
    t = _float_input(e, node, 2)
    if t is None or len(node.inputs) != 5:
        return None
    x, dtype, channels = node.inputs[0], t.dtype, t.shape[1]
    values = [index.constant(name) for name in node.inputs[1:]]
    sizes = {v.size for v in values if v is not None}
    if len(sizes) > 1 or (isinstance(channels, int) and sizes - {channels}):
        return None
    epsilon = float(node.attr("epsilon", 1e-5))
    shape = (-1,) + (1,) * (t.rank - 2)  # broadcasts over axis 1
    if all(v is not None for v in values):
        scale, bias, mean, var = (v.astype(np.float64).reshape(-1) for v in values)
        s = scale / np.sqrt(var + epsilon)
        y = e.op("Mul", [x, e.constant(s.reshape(shape).astype(dtype.numpy), "scale")])
        e.op("Add", [y, e.constant((bias - mean * s).reshape(shape).astype(dtype.numpy), "shift")],
             output=node.outputs[0])
        return "BatchNormalization→Mul+Add"
    for name, value in zip(node.inputs[1:], values):
        p = e.type_of(name)
        if value is None and (p is None or p.rank != 1 or not p.dtype.is_float):
            return None
    scale, bias, mean, var = (_per_channel(e, name, value, t) for name, value in zip(node.inputs[1:], values))
    std = e.op("Sqrt", [e.op("Add", [var, e.scalar(epsilon, dtype)])])
    normalized = e.op("Div", [e.op("Sub", [x, mean]), std])
    e.op("Add", [e.op("Mul", [normalized, scale]), bias], output=node.outputs[0])
    return "BatchNormalization→elementwise"


def _per_channel(e: Emitter, name: str, value: np.ndarray | None, x: TensorType) -> str:
    """A BN parameter (C) as x's type, shaped (C, 1, ...) to broadcast over x's axis 1."""
    ones = [1] * (x.rank - 2)
    if value is not None:
        return e.constant(value.reshape(-1, *ones).astype(x.dtype.numpy), "param")
    if e.type_of(name).dtype != x.dtype:
        name = e.op("Cast", [name], {"to": int(x.dtype)})
    return e.unsqueeze(name, range(1, x.rank - 1)) if ones else name


# 1-D attribute -> its 2-D form, the height being 1 (no padding, stride or dilation along it).
_TO_2D: dict[str, Callable[[list], list]] = {
    "kernel_shape": lambda v: [1, *v],
    "strides": lambda v: [1, *v],
    "dilations": lambda v: [1, *v],
    "output_padding": lambda v: [0, *v],
    "output_shape": lambda v: [1, *v],
    "pads": lambda v: [0, v[0], 0, v[1]],
}
_ATTR_LENGTH = {"pads": 2}


def _one_d(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    t = _float_input(e, node)
    if t is None or t.rank != 3 or any(index.uses(o) for o in node.outputs[1:] if o):
        return None  # not 1-D, or MaxPool's Indices are read
    attrs = dict(node.attrs)
    for key, to_2d in _TO_2D.items():
        if key in attrs:
            if len(attrs[key]) != _ATTR_LENGTH.get(key, 1):
                return None
            attrs[key] = to_2d([int(v) for v in attrs[key]])
    inputs = list(node.inputs)
    weights = index.constant(inputs[1]) if node.op_type in ("Conv", "ConvTranspose") else None
    if node.op_type in ("Conv", "ConvTranspose"):
        wt = TensorType.of(weights) if weights is not None else e.type_of(inputs[1])
        if wt is None or wt.rank != 3:
            return None
    inputs[0] = _lifted(e, inputs[0], 3)
    if weights is not None:
        inputs[1] = e.constant(weights.reshape(*weights.shape[:2], 1, weights.shape[2]), "weights")
    elif node.op_type in ("Conv", "ConvTranspose"):
        inputs[1] = e.unsqueeze(inputs[1], [2])
    y = e.op(node.op_type, inputs, attrs, name=node.name)
    e.squeeze(y, [2], node.outputs[0])
    e.squeezed[node.outputs[0]] = y
    return f"1-D {node.op_type}→2-D"


def _rank(graph: Graph, node: Node) -> int | None:
    t = value_type(graph, node.inputs[0]) if node.inputs and node.inputs[0] else None
    return None if t is None else t.rank


def _lifted(e: Emitter, x: str, rank: int) -> str:
    """A value of ``rank`` <= 3 with the height axis 1-D ops gain, (.., C, L) → (.., C, 1, L):
    the 4-D result a Squeeze came from, else one Unsqueeze per value."""
    if x in e.squeezed:
        return e.squeezed[x]
    if x not in e.unsqueezed:
        e.unsqueezed[x] = e.unsqueeze(x, [rank - 1]) if rank else x
    return e.unsqueezed[x]


def _depth_to_space(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    found = _blocks(e.graph, node)
    if found is None:
        return None
    (n, c, h, w), b = found
    mode = node.attr("mode", "DCR")
    depth = c // (b * b) if isinstance(c, int) else None
    if mode not in ("DCR", "CRD") or (isinstance(c, int) and c % (b * b)):
        return None
    if mode == "DCR":  # channel = (i * b + j) * depth + d
        x, shape = split_dims(e, node.inputs[0], [n, c, h, w], {1: [b, b, depth]})
        perm = [0, 3, 4, 1, 5, 2]
    else:  # channel = (d * b + i) * b + j
        x, shape = split_dims(e, node.inputs[0], [n, c, h, w], {1: [depth, b, b]})
        perm = [0, 1, 4, 2, 5, 3]
    x = e.op("Transpose", [x], {"perm": perm})
    merge_dims(e, x, [shape[p] for p in perm], [[0], [1], [2, 3], [4, 5]], node.outputs[0])
    return f"DepthToSpace ({mode})→Reshape+Transpose"


def _space_to_depth(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    found = _blocks(e.graph, node)
    if found is None or node.attr("mode", "DCR") != "DCR":
        return None
    (n, c, h, w), b = found
    if any(isinstance(d, int) and d % b for d in (h, w)):
        return None
    parts = [[d // b if isinstance(d, int) else None, b] for d in (h, w)]
    x, shape = split_dims(e, node.inputs[0], [n, c, h, w], {2: parts[0], 3: parts[1]})
    perm = [0, 3, 5, 1, 2, 4]  # (N, C, H/b, i, W/b, j) -> (N, i, j, C, H/b, W/b)
    x = e.op("Transpose", [x], {"perm": perm})
    merge_dims(e, x, [shape[p] for p in perm], [[0], [1, 2, 3], [4], [5]], node.outputs[0])
    return "SpaceToDepth→Reshape+Transpose"


def _blocks(graph: Graph, node: Node) -> tuple[Shape, int] | None:
    """The (N, C, H, W) dims and the block size of a DepthToSpace/SpaceToDepth."""
    t = value_type(graph, node.inputs[0])
    b = int(node.attr("blocksize", 0))
    if t is None or t.rank != 4 or b < 1 or any(d == 0 for d in t.shape):
        return None  # a static 0 would read as "copy" in a Reshape
    return list(t.shape), b


def _mean_variance(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    t = _float_input(e, node)
    axes = None if t is None else _axes(node.attr("axes", [0, 2, 3]), t.rank)
    if not axes:
        return None
    x, wide = _widened(e, node.inputs[0], t.dtype)
    centered = e.op("Sub", [x, _reduce(e, "ReduceMean", x, axes, t.rank)])
    variance = _reduce(e, "ReduceMean", e.op("Mul", [centered, centered]), axes, t.rank)
    std = e.op("Add", [e.op("Sqrt", [variance]), e.scalar(_MVN_EPSILON, wide)])
    _finish(e, "Div", [centered, std], t.dtype, wide, node.outputs[0])
    return "MeanVarianceNormalization→ReduceMean+elementwise"


def _lp_norm(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    t = _float_input(e, node, 1)
    p = int(node.attr("p", 2))
    axes = None if t is None else _axes([int(node.attr("axis", -1))], t.rank)
    if axes is None or p not in (1, 2):
        return None
    x, wide = _widened(e, node.inputs[0], t.dtype)
    if p == 1:
        norm = _reduce(e, "ReduceSum", e.op("Abs", [x]), axes, t.rank)
    else:
        norm = e.op("Sqrt", [_reduce(e, "ReduceSum", e.op("Mul", [x, x]), axes, t.rank)])
    zero = e.scalar(0, wide)
    is_zero = e.op("Equal", [norm, zero])  # a zero norm gives zeros, not 0 / 0
    _finish(e, "Where", [is_zero, zero, e.op("Div", [x, norm])], t.dtype, wide, node.outputs[0])
    return f"LpNormalization (p={p})→ReduceSum+elementwise"


def _dropout(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    training = node.inputs[2] if len(node.inputs) > 2 else ""
    value = index.constant(training) if training else np.zeros(1, bool)
    if value is None or value.size != 1 or bool(value.reshape(-1)[0]):
        return None  # training, or decided at run time
    x = node.inputs[0]
    if node.outputs[0]:
        e.op("Identity", [x], output=node.outputs[0])
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask and index.uses(mask):  # all true, of x's shape: IsNaN(x) equals itself everywhere
        nan = e.op("IsNaN", [x])
        e.op("Equal", [nan, nan], output=mask)
    return "Dropout→Identity"


def _cast_like(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    like = e.type_of(node.inputs[1])
    if like is None:
        return None
    attrs = {"to": int(like.dtype)} | ({"saturate": node.attrs["saturate"]} if "saturate" in node.attrs else {})
    e.op("Cast", [node.inputs[0]], attrs, output=node.outputs[0])
    return "CastLike→Cast"


def _gemm(e: Emitter, index: GraphIndex, node: Node) -> str | None:
    """The GPU GEMM takes A as it is and C as a bias over N added once: a Gemm with transA
    transposes A first, and one whose C is anything else (a matrix, a scalar, a column, beta
    other than 1) adds beta * C after a Gemm without it."""
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    out, n = e.type_of(node.outputs[0]), None
    if out is not None and out.shape is not None and len(out.shape) == 2:
        n = out.shape[1]
    c_type = e.type_of(c) if c else None
    beta = float(node.attr("beta", 1.0))
    bias_fits = not c or (beta == 1.0 and c_type is not None and c_type.shape == (n,) and n is not None)
    transpose_a = bool(node.attr("transA", 0))
    if bias_fits and not transpose_a:
        return None
    if not bias_fits and beta != 1.0 and c_type is None and out is None:
        return None  # the type of beta * C is unknown
    if transpose_a:
        a = e.op("Transpose", [a], {"perm": [1, 0]})
    attrs = {"alpha": float(node.attr("alpha", 1.0)), "transB": int(node.attr("transB", 0))}
    if bias_fits:
        e.op("Gemm", [a, b, c] if c else [a, b], attrs, output=node.outputs[0])
        return "Gemm(transA)→Transpose+Gemm"
    product = e.op("Gemm", [a, b], attrs)
    if beta != 1.0:
        c = e.op("Mul", [c, e.scalar(beta, c_type.dtype if c_type is not None else out.dtype)])
    e.op("Add", [product, c], output=node.outputs[0])
    return "Gemm(C)→Gemm+Add"


_Rule = Callable[[Emitter, GraphIndex, Node], "str | None"]
_RULES: dict[str, _Rule] = {
    "BatchNormalization": _batch_norm,
    "Conv": lambda e, index, node: (conv_3d if _rank(e.graph, node) == 5 else _one_d)(e, index, node),
    "ConvTranspose": _one_d,
    "MaxPool": _one_d,
    "AveragePool": _one_d,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
    "MeanVarianceNormalization": _mean_variance,
    "LpNormalization": _lp_norm,
    "Dropout": _dropout,
    "CastLike": _cast_like,
    "Einsum": einsum,
    "Gemm": _gemm,
    "STFT": stft,
    "DFT": dft,
}


# --------------------------------------------------------------------------- 1-D ops stay 4-D


def _sink_squeeze(e: Emitter, index: GraphIndex, node: Node) -> list[Node] | None:
    """``node`` on the 4-D results of 1-D ops instead of their squeezed 3-D views, followed by
    its own Squeeze: an elementwise op reading at least one such view, and otherwise constants
    of rank <= 3 or tensors of the view's very shape (a residual). These gain the height axis
    too, (.., C, L) → (.., C, 1, L): the same broadcast. A tensor of another shape (the mean
    of a decomposed LayerNorm, say) stops it, leaving such patterns whole for their fusions."""
    if node.domain or node.op_type not in elementwise_ops() or len(node.outputs) != 1 or not node.outputs[0]:
        return None
    views = [e.type_of(name) for name in node.inputs if name in e.squeezed]
    if not views:
        return None
    for name in node.inputs:
        value = index.constant(name) if name and name not in e.squeezed else None
        if value is not None and value.ndim > 3:
            return None
        if value is None and name and name not in e.squeezed and not _same_shape(e.type_of(name), views):
            return None
    inputs = []
    for name in node.inputs:
        value = index.constant(name) if name else None
        if not name or name in e.squeezed:
            inputs.append(e.squeezed.get(name, name))
        elif value is None:
            inputs.append(_lifted(e, name, 3))
        elif value.size == 1:
            inputs.append(name)
        else:
            inputs.append(e.constant(np.expand_dims(value, value.ndim - 1), "lifted"))
    output = node.outputs[0]
    result = e.names(f"{output}_2d")
    e.nodes.append(dataclasses.replace(node, inputs=inputs, outputs=[result], attrs=dict(node.attrs)))
    e.squeeze(result, [2], output)
    e.squeezed[output] = result
    return e.nodes


def _same_shape(t: TensorType | None, views: list[TensorType | None]) -> bool:
    """Whether ``t`` provably has the shape of one of ``views`` (dims known or named)."""
    return t is not None and t.shape is not None and None not in t.shape and \
        any(v is not None and v.shape == t.shape for v in views)


def _drop_unread_squeezes(graph: Graph, squeezes: list[Node]) -> None:
    """Remove the Squeezes whose views nothing reads any more (all readers went 4-D)."""
    index = GraphIndex(graph)
    dead = {id(n) for n in squeezes if not index.uses(n.outputs[0])}
    graph.nodes = [n for n in graph.nodes if id(n) not in dead]


def decompose(model: Model, options: AotOptions) -> PassResult:
    """Every graph: the model's and the bodies of its If, Loop and Scan nodes (inlined or
    unrolled when a plan is made, their nodes then run on the GPU like any others)."""
    result = PassResult()
    _decompose_graph(model.graph, model.opset, {}, result)
    return result


def _decompose_graph(graph: Graph, opset: int, outer: dict[str, TensorType], result: PassResult) -> None:
    index = GraphIndex(graph)
    e = Emitter(graph, opset, outer)
    nodes: list[Node] = []
    # In graph order, so that a node sees its producers' rewrites (the 4-D results it can read).
    for node in graph.nodes:
        rule = _RULES.get(node.op_type) if node.domain == "" else None
        e.start(node)
        kind = rule(e, index, node) if rule else None
        if kind:
            result.add(kind)
        for emitted in e.nodes if kind else [node]:
            e.start(emitted)
            if _sink_squeeze(e, index, emitted):
                result.add("elementwise op moved before a Squeeze")
                nodes += e.nodes
            else:
                nodes.append(emitted)
    graph.nodes = nodes
    _drop_unread_squeezes(graph, e.squeezes)
    seen = {**outer, **graph.types, **{n: TensorType.of(a) for n, a in graph.initializers.items()}}
    for node in graph.nodes:
        for body in node.subgraphs():
            _decompose_graph(body, opset, seen, result)
