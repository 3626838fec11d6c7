"""The mask of a fused Attention: the mask ops exporters put between the scaled scores and the
Softmax, and the one additive ``attn_mask`` (or ``is_causal``) that replaces them.

Two kinds of mask op: Add(scores, mask) adds a float mask; Where(cond, scores, fill), as
masked_fill exports it, masks where cond is false with a fill that swamps any score. The
fused node gets their sum as one additive mask, folded where its parts are constant; a
constant mask of the causal pattern becomes ``is_causal`` instead.
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.rewrite import GraphIndex, NameGenerator, add_initializer
from .dim_tracer import DimTracer

# Masked entries of a Where must swamp any score (s + fill == fill): -inf, or as large as
# torch.finfo(float32).min, which transformers uses.
MASKED = -1e30

# A mask op, in the order they apply: ("add", mask) or ("where", cond, fill, scores_where_true).
MaskOp = tuple


def mask_fill(index: GraphIndex, name: str) -> float | None:
    """The value of a one-element constant that masks a score out, or None."""
    c = index.constant(name)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    fill = float(c.reshape(()))
    return fill if fill <= MASKED else None


def mask_fits(dims: DimTracer, op: MaskOp, scores: tuple, dtype) -> bool:
    """A mask (or Where condition) that broadcasts into the scores without
    enlarging them. On the key axis a width-1 mask would be padded with -inf by Attention: it is
    refused where the dims show it; a mask the dims cannot relate is taken to span the keys (no
    exporter makes one that does not: along the keys it would add one value to a whole row,
    which softmax ignores)."""
    name = op[1]
    want = np.dtype(bool) if op[0] == "where" else dtype
    if dims.dtype(name) is None or dims.dtype(name) != want:
        return False
    rank = dims.rank(name)  # at most 4: the scores' rank, which the mask's would raise
    if not rank:  # unknown, or a scalar: Attention's mask has a key axis
        return False
    for axis in range(rank):
        mine, theirs = dims.key(name, axis), scores[4 - rank + axis]
        if axis == rank - 1 and mine == 1 and theirs != 1:
            return False
        if mine != 1 and dims.agree(mine, theirs) is False:
            return False
    return True


def is_causal(dims: DimTracer, mask: np.ndarray, scores: tuple) -> bool:
    """Whether a constant mask is Attention's is_causal: 0 where key <= query, masked above,
    the same for every batch and head, and exactly as large as the scores (a mask that
    broadcast the scores up would not be)."""
    if mask.ndim < 2 or any(d != 1 for d in mask.shape[:-2]):
        return False
    rows, cols = mask.shape[-2:]
    if dims.agree(scores[2], rows) is not True or dims.agree(scores[3], cols) is not True:
        return False
    plane = mask.reshape(rows, cols)
    allowed = np.tril(np.ones((rows, cols), bool))
    return bool(np.all(plane[allowed] == 0) and np.all(plane[~allowed] <= MASKED))


class MaskBuilder:
    """Builds the ``attn_mask`` of each fused Attention of one graph. Layers that mask alike
    share one mask: one initializer per constant, one node per computed mask."""

    def __init__(self, graph: Graph, names: NameGenerator):
        self.graph = graph
        self.names = names
        self._built: dict[tuple, str] = {}  # mask ops -> the additive mask built for them

    def build(
        self, index: GraphIndex, dims: DimTracer, mask_ops: list[MaskOp], scores: tuple, dtype: np.dtype,
        made: list[Node],
    ) -> tuple[str | None, bool]:
        """(the Attention's mask input, None if none; whether it is causal instead) for
        ``mask_ops`` on scores of dims ``scores``. Nodes computing the mask go to ``made``."""
        mask = self._additive(index, mask_ops, dtype, made)
        value = index.constant(mask) if isinstance(mask, str) else mask
        if value is not None and is_causal(dims, value, scores):
            return None, True
        if isinstance(mask, np.ndarray):
            mask = self._constant(mask)
        return mask, False

    def _additive(self, index: GraphIndex, mask_ops: list[MaskOp], dtype: np.dtype, made: list[Node]) -> str | np.ndarray | None:
        """The additive mask equal to the mask ops: Add(s, a) adds a; Where(c, s, fill) is
        s + Where(c, 0, fill), since s + fill == fill for the fills allowed. Constant parts fold."""
        mask: str | np.ndarray | None = None
        for op in mask_ops:
            if op[0] == "add":
                mask = op[1] if mask is None else self._combine(index, "Add", [mask, op[1]], dtype, made)
            else:
                _, cond, fill, keep = op
                base = np.zeros((), dtype) if mask is None else mask
                args = [cond, base, fill] if keep else [cond, fill, base]
                mask = self._combine(index, "Where", args, dtype, made)
        return mask

    def _combine(self, index: GraphIndex, op: str, args: list, dtype: np.dtype, made: list[Node]) -> str | np.ndarray:
        values = [a if isinstance(a, np.ndarray) else index.constant(a) for a in args]
        if all(v is not None for v in values):
            folded = np.add(*values) if op == "Add" else np.where(*values)
            return np.asarray(folded, dtype)
        inputs = [a if isinstance(a, str) else self._constant(a) for a in args]
        key = (op, *inputs)
        if key not in self._built:
            self._built[key] = self.names("attn_mask")
            made.append(Node(op, inputs, [self._built[key]], name=self.names(f"attn_mask_{op}")))
        return self._built[key]

    def _constant(self, array: np.ndarray) -> str:
        """An initializer holding ``array``, one for every layer that builds the same mask."""
        key = ("constant", array.dtype.str, array.shape, array.tobytes())
        if key not in self._built:
            self._built[key] = add_initializer(self.graph, self.names, "attn_mask", array)
        return self._built[key]
