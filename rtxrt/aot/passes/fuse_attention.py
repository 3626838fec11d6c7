"""Attention fusion: MatMul(Q, Kᵀ) → scale → mask → Softmax → MatMul(·, V) becomes one ONNX
``Attention`` node (opset 23 semantics, accepted by the IR whatever the model's opset).

Scale factors may sit on the scores or on Q and K before the product; they multiply into the
``scale`` attribute. The mask ops between the scale and the Softmax (Add of a float mask, and
Where(cond, scores, -inf) as masked_fill exports it) become one additive ``attn_mask``; a
constant mask of the causal pattern becomes ``is_causal`` instead.

Two forms. The 3-D one reads Q, K and V as (batch, seq, heads * head_size) with the head counts
as attributes; it is chosen when each operand reaches the product through the per-head
Reshape → Transpose exporters write, and the result leaves through Transpose → Reshape: those
are absorbed. Otherwise the 4-D form reads (batch, heads, seq, head_size) tensors as they are;
K, which the product reads transposed, is fed untransposed.

An ONNX Attention node already in the model is one node already and is left as it is.

This module matches the pattern and rewrites it; the mask ops are attention_mask.py's, and the
proofs that dims agree (batch, heads, sequence) come from DimTracer (dim_tracer.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...ir.graph import Graph, Model, Node
from ...ir.rewrite import (
    GraphIndex, NameGenerator, add_initializer, remove_nodes, remove_unread_producers, topological_sort,
)
from ..options import AotOptions
from ..pass_result import PassResult
from .attention_mask import MaskBuilder, mask_fill, mask_fits
from .dim_tracer import DimTracer, Key
from .symbolic_shapes import ShapeAnalysis


def fuse_attention(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    names = NameGenerator(graph)
    if not any(node.op_type == "Softmax" and not node.domain for node in graph.nodes):
        return result
    masks = MaskBuilder(graph, names)
    # The dims of the graph as it is: rewrites below add values but change none that stays.
    shapes = ShapeAnalysis(model, options).run()
    while True:  # one fusion at a time: each rewrite invalidates the index
        index = GraphIndex(graph)
        dims = DimTracer(index, shapes)
        for node in graph.nodes:
            if node.op_type == "Softmax" and not node.domain:
                match = _match(index, dims, node, model.opset)
                if match is not None:
                    result.add(_rewrite(graph, index, dims, match, model.opset, names, masks))
                    break
        else:
            break
    if result.changed:
        topological_sort(graph)  # a shared mask is built where its first reader was
    return result


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


@dataclass
class _Operand:
    """A product operand as ``root.transpose(perm) * scale``, found by walking up from the
    product through Transposes (and, for Q and K, scalar Mul/Div)."""

    root: str
    perm: tuple[int, ...] = (0, 1, 2, 3)
    scale: float = 1.0
    walked: list[Node] = field(default_factory=list)


@dataclass
class _Scores:
    """The chain from the Q·Kᵀ MatMul to the Softmax input."""

    matmul: Node
    scale: float = 1.0
    # forward order: ("add", mask) or ("where", cond, fill, scores_where_true)
    mask_ops: list[tuple] = field(default_factory=list)
    chain: list[Node] = field(default_factory=list)


@dataclass
class _HeadSplit:
    """The 3-D source of a 4-D operand: Reshape(x, [x.d0, x.d1, heads, size]) transposed to
    (0, 2, 1, 3); or, with ``part`` = (i, n), part i of a packed projection: Reshape(x,
    [x.d0, x.d1, n, heads, size]) transposed to (2, 0, 3, 1, 4) and unstacked, which is
    the i-th of n equal slices of x's last axis, split into heads."""

    x: str
    heads: int
    size: int
    part: tuple[int, int] | None = None


