"""Building blocks for type inference functions shared by many operator families."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..dtypes import DType
from ..graph import Dim, Shape, TensorType
from .registry import InferFn, InferenceContext


def broadcast_shapes(shapes: Sequence[Shape | None], what: str = "inputs") -> Shape | None:
    """Numpy-style multidirectional broadcast of shapes whose dims may be symbolic."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for axis in range(rank):
        dims = [s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0]
        known = {d for d in dims if isinstance(d, int) and d != 1}
        if len(known) > 1:
            raise ValueError(f"{what} cannot broadcast: shapes {[tuple(s) for s in shapes]}")
        if known:
            out.append(known.pop())
            continue
        symbols = {d for d in dims if isinstance(d, str)}
        if any(d is None for d in dims):
            out.append(None)
        elif len(symbols) == 1:
            out.append(symbols.pop())
        elif len(symbols) > 1:
            out.append(None)  # equal at run time or an error; unknown here
        else:
            out.append(1)
    return tuple(out)


def same_as_input(index: int = 0, dtype: DType | None = None) -> InferFn:
    """Output 0 has the shape of input ``index`` and its dtype (or ``dtype``)."""

    def infer(ctx: InferenceContext) -> list[TensorType | None]:
        t = ctx.type(index)
        return [TensorType(dtype or t.dtype, t.shape)]

    return infer


def elementwise(dtype: DType | None = None, first: int = 0) -> InferFn:
    """Broadcast over every present input from ``first``; dtype of input ``first`` or given."""

    def infer(ctx: InferenceContext) -> list[TensorType | None]:
        types = [ctx.type(i) for i in range(first, len(ctx.node.inputs)) if ctx.has_input(i)]
        try:
            shape = broadcast_shapes([t.shape for t in types])
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None
        return [TensorType(dtype or types[0].dtype, shape)]

    return infer


def normalize_axis(ctx: InferenceContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def int_values(ctx: InferenceContext, i: int) -> list[int] | None:
    """The values of shape-like input ``i`` (a shape, axes, pads, repeats, a count) when known
    before run time. Such an input must be an integer tensor (a float one could hold NaN)."""
    t = ctx.input_types[i] if i < len(ctx.input_types) else None
    if t is not None and not t.dtype.is_integer:
        raise ctx.fail(f"input {i} ({ctx.node.inputs[i]!r}) must be an integer tensor, got {t}")
    array = ctx.constant(i)
    return None if array is None else [int(v) for v in np.asarray(array).reshape(-1)]
