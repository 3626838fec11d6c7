"""decompose's Einsum rule: Einsum → Transpose, Reshape, MatMul, ReduceSum, Mul, Squeeze,
Unsqueeze (Identity for a copy), with numpy.einsum's semantics. See decompose.py's docstring
for what is handled; anything else leaves the node as it is.

Each label (a letter, or one dim of the ellipsis, numbered from the right so that operands with
fewer ellipsis dims broadcast as in numpy) has one size. A label whose dim is a static 1 in an
operand while another operand has it at another size broadcasts: that operand drops the dim
(Squeeze). Then every operand sums out the labels only it has and the output lacks (ReduceSum),
and the operands are contracted pairwise, left to right. A pair with labels to contract is a
batched MatMul: each operand transposed to [batch..., kept..., contracted...] (B: [batch...,
contracted..., kept...]), its kept and contracted labels merged into one dim each by a Reshape
(without batch labels A's kept labels stay apart: MatMul broadcasts B over them), the product
split again and transposed to the result's order. A pair without any is a Mul:
both operands transposed to the result's order, with 1s for the labels they lack.

Reshapes copy dims with 0 and infer one with -1; a target with more varying dims than that
allows takes them from Shape/Gather/ReduceProd/Concat of the inputs, which the CUDA planner
computes when it plans. All analysis happens before anything is emitted: a rejected equation
leaves no trace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Dim, Node
from ...ir.rewrite import GraphIndex

if TYPE_CHECKING:
    from .decompose_emitter import Emitter

Slot = tuple[str, ...]  # the labels merged into one dim; () is a dim of 1
_DTYPES = (DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64)  # MatMul's float types
_ELLIPSIS = "..."


@dataclass
class _Term:
    """A value and the label of each of its axes (no label twice)."""

    name: str
    labels: list[str]


@dataclass
class _Plan:
    """What the rewrite needs, all checked: the operands, the axes each drops first (``sums``:
    with a ReduceSum, else they are all static 1s and a Squeeze drops them), the output's
    labels, each label's size and a (value, axis) holding it at run time."""

    operands: list[_Term]
    drops: list[list[int]]
    sums: list[bool]
    output: list[str]
    dims: dict[str, Dim]
    sources: dict[str, tuple[str, int]]


# --------------------------------------------------------------------------- the equation


def _term_labels(term: str, rank: int | None) -> tuple[list[str | None], int] | None:
    """A term's labels, None marking where its ellipsis is, and the ellipsis' rank (the
    operand's ``rank`` minus its letters; with ``rank`` None, the ellipsis is left at 0 dims)."""
    if term.count(_ELLIPSIS) > 1:
        return None
    before, dots, after = term.partition(_ELLIPSIS)
    letters = before + after
    if not all(c.isascii() and c.isalpha() for c in letters):
        return None
    extra = 0 if rank is None else rank - len(letters)
    if extra < 0 or (not dots and extra):
        return None
    return [*before, *([None] if dots else []), *after], extra


def _expand(labels: list[str | None], extra: int) -> list[str]:
    """The labels with the ellipsis as ``extra`` labels, ".k" being k dims from its right end."""
    out: list[str] = []
    for label in labels:
        out += [f".{extra - 1 - k}" for k in range(extra)] if label is None else [label]
    return out


def parse_equation(equation: str, ranks: Sequence[int]) -> tuple[list[list[str]], list[str]] | None:
    """The labels of every operand's axes and of the output's, or None where the equation is
    malformed, does not fit operands of these ranks, or repeats a label in the output."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks) or "->" in rhs or "," in rhs:
        return None
    parsed = [_term_labels(term, rank) for term, rank in zip(terms, ranks)]
    if any(p is None for p in parsed):
        return None
    inputs = [_expand(labels, extra) for labels, extra in parsed]
    ellipsis = max((extra for _, extra in parsed), default=0)
    if arrow:
        out = _term_labels(rhs, None)
        if out is None or (ellipsis and None not in out[0]):
            return None  # ellipsis dims missing from an explicit output: numpy rejects it
        output = _expand(out[0], ellipsis)
    else:  # the ellipsis, then the letters used once, sorted
        letters = [c for c in lhs if c.isalpha()]
        output = _expand([None], ellipsis) + sorted(c for c in set(letters) if letters.count(c) == 1)
    used = {label for labels in inputs for label in labels}
    if len(set(output)) != len(output) or not set(output) <= used:
        return None
    return inputs, output


# --------------------------------------------------------------------------- sizes and broadcasting


def _plan(names: list[str], inputs: list[list[str]], output: list[str], shapes: list[tuple[Dim, ...]]) -> _Plan | None:
    """Check sizes and decide the drops; None where an operand repeats a label (a diagonal), a
    dim is a static 0, or a label's sizes in two operands are not provably equal."""
    if any(len(set(labels)) != len(labels) for labels in inputs):
        return None
    if any(d == 0 for shape in shapes for d in shape):
        return None  # a static 0 would read as "copy" in a Reshape
    sizes: dict[str, list[Dim]] = {}
    for labels, shape in zip(inputs, shapes):
        for label, d in zip(labels, shape):
            sizes.setdefault(label, []).append(d)
    # a static 1 broadcasts against any other size: that operand drops the dim
    broadcast = {label for label, ds in sizes.items() if 1 in ds and any(d != 1 for d in ds)}
    operands, dims, sources = [], {}, {}
    kept: list[list[str]] = []
    for name, labels, shape in zip(names, inputs, shapes):
        kept.append([])
        for axis, (label, d) in enumerate(zip(labels, shape)):
            if label in broadcast and d == 1:
                continue
            if label in dims and (d is None or d != dims[label]):
                return None  # unknown, or two symbols that may differ (or broadcast) at run time
            dims[label] = d
            if not isinstance(d, int):
                sources.setdefault(label, (name, axis))
            kept[-1].append(label)
        operands.append(_Term(name, labels))
    owners = {label: sum(label in k for k in kept) for label in dims}
    drops, sums = [], []
    for term, k in zip(operands, kept):
        summed = [label for label in k if owners[label] == 1 and label not in output]
        drops.append([axis for axis, label in enumerate(term.labels) if label not in k or label in summed])
        sums.append(any(dims[label] != 1 for label in summed))
    return _Plan(operands, drops, sums, output, dims, sources)