@dataclass
class _Match:
    scores: _Scores
    softmax: Node
    tail: list[Node]  # no-op Casts between the Softmax and the second product
    pv: Node  # the probabilities · V MatMul
    q: _Operand
    k: _Operand
    v: _Operand
    scale: float
    dims: tuple[Key, Key, Key, Key]  # of the scores: batch, heads, q_len, kv_len
    splits: tuple[_HeadSplit, _HeadSplit, _HeadSplit] | None = None  # 3-D form
    merge: tuple[Node, Node] | None = None  # output Transpose, Reshape of the 3-D form


def _match(index: GraphIndex, dims: DimTracer, softmax: Node, opset: int) -> _Match | None:
    x = softmax.inputs[0]
    if dims.rank(x) != 4 or not _softmax_on_last_axis(softmax, opset):
        return None
    pv, tail = _reader_past_casts(index, dims, softmax.outputs[0])
    probs = tail[-1].outputs[0] if tail else softmax.outputs[0]
    if pv is None or pv.op_type != "MatMul" or pv.domain or pv.inputs[0] != probs:
        return None
    scores = _scores(index, dims, x, softmax, masking=True)
    if scores is None:
        return None
    qk = scores.matmul
    q = _walk(index, dims, qk.inputs[0], scaled=True)
    k = _walk(index, dims, qk.inputs[1], scaled=True)
    v = _walk(index, dims, pv.inputs[1], scaled=False)
    if any(dims.rank(name) != 4 for name in (qk.inputs[0], qk.inputs[1], pv.inputs[1], q.root, k.root, v.root)):
        return None
    k.perm = tuple(k.perm[i] for i in (0, 1, 3, 2))  # Attention takes K as (batch, heads, kv_len, size)
    scale = scores.scale * q.scale * k.scale
    if not (math.isfinite(scale) and scale > 0):  # Attention scales Q and K by sqrt(scale)
        return None
    qd, kd, vd = (tuple(dims.key(op.root, op.perm[i]) for i in range(4)) for op in (q, k, v))
    same_batch = dims.agree(qd[0], kd[0]) and dims.agree(kd[0], vd[0])
    # the product broadcasts a single K/V head over Q's heads, as Attention's grouping does
    same_heads = dims.agree(kd[1], vd[1]) and (dims.agree(qd[1], kd[1]) or kd[1] == 1)
    if not (same_batch and same_heads):
        return None
    score_dims = (qd[0], qd[1], qd[2], kd[2])
    dtype = dims.dtype(x)
    if not all(mask_fits(dims, op, score_dims, dtype) for op in scores.mask_ops):
        return None
    match = _Match(scores, softmax, tail, pv, q, k, v, scale, score_dims)
    splits = tuple(_head_split(index, dims, op) for op in (q, k, v))
    if all(splits):
        hq, hk, hv = (s.heads for s in splits)
        merge = _head_merge(index, dims, pv.outputs[0], splits[0].x, hq * splits[2].size)
        if hk == hv and (hq == hk or hk == 1) and merge is not None:
            match.splits, match.merge = splits, merge
    return match


def _softmax_on_last_axis(softmax: Node, opset: int) -> bool:
    # Before opset 13 Softmax flattened to 2-D at ``axis`` (default 1): the same on the last axis.
    axis = softmax.attr("axis", -1 if opset >= 13 else 1)
    return axis in (3, -1)


def _reader_past_casts(index: GraphIndex, dims: DimTracer, value: str) -> tuple[Node | None, list[Node]]:
    """The only reader of ``value``, past Casts to the type it already has."""
    casts = []
    while True:
        reader = index.only_consumer(value)
        if reader is None or not _is_noop_cast(dims, reader):
            return reader, casts
        casts.append(reader)
        value = reader.outputs[0]


def _is_noop_cast(dims: DimTracer, node: Node) -> bool:
    if node.op_type != "Cast" or node.domain:
        return False
    source, target = dims.dtype(node.inputs[0]), dims.dtype(node.outputs[0])
    return source is not None and source == target


