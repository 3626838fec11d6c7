"""Which dims of a model's values vary over a shape profile, and between which bounds.

Found by inferring every value's shape at a few shapes of the profile (min, opt, max and one
between): an axis whose size differs between them varies. A generic plan (builder.py) hands
the lowerings those axes as ``DimInt``s (codegen/dynamic.py), so the kernels take them as
arguments. Every other axis reaches the lowerings as its size at the shape being planned: a dim
that follows the inputs in a way those samples missed is a literal of its value there (a
compile at a shape where it differs, never a wrong kernel).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ....errors import RtxrtError
from ....ir.graph import Model
from ...memory_plan import specialize

Range = tuple[int, int]


@dataclass(frozen=True)
class DimRanges:
    """``sizes[value]``: per axis, the fixed size (int) or the (lo, hi) range it varies over."""

    sizes: Mapping[str, tuple[int | Range, ...]]

    @functools.cached_property
    def largest(self) -> dict[str, int]:
        """Each value's most elements over the profile."""
        return {name: math.prod(d if isinstance(d, int) else d[1] for d in dims) for name, dims in self.sizes.items()}

    def varying(self, name: str, axis: int) -> Range | None:
        dims = self.sizes.get(name)
        if dims is None or axis >= len(dims) or isinstance(dims[axis], int):
            return None
        return dims[axis]


def sample_shapes(ranges: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]) -> list[dict[str, tuple[int, ...]]]:
    """The shapes a profile is probed at: min, opt, max and opt's mirror image in [min, max]
    (min + max - opt: a size a model that takes min, opt and max likely takes too)."""
    samples = []
    for pick in (0, 1, 2, None):
        shapes = {}
        for name, (low, opt, high) in ranges.items():
            if pick is None:
                shapes[name] = tuple(int(lo) + int(hi) - int(o) for lo, o, hi in zip(low, opt, high))
            else:
                shapes[name] = tuple(int(d) for d in (low, opt, high)[pick])
        if shapes not in samples:
            samples.append(shapes)
    return samples


def dim_ranges(model: Model, samples: Sequence[Mapping[str, Sequence[int]]]) -> DimRanges:
    """Every typed value's axes over ``samples`` (input name -> shape, one mapping per sample)."""
    seen: dict[str, list[tuple[int, ...]]] = {}
    samples = list(samples)
    for shapes in samples[3:]:  # the extra samples are a guess: one the model refuses is dropped
        try:
            specialize(model, shapes)
        except RtxrtError:
            samples.remove(shapes)
    for shapes in samples:
        graph = specialize(model, shapes).graph
        for name, t in graph.types.items():
            if t.shape is not None and t.is_static:
                seen.setdefault(name, []).append(tuple(int(d) for d in t.shape))
    sizes = {}
    for name, shapes in seen.items():
        if len(shapes) != len(samples) or len({len(s) for s in shapes}) != 1:
            continue  # a value not typed at every sample, or of varying rank: nothing is assumed
        sizes[name] = tuple(axis[0] if len(set(axis)) == 1 else (min(axis), max(axis)) for axis in zip(*shapes))
    return DimRanges(sizes)