# --------------------------------------------------------------------------- the rewrite


class _Builder:
    """Emits one planned Einsum's nodes through the decompose emitter."""

    def __init__(self, e: "Emitter", plan: _Plan):
        self.e, self.plan = e, plan
        self._shapes: dict[str, str] = {}
        self.ops: set[str] = set()

    def run(self) -> str:
        """The nodes; returns the value holding the result."""
        terms = [self._drop(term, axes, summed) for term, axes, summed in
                 zip(self.plan.operands, self.plan.drops, self.plan.sums)]
        x = terms[0]
        for i, y in enumerate(terms[1:], 1):
            later = {label for t in terms[i + 1:] for label in t.labels}
            x = self._pair(x, y, set(self.plan.output) | later, last=i == len(terms) - 1)
        return self._transpose(x, self.plan.output).name

    # ---------------------------------------------------------------- single operands

    def _drop(self, term: _Term, axes: list[int], summed: bool) -> _Term:
        """``term`` without ``axes``: summed (ReduceSum, keepdims 0) or squeezed static 1s."""
        if not axes:
            return term
        labels = [label for axis, label in enumerate(term.labels) if axis not in axes]
        if summed:
            self.ops.add("ReduceSum")
            return _Term(self.e.reduce("ReduceSum", term.name, axes, keepdims=0), labels)
        return _Term(self.e.squeeze(term.name, axes), labels)

    def _transpose(self, x: _Term, order: list[str]) -> _Term:
        perm = [x.labels.index(label) for label in order]
        if perm == list(range(len(perm))):
            return x
        self.ops.add("Transpose")
        return _Term(self.e.op("Transpose", [x.name], {"perm": perm}), list(order))

    # ---------------------------------------------------------------- pairs

    def _pair(self, a: _Term, b: _Term, needed: set[str], last: bool) -> _Term:
        """``a`` and ``b`` contracted over the labels both have that are not ``needed`` later.
        The result is in the output's order when ``last``, else in the cheapest one."""
        batch = [label for label in a.labels if label in b.labels and label in needed]
        contracted = [label for label in a.labels if label in b.labels and label not in needed]
        left = [label for label in a.labels if label not in b.labels]
        right = [label for label in b.labels if label not in a.labels]
        if not contracted:
            order = self.plan.output if last else a.labels + right
            return self._multiply(a, b, order)
        return self._matmul(a, b, batch, left, contracted, right)

    def _multiply(self, a: _Term, b: _Term, order: list[str]) -> _Term:
        """The elementwise product, broadcast to ``order`` (every label of a and b)."""
        self.ops.add("Mul")
        return _Term(self.e.op("Mul", [self._aligned(a, order), self._aligned(b, order)]), list(order))

    def _aligned(self, x: _Term, order: list[str]) -> str:
        """``x`` transposed to ``order`` with 1s for the labels it lacks; leading 1s are left
        out, which broadcasting adds."""
        x = self._transpose(x, [label for label in order if label in x.labels])
        present = [i for i, label in enumerate(order) if label in x.labels]
        if not present:
            return x.name
        lead = present[0]
        missing = [i - lead for i in range(lead, len(order)) if order[i] not in x.labels]
        return self.e.unsqueeze(x.name, missing) if missing else x.name

    def _matmul(self, a: _Term, b: _Term, batch: list[str], left: list[str], contracted: list[str],
                right: list[str]) -> _Term:
        """[batch..., M, K] @ [batch..., K, N] with M, K, N the merged left, contracted and
        right labels; the batch dims stay apart (they are equal: MatMul broadcasts none).
        Without batch labels, B is one matrix and A's left labels stay apart too: MatMul
        broadcasts B over them, and the GPU folds them into M."""
        self.ops.add("MatMul")
        rows = _single(left) if left and not batch else [tuple(left)]
        a = self._transpose(a, batch + left + contracted)
        b = self._transpose(b, batch + contracted + right)
        a_name = self._reshape(a.name, _single(a.labels), _single(batch) + rows + [tuple(contracted)])
        b_name = self._reshape(b.name, _single(b.labels), _single(batch) + [tuple(contracted), tuple(right)])
        product = self.e.op("MatMul", [a_name, b_name])
        labels = batch + left + right
        return _Term(self._reshape(product, _single(batch) + rows + [tuple(right)], _single(labels)), labels)

    # ---------------------------------------------------------------- shape-free reshapes

    def _reshape(self, x: str, have: list[Slot], want: list[Slot]) -> str:
        """``x``, whose dims are ``have``, as ``want``: static sizes as they are, a dim at its
        own index copied (0), one other inferred (-1), the rest read from the inputs' shapes."""
        if have == want:
            return x
        spec: list[int | None] = []
        for j, slot in enumerate(want):
            size = self._static(slot)
            if size is not None:
                spec.append(size)
            elif j < len(have) and have[j] == slot:
                spec.append(0)
            else:
                spec.append(-1 if -1 not in spec else None)
        if None not in spec:
            return self.e.reshape(x, spec)
        return self.e.op("Reshape", [x, self._shape_tensor(spec, want)])

    def _shape_tensor(self, spec: list[int | None], want: list[Slot]) -> str:
        """Reshape's shape input: Concat of constant runs of ``spec`` and, for its Nones, the
        sizes of ``want``'s slots computed from the inputs' shapes."""
        pieces: list[str] = []
        run: list[int] = []
        for value, slot in zip(spec, want):
            if value is not None:
                run.append(value)
                continue
            if run:
                pieces.append(self.e.constant(np.array(run, np.int64), "shape", shared=True))
                run = []
            pieces.append(self._size(slot))
        if run:
            pieces.append(self.e.constant(np.array(run, np.int64), "shape", shared=True))
        return self.e.op("Concat", pieces, {"axis": 0})

    def _size(self, slot: Slot) -> str:
        """A 1-element int64 tensor: the product of the slot's sizes, read from the inputs."""
        axes: dict[str, list[int]] = {}
        static = 1
        for label in slot:
            d = self.plan.dims[label]
            if isinstance(d, int):
                static *= d
            else:
                name, axis = self.plan.sources[label]
                axes.setdefault(name, []).append(axis)
        parts = []
        for name, indices in axes.items():
            gathered = self.e.op("Gather", [self._shape(name), self.e.constant(np.array(indices, np.int64),
                                                                               "indices", shared=True)], {"axis": 0})
            parts.append(gathered if len(indices) == 1 else self.e.reduce("ReduceProd", gathered, [0]))
        if static != 1:
            parts.append(self.e.constant(np.array([static], np.int64), "size", shared=True))
        size = parts[0]
        for part in parts[1:]:
            size = self.e.op("Mul", [size, part])
        return size

    def _shape(self, name: str) -> str:
        if name not in self._shapes:
            self._shapes[name] = self.e.op("Shape", [name])
        return self._shapes[name]

    def _static(self, slot: Slot) -> int | None:
        dims = [self.plan.dims[label] for label in slot]
        return math.prod(dims) if all(isinstance(d, int) for d in dims) else None