def _scores(index: GraphIndex, dims: DimTracer, value: str, reader: Node, masking: bool) -> _Scores | None:
    """Walk up from the Softmax input: mask ops (only next to the Softmax), then scale factors,
    then the Q·Kᵀ product; each value on the way read by nothing else."""
    if index.only_consumer(value) is not reader:
        return None
    node = index.producer.get(value)
    if node is None or node.domain:
        return None
    if node.op_type == "MatMul":
        return _Scores(node, chain=[node])
    found: _Scores | None = None
    if _is_noop_cast(dims, node):
        found = _scores(index, dims, node.inputs[0], node, masking)
    elif (factor := _scalar_factor(index, dims, node)) is not None:
        found = _scores(index, dims, factor[0], node, masking=False)
        if found is not None:
            found.scale *= factor[1]
    elif masking and node.op_type == "Add":
        for i in (0, 1):
            found = _scores(index, dims, node.inputs[i], node, masking)
            if found is not None:
                found.mask_ops.append(("add", node.inputs[1 - i]))
                break
    elif masking and node.op_type == "Where":
        cond, when_true, when_false = node.inputs
        for scores_at, fill, keep in ((1, when_false, True), (2, when_true, False)):
            if mask_fill(index, fill) is not None:
                found = _scores(index, dims, node.inputs[scores_at], node, masking)
                if found is not None:
                    found.mask_ops.append(("where", cond, fill, keep))
                    break
    if found is not None:
        found.chain.append(node)
    return found


def _scalar_factor(index: GraphIndex, dims: DimTracer, node: Node) -> tuple[str, float] | None:
    """(x, f) when ``node`` computes x * f with f a one-element float constant."""
    if node.domain or node.op_type not in ("Mul", "Div") or len(node.inputs) != 2:
        return None
    for i in (0, 1) if node.op_type == "Mul" else (0,):
        x, c = node.inputs[i], index.constant(node.inputs[1 - i])
        rank = dims.rank(x)
        if c is not None and c.size == 1 and c.dtype.kind == "f" and rank is not None and c.ndim <= rank:
            f = float(c.reshape(()))
            if node.op_type == "Div":
                f = 1 / f if f else math.inf
            return x, f
    return None


def _walk(index: GraphIndex, dims: DimTracer, value: str, scaled: bool) -> _Operand:
    """Follow Transposes (and scalar factors when ``scaled``) up from a product operand. They
    are read again from the root by the fused node; any other reader keeps them alive."""
    operand = _Operand(value)
    while (node := index.producer.get(value)) is not None and not node.domain:
        if node.op_type == "Transpose" and dims.rank(node.inputs[0]) == 4:
            perm = node.attr("perm") or [3, 2, 1, 0]
            operand.perm = tuple(perm[i] for i in operand.perm)
            value = node.inputs[0]
        elif scaled and (factor := _scalar_factor(index, dims, node)) is not None:
            value, f = factor
            operand.scale *= f
        else:
            break
        operand.walked.append(node)
        operand.root = value
    return operand


def _head_split(index: GraphIndex, dims: DimTracer, op: _Operand) -> _HeadSplit | None:
    if op.perm == (0, 2, 1, 3):
        found = _split_reshape(index, dims, op.root, 4)
        return None if found is None else _HeadSplit(found[0], *found[1])
    if op.perm != (0, 1, 2, 3):
        return None
    unstacked = _unstacked(index, dims, op.root)
    if unstacked is None:
        return None
    stacked, i = unstacked
    transpose = index.producer.get(stacked)
    if transpose is None or transpose.op_type != "Transpose" or transpose.domain:
        return None
    if list(transpose.attr("perm") or []) != [2, 0, 3, 1, 4]:
        return None
    found = _split_reshape(index, dims, transpose.inputs[0], 5)
    if found is None or not i < found[1][0]:
        return None
    parts, heads, size = found[1]
    return _HeadSplit(found[0], heads, size, (i, parts))


