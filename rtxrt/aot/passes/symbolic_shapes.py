"""Symbolic shape analysis: the values of the small integer vectors that compute shapes
(Shape → Gather → Unsqueeze → Concat → Reshape, Shape → Slice, Equal/Where over shapes, Range),
and the types of all values with every unknown dim named.

Vectors are evaluated element by element. An element is a size (int), a symbol (str: a dim
such as "batch", the same run-time value wherever it appears, never negative) or unknown
(None). To see through the "?" dims of the graph's types, the graph is typed once more with
every unknown dim named by a fresh symbol where it first appears; the type rules then carry
that name wherever the dim provably goes. Two dims or elements with the same symbol are equal
whenever the graph runs: shape_folding folds and merges values by that, and fuse_attention
(through DimTracer) proves that Reshapes keep the batch and sequence dims.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Dim, Model, Node, TensorType
from ...ir.ops import InferenceContext, elementwise_ops, get_schema
from ...ir.ops.infer_helpers import broadcast_shapes
from ...ir.rewrite import NameGenerator, constants
from ..options import AotOptions
from .constant_folding import evaluate, foldable, is_constant_node

Elem = Union[int, str, None]
# Vectors longer than this are not shapes; they are left to constant folding.
MAX_ELEMENTS = 64


@dataclass(frozen=True)
class Partial:
    """A rank-0 or rank-1 integer (or bool) tensor known element by element."""

    elems: tuple[Elem, ...]
    dtype: DType
    scalar: bool = False

    @property
    def known(self) -> bool:
        return all(isinstance(e, int) for e in self.elems)

    def array(self) -> np.ndarray:
        values = np.array(self.elems, dtype=self.dtype.numpy)
        return values.reshape(()) if self.scalar else values


class ShapeAnalysis:
    """One pass over the graph in order that tracks, next to each small integer vector's
    partial value (``values``), the type of every value with each unknown dim named by a fresh
    symbol (``types``: a name for one unknown run-time value, spread only by the type rules),
    so that a dim read by Shape can be recognized downstream even where the graph's types say
    "?". It leaves the graph as it is; what a rewrite can make of it is listed:
    ``reshape_targets``, the constant target each Reshape can take (see _reshape_target), and
    ``keeps_shape``, the Expands and Reshapes whose output provably has their input's type."""

    def __init__(self, model: Model, options: AotOptions):
        self.model, self.graph, self.options = model, model.graph, options
        self.values: dict[str, Partial] = {}
        self.types: dict[str, TensorType] = dict(self.graph.types)
        self.constants: dict[str, np.ndarray] = constants(self.graph)
        self.fresh = NameGenerator(self.graph)
        self.reshape_targets: list[tuple[Node, np.ndarray]] = []
        self.keeps_shape: list[Node] = []
        # Symbols that stand for min(n, D) of a sliced table, mapped to n.
        self.prefix_of: dict[str, str] = {}

    def run(self) -> "ShapeAnalysis":
        for name, array in self.graph.initializers.items():
            self.types[name] = TensorType.of(array)
        for name, array in constants(self.graph).items():
            self._record(name, array)
        for name in self.graph.inputs:
            self._name(name, self.types.get(name))
        for node in self.graph.nodes:
            target = None
            if is_constant_node(node):
                self.constants[node.outputs[0]] = node.attrs.get("value")
                self._record(node.outputs[0], node.attrs.get("value"))
            elif not node.domain:
                self._evaluate(node)
                if node.op_type == "Reshape" and (target := self._reshape_target(node)) is not None:
                    self.reshape_targets.append((node, target))
            self._name_unknown_dims(node, target)
            if node.op_type in ("Expand", "Reshape") and not node.domain and self._keeps_shape(node):
                self.keeps_shape.append(node)
        return self

    def _keeps_shape(self, node: Node) -> bool:
        """Whether the output provably has the input's type (symbols included)."""
        a, b = self.types.get(node.inputs[0]), self.types.get(node.outputs[0])
        return a is not None and a == b and a.shape is not None and all(d is not None for d in a.shape)

    def _record(self, name: str, array: object) -> None:
        if not isinstance(array, np.ndarray) or array.ndim > 1 or array.size > MAX_ELEMENTS:
            return
        if array.dtype.kind in "iub":
            self.values[name] = Partial(tuple(int(v) for v in array.reshape(-1)), DType.from_numpy(array.dtype), array.ndim == 0)
            self.constants[name] = array

    def _evaluate(self, node: Node) -> None:
        inputs = [self.values.get(name) if name else None for name in node.inputs]
        if node.inputs and all(p is not None and p.known for p, name in zip(inputs, node.inputs) if name):
            self._evaluate_known(node, inputs)
            return
        rule = _RULES.get(node.op_type)
        out = rule(node, inputs, self.types) if rule else None
        if out is None and node.outputs[0]:
            out = self._unknown(node.outputs[0])
        if out is not None and node.outputs[0]:
            self.values[node.outputs[0]] = out
            if out.known:
                self.constants[node.outputs[0]] = out.array()

    def _unknown(self, name: str) -> Partial | None:
        """A small integer vector that no rule evaluates: its length is still worth knowing."""
        t = self.graph.types.get(name)
        if t is None or not t.is_static or len(t.shape) > 1 or not (t.dtype.is_integer or t.dtype == DType.BOOL):
            return None
        length = t.shape[0] if t.shape else 1
        return Partial((None,) * length, t.dtype, not t.shape) if length <= MAX_ELEMENTS else None

    def _evaluate_known(self, node: Node, inputs: list[Partial | None]) -> None:
        """Run the kernel of a node whose inputs are all known, when its outputs are small vectors."""
        for name in node.outputs:
            t = self.types.get(name) if name else None
            if t is None or t.rank is None or t.rank > 1 or (t.is_static and int(np.prod(t.shape)) > MAX_ELEMENTS):
                return
        if not foldable(node):
            return
        arrays = [p.array() if p else None for p in inputs]
        outputs = evaluate(node, arrays, self.model.opset, self.graph, self.options.fold_max_bytes)
        for name, array in zip(node.outputs, outputs or ()):
            if name:
                self._record(name, array)

    def _reshape_target(self, node: Node) -> np.ndarray | None:
        """The constant target a Reshape whose target is computed at run time can take when
        the input's type decides it: an element that is the input's dim at the same position
        becomes 0 (copy it), and then a single element still unknown becomes -1 when all the
        others are positive sizes (next to a copied dim that may be 0, -1 would be ambiguous)."""
        target = self.values.get(node.inputs[1])
        data = self.types.get(node.inputs[0])
        if target is None or target.known or target.scalar or node.attr("allowzero", 0):
            return None
        dims = data.shape if data is not None and data.shape is not None else ()
        elems = [0 if isinstance(e, str) and i < len(dims) and dims[i] == e else e for i, e in enumerate(target.elems)]
        unknown = [i for i, e in enumerate(elems) if not isinstance(e, int)]
        if len(unknown) > 1 or (unknown and any(e <= 0 for e in elems if isinstance(e, int))):
            return None
        if unknown:
            elems[unknown[0]] = -1
        return np.array(elems, dtype=np.int64)

    def _name_unknown_dims(self, node: Node, reshape_target: np.ndarray | None = None) -> None:
        """Type the node's outputs from the named input types; unknown dims get fresh symbols.
        A Reshape given a constant target is typed as it will be with that target (a new
        initializer, so a value without a type of its own)."""
        schema = get_schema(node.op_type, node.domain)
        types = [self.types.get(n) if n else None for n in node.inputs]
        values = [self.constants.get(n) if n else None for n in node.inputs]
        if reshape_target is not None:
            types[1], values[1] = None, reshape_target
        ctx = InferenceContext(node, self.model.opset, types, values)
        try:
            inferred = schema.infer(ctx) if schema is not None else []
        except Exception:  # the graph's own types stand
            inferred = []
        for i, name in enumerate(node.outputs):
            if not name:
                continue
            t = _better(inferred[i] if i < len(inferred) else None, self.graph.types.get(name))
            if i == 0 and t is not None and t.shape is not None:
                t = self._refine(node, t)
            self._name(name, t)

    def _refine(self, node: Node, t: TensorType) -> TensorType:
        """Fill dims of output 0 that the type rules leave unknown but partial values decide:
        the length of Range(0, n, 1), the shape of Expand/Reshape/ConstantOfShape to a partly
        known target, and the Slice-then-broadcast of position-embedding tables."""
        p = [self.values.get(name) if name else None for name in node.inputs]
        x = self.types.get(node.inputs[0]) if node.inputs else None
        better: tuple[Dim, ...] | None = None
        if node.op_type == "Range" and all(p) and p[0].elems == (0,) and p[2].elems == (1,):
            better = p[1].elems
        elif node.op_type in ("Reshape", "ConstantOfShape") and p[-1] is not None and not p[-1].scalar:
            if not any(e in (0, -1) for e in p[-1].elems):
                better = p[-1].elems
        elif node.op_type == "Expand" and p[1] is not None and x is not None and x.shape is not None:
            try:
                better = broadcast_shapes([x.shape, p[1].elems])
            except ValueError:
                better = None
        elif node.op_type == "Slice":
            better = self._slice_prefix(p, x)
        elif not node.domain and node.op_type in elementwise_ops():  # output shape: the inputs' broadcast
            better = self._broadcast_prefix(node)
        if better is None or len(better) != len(t.shape):
            return t
        return TensorType(t.dtype, tuple(b if d is None else d for d, b in zip(t.shape, better)))

    def _slice_prefix(self, p: list[Partial | None], x: TensorType | None) -> tuple[Dim, ...] | None:
        """``table[:n]`` along an axis of static size D: min(n, D), named by a fresh symbol
        remembered as "at most n" (see _broadcast_prefix)."""
        if x is None or x.shape is None or len(p) < 4 or any(q is None or len(q.elems) != 1 for q in p[1:4]):
            return None
        if len(p) > 4 and (p[4] is None or p[4].elems != (1,)):
            return None
        (start,), (end,), (axis,) = p[1].elems, p[2].elems, p[3].elems
        if start != 0 or not isinstance(end, str) or not isinstance(axis, int) or not -len(x.shape) <= axis < len(x.shape):
            return None
        if not isinstance(x.shape[axis], int) or x.shape[axis] < 1:
            return None
        symbol = self.fresh(f"?min({end},{x.shape[axis]})")
        self.prefix_of[symbol] = end
        dims: list[Dim] = list(x.shape)
        dims[axis] = symbol
        return tuple(dims)

    def _broadcast_prefix(self, node: Node) -> tuple[Dim, ...] | None:
        """Broadcasting n against min(n, D) (D >= 1) gives n whenever it runs: if n <= D both
        are n; otherwise min is D < n, which broadcasts against n only if D is 1."""
        shapes = [self.types[name].shape for name in node.inputs if name and name in self.types]
        if len(shapes) != len(node.inputs) or any(s is None for s in shapes):
            return None
        rank = max(len(s) for s in shapes)
        out: list[Dim] = []
        for axis in range(rank):
            dims = {s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0} - {1}
            prefixes = {d for d in dims if d in self.prefix_of}
            ends = {self.prefix_of[d] for d in prefixes}
            out.append(ends.pop() if len(ends) == 1 and dims - prefixes == ends else None)
        return tuple(out)

    def _name(self, name: str, t: TensorType | None) -> None:
        if t is not None and t.shape is not None:
            t = TensorType(t.dtype, tuple(f"?{name}[{axis}]" if d is None else d for axis, d in enumerate(t.shape)))
        if t is not None:
            self.types[name] = t


