"""The ranges a model without a profile gets for its symbolic dims, found at its first run.

Each symbolic dim ranges over [1, max(its first size, DEFAULT_DIM_MAX)] with the first shape
as opt; an input's largest shape holds at most DEFAULT_MAX_ELEMENTS elements (an image's
batch, height and width cannot all be 2048: the largest upper bounds are halved, never below
the sizes first seen). A generic engine must plan at its min and max shapes, so where the
model refuses them the ranges narrow until it takes them:

- at the min end, a model that needs sizes divisible by 2^k (a U-Net or an FPN detector
  concatenating upsampled features: 1 pixel pools to 0) gets lower bounds raised to the
  powers of two dividing the first sizes, the smallest that work, each dim put back to 1
  where the model takes that (a batch);
- at the max end (a table of 512 positions, say), the upper limit is halved, down to the
  sizes seen.

None: no range around the first shape works, and every new shape is specialized on its own.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import RtxrtError

DEFAULT_DIM_MAX = 2048  # a symbolic dim without a profile ranges over [1, max(its first size, this)]
DEFAULT_MAX_ELEMENTS = 1 << 28  # ... and an input's largest default shape holds at most this many elements

Shapes = Mapping[str, tuple[int, ...]]
Ranges = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
Declared = Mapping[str, Sequence[Any]]  # input name -> declared shape (a str or None: a symbolic dim)


def default_ranges(declared: Declared, shapes: Shapes, limit: int = DEFAULT_DIM_MAX,
                   lows: Mapping[tuple[str, int], int] | None = None) -> Ranges:
    """Each symbolic dim over [its low (1 unless ``lows`` says), max(its size here, ``limit``)],
    opt its size here; the largest shape capped at DEFAULT_MAX_ELEMENTS as the module says."""
    ranges = {}
    for name, shape in shapes.items():
        dims = declared.get(name) or (None,) * len(shape)
        low = tuple(d if isinstance(d, int) else (lows or {}).get((name, a), 1) for a, d in enumerate(dims))
        high = [d if isinstance(d, int) else max(s, limit) for d, s in zip(dims, shape)]
        while math.prod(high) > max(DEFAULT_MAX_ELEMENTS, math.prod(shape)):
            axis = max((a for a, d in enumerate(dims) if not isinstance(d, int) and high[a] > shape[a]),
                       key=lambda a: high[a], default=None)
            if axis is None:
                break
            high[axis] = max(high[axis] // 2, shape[axis])
        ranges[name] = (low, tuple(shape), tuple(high))
    return ranges


def fitting_ranges(declared: Declared, shapes: Shapes, probe: Callable[[Ranges], Any]) -> tuple[Ranges, Any] | None:
    """Default ranges the model takes at their min and max (``probe`` raises RtxrtError where
    it does not, else returns what the caller keeps), with what ``probe`` returned; None where
    none around ``shapes`` does."""
    limit = DEFAULT_DIM_MAX
    while True:
        found = _with_lows(declared, shapes, limit, probe)
        if found is not None:
            return found
        if limit <= max((max(s, default=1) for s in shapes.values()), default=1):
            return None
        limit //= 2


def _with_lows(declared: Declared, shapes: Shapes, limit: int, probe: Callable[[Ranges], Any]):
    """The lowest lower bounds (powers of two dividing the first sizes) the model takes."""
    symbolic = [(name, a) for name, shape in shapes.items()
                for a, d in enumerate(declared.get(name) or (None,) * len(shape)) if not isinstance(d, int)]
    most = {key: _power_of_two_dividing(shapes[key[0]][key[1]]) for key in symbolic}
    step = 1
    while True:
        lows = {key: min(step, most[key]) for key in symbolic}
        found = _try(declared, shapes, limit, lows, probe)
        if found is not None:
            break
        if all(low == most[key] for key, low in lows.items()):
            return None
        step *= 2
    for key in symbolic:  # back to 1 where the model takes that (a batch)
        if lows[key] > 1:
            fewer = _try(declared, shapes, limit, {**lows, key: 1}, probe)
            if fewer is not None:
                lows[key], found = 1, fewer
    return found


def _try(declared: Declared, shapes: Shapes, limit: int, lows: Mapping[tuple[str, int], int],
         probe: Callable[[Ranges], Any]) -> tuple[Ranges, Any] | None:
    ranges = default_ranges(declared, shapes, limit, lows)
    try:
        return ranges, probe(ranges)
    except RtxrtError:
        return None


def _power_of_two_dividing(size: int) -> int:
    return size & -size if size > 0 else 1