def _split_reshape(index: GraphIndex, dims: DimTracer, value: str, rank: int) -> tuple[str, list[int]] | None:
    """(x, sizes) when ``value`` = Reshape(x, [x.d0, x.d1, *sizes]) with x 3-D and the sizes
    known; dims 0 and 1 of the target must be provably x's."""
    reshape = index.producer.get(value)
    if reshape is None or reshape.op_type != "Reshape" or reshape.domain:
        return None
    x = reshape.inputs[0]
    elems = dims.elements(reshape.inputs[1])
    if dims.rank(x) != 3 or dims.rank(value) != rank or elems is None or len(elems) != rank:
        return None
    sizes = [dims.key(value, axis) for axis in range(2, rank)]
    if not all(isinstance(d, int) and d > 0 for d in sizes):
        return None
    copy = not reshape.attr("allowzero", 0)
    if not all(_is_dim(dims, e, copy, [(x, i)]) for i, e in enumerate(elems[:2])):
        return None
    return x, sizes


def _unstacked(index: GraphIndex, dims: DimTracer, value: str) -> tuple[str, int] | None:
    """(stacked, i) when ``value`` is stacked[i] along axis 0: Gather of a constant scalar
    index, or one output of a Split into ones followed by Squeeze of axis 0."""
    node = index.producer.get(value)
    if node is None or node.domain:
        return None
    if node.op_type == "Gather" and node.attr("axis", 0) == 0:
        i = index.constant(node.inputs[1])
        return (node.inputs[0], int(i)) if i is not None and i.ndim == 0 and i >= 0 else None
    if node.op_type != "Squeeze" or dims.rank(node.inputs[0]) is None:
        return None
    split = index.producer.get(node.inputs[0])
    if dims.axes(node, dims.rank(node.inputs[0])) != [0] or split is None or split.op_type != "Split" or split.domain:
        return None
    stacked = split.inputs[0]
    if split.attr("axis", 0) != 0 or dims.key(stacked, 0) != len(split.outputs):
        return None
    sizes = index.constant(split.inputs[1]) if len(split.inputs) > 1 and split.inputs[1] else split.attr("split")
    if sizes is not None and any(int(n) != 1 for n in np.asarray(sizes).reshape(-1)):
        return None
    return stacked, split.outputs.index(node.inputs[0])


def _head_merge(index: GraphIndex, dims: DimTracer, y: str, q3: str, width: int) -> tuple[Node, Node] | None:
    """Transpose(0, 2, 1, 3) → Reshape to (batch, q_len, width), the inverse of the head split."""
    transpose = index.only_consumer(y)
    if transpose is None or transpose.op_type != "Transpose" or transpose.domain:
        return None
    if list(transpose.attr("perm") or []) != [0, 2, 1, 3]:
        return None
    t = transpose.outputs[0]
    readers = index.consumers.get(t, [])
    reshapes = [n for n in readers if n.op_type == "Reshape" and not n.domain and n.inputs[0] == t]
    if len(reshapes) != 1 or t in index.outputs:
        return None
    reshape = reshapes[0]
    # Shape(t) may feed the Reshape's own target (PyTorch exports do), and nothing else
    others = [n for n in readers if n is not reshape]
    if any(n.op_type != "Shape" for n in others) or not _only_feed(index, others, reshape.inputs[1]):
        return None
    elems = dims.elements(reshape.inputs[1])
    if elems is None or len(elems) != 3:
        return None
    copy = not reshape.attr("allowzero", 0)
    leading = [_is_dim(dims, e, copy, [(t, i), (q3, i)]) for i, e in enumerate(elems[:2])]
    last = elems[2] == width or (elems[2] == -1 and all(leading))
    return (transpose, reshape) if all(leading) and last else None


def _only_feed(index: GraphIndex, starts: list[Node], target: str) -> bool:
    """Whether everything computed from ``starts`` serves only to compute ``target`` (within
    the integer shape arithmetic below it, up to its Shape nodes)."""
    region: set[int] = set()
    stack = [target]
    while stack:
        node = index.producer.get(stack.pop())
        if node is not None and id(node) not in region:
            region.add(id(node))
            if node.op_type != "Shape":
                stack.extend(name for name in node.inputs if name)
    stack = list(starts)
    while stack:
        node = stack.pop()
        if id(node) not in region or any(o in index.outputs for o in node.outputs):
            return False
        stack.extend(r for o in node.outputs if o for r in index.consumers.get(o, []) if o != target)
    return True