def _single(labels: list[str]) -> list[Slot]:
    return [(label,) for label in labels]


# --------------------------------------------------------------------------- the rule


def einsum(e: "Emitter", index: GraphIndex, node: Node) -> str | None:
    """decompose's rule for Einsum (float operands of known ranks, no diagonals)."""
    equation = node.attr("equation")
    if not isinstance(equation, str) or not node.inputs or not all(node.inputs) or len(node.outputs) != 1:
        return None
    types = [e.type_of(name) for name in node.inputs]
    if any(t is None or t.shape is None or t.dtype != types[0].dtype for t in types) or types[0].dtype not in _DTYPES:
        return None  # integer MatMul has no GPU lowering; unknown ranks cannot be planned
    parsed = parse_equation(equation, [t.rank for t in types])
    plan = None if parsed is None else _plan(list(node.inputs), *parsed, [t.shape for t in types])
    if plan is None:
        return None
    builder = _Builder(e, plan)
    result = builder.run()
    if e.nodes and e.nodes[-1].outputs[0] == result:
        e.nodes[-1].outputs[0] = node.outputs[0]  # the last op writes the Einsum's output
    else:
        e.op("Identity", [result], output=node.outputs[0])
    made = [op for op in ("MatMul", "Mul", "ReduceSum", "Transpose") if op in builder.ops] or ["Identity"]
    return "Einsum→" + "+".join(made)
