"""One engine for every shape of a profile, as TensorRT-RTX's shape-generic engine.

Its kernels take the dims that vary over the profile as arguments (codegen/dynamic.py), so
they are compiled, and the tactics tuned, once: at the profile's opt shapes, through the
runtime cache like any engine (the cache holds them apart from shape-specialized engines,
under the profile's signature). A shape met later is planned again on the host (no compile,
no tuning), shares the kernels, the weights and one arena with every other shape of the
profile, and gets its own CUDA graph when it first runs. Its nodes are not lowered again
there: each re-evaluates its lowering template's launch geometry at the new dims
(plan/lowering_templates.py), checked at the profile's sample shapes when the engine is built.
"""
from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from ...errors import RtxrtError
from ...ir.default_ranges import fitting_ranges
from ...ir.graph import Model
from ..memory_plan import MemoryPlan
from ...runtime.progress import Progress
from .cache.key import CacheKey
from .cache.runtime_cache import RuntimeCache
from . import jit
from .jit import GpuContext, JitStats, shape_signature
from .plan.builder import build_plan
from .plan.dim_ranges import DimRanges, dim_ranges, sample_shapes
from .plan.lowering_templates import LoweringTemplates
from .run.executor import Engine, SharedMemory

Ranges = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]
MAX_LIVE_ENGINES = 32  # shapes whose engines (constants, CUDA graph) a profile keeps loaded


def profile_signature(ranges: Ranges) -> str:
    """The runtime cache's name for the generic engine of these ranges."""
    return "generic " + json.dumps({n: [list(map(int, s)) for s in r] for n, r in sorted(ranges.items())},
                                   separators=(",", ":"))


def varies(ranges: Ranges) -> bool:
    """Whether any dim of the ranges varies (else a generic engine is a specialized one)."""
    return any(tuple(low) != tuple(high) for low, _, high in ranges.values())


def default_generic_ranges(model: Model, declared: Mapping[str, Sequence[int | str] | None],
                           shapes: Mapping[str, Sequence[int]]) -> tuple[Ranges, DimRanges] | None:
    """The ranges of the generic engine a session of ``model`` without a profile builds when it
    first runs at ``shapes`` (inputs ``declared`` with symbolic dims), and their dims: the
    default ranges around ``shapes`` that the model takes (ir/default_ranges.py); None where
    none does (every new shape is then specialized on its own)."""
    return fitting_ranges(declared, shapes, lambda ranges: GenericEngines.probe(model, ranges))