def _is_dim(dims: DimTracer, elem: Key | None, copy: bool, sources: list[tuple[str, int]]) -> bool:
    """Whether a Reshape target element gives the dim at position ``sources[0][1]``, known to be
    each of ``sources``: a 0 that copies it, or a dim traced to one of them."""
    if elem == 0:
        return copy
    return elem not in (None, -1) and any(dims.agree(elem, dims.key(v, a)) for v, a in sources)


# ---------------------------------------------------------------------------------------------
# Rewriting
# ---------------------------------------------------------------------------------------------


def _rewrite(
    graph: Graph, index: GraphIndex, dims: DimTracer, m: _Match, opset: int, names: NameGenerator,
    masks: MaskBuilder,
) -> str:
    made: list[Node] = []
    core = m.scores.chain + [m.softmax] + m.tail + [m.pv]
    mask, causal = masks.build(index, dims, m.scores.mask_ops, m.dims, dims.dtype(m.softmax.inputs[0]), made)
    attrs: dict = {"scale": float(m.scale)}
    if causal:
        attrs["is_causal"] = 1
    if m.splits is not None:
        inputs = _unpacked_inputs(graph, m.splits, opset, names, made)
        attrs["q_num_heads"], attrs["kv_num_heads"] = m.splits[0].heads, m.splits[1].heads
        core += list(m.merge)
        anchor = m.merge[1]
        kind = f"Attention (3-D, {m.splits[0].heads} heads"
    else:
        inputs = [_transposed(op, names, made) for op in (m.q, m.k, m.v)]
        anchor = m.pv
        heads = m.dims[1]
        kind = f"Attention (4-D, {heads} heads" if isinstance(heads, int) else "Attention (4-D"
    kind += ", causal)" if attrs.get("is_causal") else ")"
    made.append(Node("Attention", inputs + ([mask] if mask else []), [anchor.outputs[0]], attrs,
                     name=names(m.softmax.name.replace("Softmax", "Attention") if m.softmax.name else "Attention")))
    position = next(i for i, n in enumerate(graph.nodes) if n is anchor)
    graph.nodes[position:position + 1] = made
    remove_nodes(graph, [n for n in core if n is not anchor])
    remove_unread_producers(graph, core + m.q.walked + m.k.walked + m.v.walked)
    return kind


def _unpacked_inputs(graph: Graph, splits: tuple, opset: int, names: NameGenerator, made: list[Node]) -> list[str]:
    """Q, K and V as (batch, seq, heads * size): x itself, or for a packed part its slice of
    x's last axis (one Split serves every part read from the same x)."""
    slices: dict[str, list[str]] = {}
    inputs = []
    for split in splits:
        if split.part is None:
            inputs.append(split.x)
            continue
        i, n = split.part
        if split.x not in slices:
            slices[split.x] = [names(f"{split.x}_part{j}") for j in range(n)]
            widths = np.full(n, split.heads * split.size, np.int64)
            if opset >= 13:
                sizes = add_initializer(graph, names, "split_widths", widths)
                node = Node("Split", [split.x, sizes], slices[split.x], {"axis": 2})
            else:
                node = Node("Split", [split.x], slices[split.x], {"axis": 2, "split": widths.tolist()})
            node.name = names("Split")
            made.append(node)
        inputs.append(slices[split.x][i])
    return inputs


def _transposed(op: _Operand, names: NameGenerator, made: list[Node]) -> str:
    if op.perm == (0, 1, 2, 3):
        return op.root
    out = names(f"{op.root}_heads")
    made.append(Node("Transpose", [op.root], [out], {"perm": list(op.perm)}, name=names("Transpose")))
    return out
