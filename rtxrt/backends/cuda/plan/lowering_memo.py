"""Identical nodes of one plan are lowered once.

A lowering is a function of what its LowerContext shows it: the node's op, attributes (a
fused body's structure), which of its inputs are the same value, the forms of its inputs and
outputs (in a generic plan, each varying dim with its expression and range), the opset, the
GPU, the tactic wishes, and the constant inputs it reads (``LowerContext.reads`` records
which, and whether it made a per-node constant). Two nodes alike in all of that get the same
programs: a transformer's layers, a ResNet stage's blocks, the casts between them. Planning
a generic engine's new shape lowers every node again, and that is most of its first run.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ....ir.graph import Graph
from ..codegen.dynamic import DimInt, dim_key, symbol_key
from ..ops.context import NODE_IDENTITY, LowerContext
from .forms import TensorForm
from .program import NodeProgram

_SMALL_CONSTANT = 4096  # constants up to this many elements are compared by value, larger ones by name


class LoweringMemo:
    """Programs by lowering key; each entry also holds the constants its lowering read."""

    def __init__(self) -> None:
        self._entries: dict[tuple, list[tuple[tuple, list[NodeProgram]]]] = {}

    def find(self, ctx: LowerContext, key: tuple | None) -> list[NodeProgram] | None:
        """The programs of a node lowered before whose ``key`` (lowering_key, or one as
        telling) and reads are the same as this one's, or None."""
        for reads, programs in self._entries.get(key, ()) if key is not None else ():
            if reads == read_values(ctx, [r[0] for r in reads]):
                return programs
        return None

    def keep(self, key: tuple | None, ctx: LowerContext, reads: set, programs: list[NodeProgram]) -> None:
        if key is not None:
            order = sorted(reads, key=str)
            self._entries.setdefault(key, []).append((read_values(ctx, order), programs))


def lowering_key(ctx: LowerContext, symbolic: bool = False) -> tuple | None:
    """Everything a lowering sees of its node except the constants it may read; None where
    the node holds something without a key (then it is lowered every time). ``symbolic``:
    each dim that varies over a generic plan's profile as its expression and range without
    its value, and a fused body's values by type and rank (their sizes follow the node's):
    the nodes a lowering template may serve at other shapes (lowering_templates.py)."""
    node = ctx.node
    try:
        attrs = _freeze(node.attrs, symbolic)
    except TypeError:
        return None
    same_as = tuple(node.inputs.index(n) if n else -1 for n in node.inputs)  # x*x is not x*y
    forms = symbolic_form_key if symbolic else form_key
    return (node.op_type, node.domain, node.precision, attrs, same_as, tuple(bool(o) for o in node.outputs),
            tuple(map(forms, ctx.inputs)), tuple(map(forms, ctx.outputs)),
            tuple(c is not None for c in ctx.consts), ctx.opset, ctx.arch, ctx.sm_count, ctx.tune, ctx.wanted)


def form_key(form: TensorForm | None) -> tuple | None:
    """A form with each dim as ``dim_key`` has it (a DimInt equals its value as an int)."""
    return None if form is None else (form.dtype, tuple(map(dim_key, form.shape)), form.layout)


def symbolic_form_key(form: TensorForm | None) -> tuple | None:
    """A form with each varying dim as its expression and range, without its value."""
    return None if form is None else (form.dtype, tuple(symbol_key(d) if type(d) is DimInt else d for d in form.shape),
                                      form.layout)


def read_values(ctx: LowerContext, reads: list) -> tuple:
    """What the lowering of ``ctx`` read beyond its key: small constants by value, large ones
    (weights) by name, and the node itself where it made a constant of its own."""
    out = []
    for read in reads:
        if read == NODE_IDENTITY:
            out.append((read, ctx.node.name or ctx.node.label))
            continue
        value = ctx.consts[read] if read < len(ctx.consts) else None
        if value is None:
            out.append((read, None))
        elif value.size <= _SMALL_CONSTANT:
            out.append((read, _array_key(value)))
        else:
            out.append((read, "name", ctx.node.inputs[read]))
    return tuple(out)


def _array_key(value: np.ndarray) -> tuple:
    return ("array", value.dtype.str, value.shape, value.tobytes())


def _freeze(value: Any, symbolic: bool = False) -> Any:
    """A hashable stand-in for an attribute value (TypeError where there is none)."""
    if isinstance(value, np.ndarray):
        return _array_key(value)
    if isinstance(value, Graph):
        return _graph_key(value, symbolic)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v, symbolic)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, symbolic) for v in value)
    hash(value)
    return value


def _graph_key(graph: Graph, symbolic: bool = False) -> tuple:
    """A body graph's structure, its values renamed by first appearance (the names differ
    from node to node where the bodies are alike); ``symbolic``: their types without sizes."""
    names: dict[str, int] = {}

    def ref(name: str) -> int:
        return names.setdefault(name, len(names)) if name else -1

    inputs = tuple(map(ref, graph.inputs))
    constants = tuple((ref(n), _array_key(a)) for n, a in graph.initializers.items())
    nodes = tuple((n.op_type, n.domain, n.precision, _freeze(n.attrs, symbolic), tuple(map(ref, n.inputs)),
                   tuple(map(ref, n.outputs))) for n in graph.nodes)
    outputs = tuple(map(ref, graph.outputs))
    typed = tuple(sorted((i, _type_key(graph.types.get(n), symbolic), _type_key(graph.storage.get(n), symbolic))
                         for n, i in names.items() if n in graph.types or n in graph.storage))
    return ("graph", inputs, constants, nodes, outputs, typed)


def _type_key(t: Any, symbolic: bool) -> Any:
    if not symbolic or t is None or getattr(t, "shape", None) is None:
        return t
    return (t.dtype, len(t.shape))