class GenericEngines:
    """The engines of one profile on one GPU: ``engine(shapes)`` plans a new shape on the host
    and loads it beside the others; ``reserve``: size the shared arena for the max shapes up
    front (a user's profile), else the arena is sized by the first shape and a shape needing
    more gets one of its own (default ranges, whose max may be far beyond what an app runs)."""

    def __init__(self, model: Model, key: CacheKey, cache: RuntimeCache, gpu: GpuContext, ranges: Ranges, *,
                 use_graph: bool = True, precompiled: Mapping[str, bytes] | None = None, reserve: bool = True,
                 dims: DimRanges | None = None):
        self.model, self.key, self.cache, self.gpu = model, key, cache, gpu
        self.ranges = {n: tuple(tuple(int(d) for d in s) for s in r) for n, r in ranges.items()}
        self.signature = profile_signature(self.ranges)
        self.use_graph, self.precompiled, self.reserve = use_graph, dict(precompiled or {}), reserve
        self.dims: DimRanges = dims if dims is not None else self.probe(model, self.ranges)  # (probed already)
        self.constants: dict = {}  # the builder's memo of the model's constants, shared by every plan
        self.templates = LoweringTemplates()  # the nodes' lowering templates, shared by every plan
        self.shared = SharedMemory()
        self.engines: OrderedDict[str, Engine] = OrderedDict()  # least recently run first
        self.stats: dict[str, JitStats] = {}
        self.tactics: dict[str, str] | None = None  # the profile's, read from the cache once built
        self.prefer: dict[str, str] = {}  # node label -> the tactic tuned at the opt shapes
        self.memory: MemoryPlan | None = None  # the memory plan other shapes fit in where they can

    @staticmethod
    def probe(model: Model, ranges: Ranges) -> DimRanges:
        """The dims that vary over ``ranges``; raises RtxrtError (naming the node) where the
        model refuses the min, opt or max shapes."""
        return dim_ranges(model, sample_shapes(ranges))

    @property
    def opt_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(opt) for n, (_, opt, _) in self.ranges.items()}

    @property
    def max_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(high) for n, (_, _, high) in self.ranges.items()}

    @property
    def device_bytes(self) -> int:
        """Device memory held by every engine of the profile together."""
        return self.shared.device_bytes

    def contains(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        for name, (low, _, high) in self.ranges.items():
            shape = tuple(shapes.get(name, ()))
            if len(shape) != len(low) or any(not lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
                return False
        return True

    def build(self, progress: Progress | None = None) -> JitStats:
        """Compile and tune the generic kernels at the opt shapes (or read them from the cache),
        reserve the arena and load the opt shapes' engine: the profile's one JIT."""
        opt = self.opt_shapes
        signature = shape_signature(opt)
        made = self._specialize(opt, progress=progress, build=True)
        self.tactics = jit.stored_tactics(self.cache, self.key, self.signature)
        self.prefer = {step.label: program.label for step, program in zip(made.final.plan.steps, made.final.programs)
                       if step.node is not None}
        largest = made
        if self.reserve and self.max_shapes != opt:
            largest = self._specialize(self.max_shapes, build=True)
            self.shared.arena_bytes = largest.final.layout.arena_bytes
        self.memory = largest.final.memory  # (where a shape's values fit it: the arena reserved or the first)
        self._check_templates()
        started = time.perf_counter()
        self.engines[signature] = made.load(self.gpu, use_graph=self.use_graph, shared=self.shared)
        made.stats.jit_seconds += time.perf_counter() - started
        made.stats.device_bytes = self.device_bytes
        self.stats[signature] = made.stats
        return made.stats

    def _check_templates(self) -> None:
        """Plan (on the host only) the shapes ``check_shapes`` picks with each node's tuned
        tactic, so the templates the opt (and max) shapes made are checked where their guards
        hold (a shape the model refuses checks nothing)."""
        for shapes in check_shapes(self.ranges, self.reserve):
            try:
                build_plan(self.model, shapes, arch=self.gpu.info.arch, sm_count=self.gpu.info.sm_count,
                           tune=False, dims=self.dims, constants=self.constants, prefer=self.prefer,
                           templates=self.templates)
            except RtxrtError:
                continue

    def engine(self, shapes: Mapping[str, Sequence[int]], *, build: bool = True) -> tuple[Engine, JitStats]:
        """The engine of ``shapes`` (in the profile): planned and loaded now if new. Compiles
        only kernels a generic plan could not share (``build=False``: NotSpecialized then).
        At most MAX_LIVE_ENGINES are kept: the least recently run gives back its own memory
        (a shape's constants, its CUDA graph) and is planned again if it comes back."""
        signature = shape_signature(shapes)
        if signature in self.engines:
            self.engines.move_to_end(signature)
        else:
            made = self._specialize(shapes, build=build)
            started = time.perf_counter()
            self.engines[signature] = made.load(self.gpu, use_graph=self.use_graph, shared=self.shared)
            made.stats.jit_seconds += time.perf_counter() - started
            made.stats.device_bytes = self.device_bytes
            self.stats[signature] = made.stats
            while len(self.engines) > MAX_LIVE_ENGINES:
                _, cold = self.engines.popitem(last=False)
                cold.release()
        return self.engines[signature], self.stats[signature]

    def _specialize(self, shapes: Mapping[str, Sequence[int]], *, build: bool, progress: Progress | None = None):
        return jit.specialize(self.model, self.key, self.cache, self.gpu, shapes, progress=progress,
                          precompiled=self.precompiled, build=build, dims=self.dims, signature=self.signature,
                          constants=self.constants, loaded=self.shared.functions, tactics=self.tactics,
                          prefer=self.prefer, templates=self.templates, memory=self.memory)


def check_shapes(ranges: Ranges, reserved: bool) -> list[dict[str, tuple[int, ...]]]:
    """Where a profile's engine checks its lowering templates when it is built: opt's mirror
    image in [min, max] and the shapes halfway from opt to max and from min to opt, less those
    planned already (opt; max where the arena is ``reserved`` for it) and min (whose dims of 1
    make guard classes of their own)."""
    low, opt, high = ({n: tuple(r[k]) for n, r in ranges.items()} for k in range(3))
    mirror = sample_shapes(ranges)[3:]  # (min + max - opt, where it differs from the three)
    between = [{n: tuple(_between(a, b) for a, b in zip(start[n], end[n])) for n in ranges}
               for start, end in ((opt, high), (low, opt))]
    done = [opt, high if reserved else None, low]
    shapes: list[dict[str, tuple[int, ...]]] = []
    for s in mirror + between:
        if s not in done and s not in shapes:
            shapes.append(s)
    return shapes


def _between(low: int, high: int) -> int:
    """A size about halfway from ``low`` to ``high`` on their common stride (a model that takes
    224 and 1024 may take only multiples of 32)."""
    step = math.gcd(low, high) or 1
    return low + (high - low) // 2 // step * step