def _better(inferred: TensorType | None, declared: TensorType | None) -> TensorType | None:
    """Per dim, the more precise of two sound types of one value: a size, else a symbol."""
    if inferred is None or inferred.shape is None:
        return declared
    if declared is None or declared.shape is None or len(declared.shape) != len(inferred.shape):
        return inferred
    return TensorType(inferred.dtype, tuple(_better_dim(a, b) for a, b in zip(inferred.shape, declared.shape)))


def _better_dim(inferred: Dim, declared: Dim) -> Dim:
    if isinstance(inferred, int) or declared is None:
        return inferred
    if isinstance(declared, int) or inferred is None:
        return declared
    return inferred


# ---- rules for partly known inputs: each returns the partial value of output 0, or None ----

Types = dict[str, TensorType]
Rule = Callable[[Node, list, Types], "Partial | None"]


def _shape(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    t = types.get(node.inputs[0])
    if t is None or t.shape is None:
        return None
    return Partial(tuple(t.shape[slice(node.attr("start", 0), node.attr("end"))]), DType.INT64)


def _size(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    t = types.get(node.inputs[0])
    return Partial((int(np.prod(t.shape)),), DType.INT64, scalar=True) if t is not None and t.is_static else None


def _gather(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    data, indices = inputs[0], inputs[1]
    if data is None or data.scalar or indices is None or not indices.known or node.attr("axis", 0) not in (0, -1):
        return None
    n = len(data.elems)
    if not all(-n <= i < n for i in indices.elems):
        return None
    return Partial(tuple(data.elems[i] for i in indices.elems), data.dtype, indices.scalar)


def _slice(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    data, params = inputs[0], inputs[1:5]
    if data is None or data.scalar or len(params) < 2 or any(p is None or not p.known or len(p.elems) != 1
                                                             for p, name in zip(params, node.inputs[1:]) if name):
        return None
    start, end = params[0].elems[0], params[1].elems[0]
    axis = params[2].elems[0] if len(params) > 2 and params[2] else 0
    step = params[3].elems[0] if len(params) > 3 and params[3] else 1
    if axis not in (0, -1) or step <= 0:  # reversed slices clamp differently from Python's
        return None
    return Partial(data.elems[start:end:step], data.dtype)


def _concat(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    if any(p is None or p.scalar for p in inputs) or node.attr("axis") not in (0, -1):
        return None
    return Partial(tuple(e for p in inputs for e in p.elems), inputs[0].dtype)


def _reshape_like(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    """Unsqueeze, Squeeze, Reshape, Identity: the same elements at rank 0 or 1."""
    t = types.get(node.outputs[0])
    if inputs[0] is None or t is None or t.rank is None or t.rank > 1:
        return None
    return Partial(inputs[0].elems, inputs[0].dtype, t.rank == 0)


def _cast(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    to = DType(node.attr("to"))
    source = inputs[0]
    if source is None or to not in (DType.INT32, DType.INT64) or not source.dtype.is_integer:
        return None  # a narrower type could wrap a size around
    return Partial(source.elems, to, source.scalar)


def _elementwise(combine: Callable[[Elem, Elem], Elem], dtype: DType | None = None) -> Rule:
    def rule(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
        a, b = inputs[0], inputs[1]
        pairs = _broadcast(a, b)
        if pairs is None:
            return None
        return Partial(tuple(combine(x, y) for x, y in pairs), dtype or a.dtype, a.scalar and b.scalar)
    return rule


def _where(node: Node, inputs: list[Partial | None], types: Types) -> Partial | None:
    cond, a, b = inputs
    choices = _broadcast(a, b)
    if cond is None or choices is None:
        return None
    n = max(len(cond.elems), len(choices))
    if len(cond.elems) not in (1, n) or len(choices) not in (1, n):
        return None
    cond_elems = cond.elems * n if len(cond.elems) == 1 else cond.elems
    choices = choices * n if len(choices) == 1 else choices
    elems = tuple(_pick(c, x, y) for c, (x, y) in zip(cond_elems, choices))
    return Partial(elems, a.dtype, cond.scalar and a.scalar and b.scalar)


def _pick(cond: Elem, x: Elem, y: Elem) -> Elem:
    if isinstance(cond, int):
        return x if cond else y
    return x if x == y and x is not None else None


def _broadcast(a: Partial | None, b: Partial | None) -> list[tuple[Elem, Elem]] | None:
    if a is None or b is None:
        return None
    if len(a.elems) == len(b.elems):
        return list(zip(a.elems, b.elems))
    if len(a.elems) == 1:
        return [(a.elems[0], y) for y in b.elems]
    if len(b.elems) == 1:
        return [(x, b.elems[0]) for x in a.elems]
    return None


def _arith(op: Callable[[int, int], int], identity: int, commutative: bool) -> Callable[[Elem, Elem], Elem]:
    def combine(x: Elem, y: Elem) -> Elem:
        if isinstance(x, int) and isinstance(y, int):
            return op(x, y)
        if y == identity:
            return x
        return y if commutative and x == identity else None
    return combine


def _equal(x: Elem, y: Elem) -> Elem:
    if isinstance(x, int) and isinstance(y, int):
        return int(x == y)
    if isinstance(x, str) and x == y:
        return 1
    if (isinstance(x, str) and isinstance(y, int) and y < 0) or (isinstance(y, str) and isinstance(x, int) and x < 0):
        return 0  # a dim is never negative
    return None


_RULES: dict[str, Rule] = {
    "Shape": _shape,
    "Size": _size,
    "Gather": _gather,
    "Slice": _slice,
    "Concat": _concat,
    "Unsqueeze": _reshape_like,
    "Squeeze": _reshape_like,
    "Reshape": _reshape_like,
    "Identity": _reshape_like,
    "Cast": _cast,
    "Add": _elementwise(_arith(operator.add, 0, True)),
    "Sub": _elementwise(_arith(operator.sub, 0, False)),
    "Mul": _elementwise(_arith(operator.mul, 1, True)),
    "Equal": _elementwise(_equal, DType.BOOL),
    "Where": _where,
}

