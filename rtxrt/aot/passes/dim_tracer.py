"""DimTracer: which dims of a graph's tensors, and which elements of the small integer vectors
that compute shapes (Reshape targets), are provably equal where the types alone cannot tell
("?" dims, or a size the exporter reads back through Shape). fuse_attention uses it to prove
that a Reshape keeps the batch and sequence dims.

The knowledge is the symbolic shape analysis's (symbolic_shapes.py); this is its view as keys:
a dim or element is an int size, ("sym", name) for a symbol of the analysis (equal symbols are
equal whenever the graph runs), or, where the analysis knows nothing, ("at", value, axis), a key
equal to no other dim.
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...ir.rewrite import GraphIndex
from .symbolic_shapes import ShapeAnalysis

Key = int | tuple


class DimTracer:
    """Dims and shape elements of the graph ``index`` indexes, as Keys, from an analysis of
    that graph (values added since are unknown to it: their dims are keys of their own)."""

    def __init__(self, index: GraphIndex, shapes: ShapeAnalysis):
        self.index = index
        self.shapes = shapes

    def shape(self, value: str) -> tuple | None:
        c = self.index.constant(value)
        if c is not None:
            return c.shape
        t = self.index.graph.types.get(value)
        return None if t is None else t.shape

    def rank(self, value: str) -> int | None:
        shape = self.shape(value)
        return None if shape is None else len(shape)

    def dtype(self, value: str) -> np.dtype | None:
        c = self.index.constant(value)
        if c is not None:
            return c.dtype
        t = self.index.graph.types.get(value)
        return None if t is None else np.dtype(t.dtype.numpy)

    @staticmethod
    def agree(a: Key | None, b: Key | None) -> bool | None:
        """True: the same dim; False: they differ or one may broadcast against the other (a 1
        against a dim not known to be 1); None: cannot tell."""
        if a is None or b is None:
            return None
        if a == b:
            return True
        if isinstance(a, int) and isinstance(b, int) or a == 1 or b == 1:
            return False
        return None

    def key(self, value: str, axis: int) -> Key:
        c = self.index.constant(value)
        t = self.shapes.types.get(value)
        shape = c.shape if c is not None else None if t is None else t.shape
        dim = None if shape is None or not 0 <= axis < len(shape) else _key(shape[axis])
        return ("at", value, axis) if dim is None else dim

    def elements(self, value: str) -> list | None:
        """The values of a 1-D (or scalar) int tensor as Keys (a literal 0 or -1 stays as such),
        None for an element that cannot be told; None when even the length is unknown."""
        p = self.shapes.values.get(value)
        return None if p is None else [_key(e) for e in p.elems]

    def axes(self, node: Node, rank: int) -> list[int] | None:
        """The axes of an Unsqueeze or Squeeze (input or attribute), normalized to ``rank``."""
        axes = self.index.constant(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attr("axes")
        return None if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]


def _key(elem: int | str | None) -> Key | None:
    """The key of a dim or element of the analysis: a size, a symbol, or None (unknown)."""
    return ("sym", elem) if isinstance(elem, str) else elem
