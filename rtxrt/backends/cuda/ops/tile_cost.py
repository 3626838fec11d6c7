"""Which GEMM tiles are worth compiling: a rough cost model drops the tiles that cannot win.

The autotuner on the user's GPU times every tactic a node offers, and each tactic costs an
NVRTC compile first (about a second for a tensor-core tile, on the build machine for
``rtxrt aot --precompile`` or on first launch). Here a tile's time on a GPU of S SMs is
modelled as its waves, ceil(blocks / S), times one block's work (bm x bn x K rounded up to
bk), divided by the tile's relative throughput per SM (the square root of the operand reuse of
the part each warp or thread computes, a x b / (a + b): more reuse gains less than in
proportion, as an SM's other limits take over). A tile is dropped only where, at every SM count a GPU
rtxrt supports may have, the model puts it more than MARGIN times behind the best tile: the
model is crude (it ignores occupancy, memory bandwidth, edges), the margin covers that, and
what survives still gives the autotuner big and small tiles to choose between where the SM
count decides. The SM count plays no part in the answer, so the AOT build (which does not
know the GPU) and the runtime plan the same candidates.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TypeVar

from ..codegen.dynamic import lower, upper
from .gemm_simt_source import SimtTactic
from .gemm_source import GemmProblem, GemmTactic

T = TypeVar("T", GemmTactic, SimtTactic)

# The fewest and the most SMs of an RTX GPU or MIG slice from sm_75 on (T1000, MX450, an
# A100's 1g slice: 14; RTX PRO 6000 Blackwell: 188).
SM_COUNTS = range(14, 189)
MARGIN = 2.0


def worth_timing(problem: GemmProblem, tiles: Sequence[T], keep: Sequence[T] = ()) -> tuple[T, ...]:
    """``tiles`` (in order) without those the cost model says cannot win on ``problem``;
    ``keep`` (a plan's default tiles) and the 64x64 tiles (the middle choice at any SM count,
    as the candidate lists keep them) always stay. A problem whose sizes vary over a
    profile keeps every tile: the list must be the same at every shape of the profile."""
    dims = (problem.m, problem.n, problem.k, problem.batch)
    if len(tiles) < 2 or any(lower(d) != upper(d) for d in dims):  # (a DimInt of a fixed size is that size)
        return tuple(tiles)
    shapes = tuple((t.bm, t.bn, t.bk, _throughput(t)) for t in tiles)
    slow = _slow(*(int(d) for d in dims), shapes)
    return tuple(t for t, s in zip(tiles, slow) if not s or t in keep or (t.bm, t.bn) == (64, 64))


@lru_cache(maxsize=4096)
def _slow(m: int, n: int, k: int, batch: int, shapes: tuple[tuple[int, int, int, float], ...]) -> tuple[bool, ...]:
    """For each (bm, bn, bk, throughput): whether it is more than MARGIN times behind the best
    tile at every SM count."""
    blocks = [-(-m // bm) * -(-n // bn) * batch for bm, bn, _, _ in shapes]
    work = [bm * bn * -(-k // bk) * bk / rate for bm, bn, bk, rate in shapes]
    slow = [True] * len(shapes)
    for sm in SM_COUNTS:
        times = [-(-b // sm) * w for b, w in zip(blocks, work)]
        best = min(times)
        slow = [s and t > MARGIN * best for s, t in zip(slow, times)]
        if not any(slow):
            break
    return tuple(slow)


def _throughput(t: GemmTactic | SimtTactic) -> float:
    """Relative throughput: from the operand reuse of one warp's (tensor cores) or one
    thread's (SIMT) part of the tile."""
    a, b = (t.tm, t.tn) if isinstance(t, SimtTactic) else (t.warp_m, t.warp_n)
    return math.sqrt(a * b / (a + b))
