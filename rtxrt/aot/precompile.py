"""``rtxrt aot --precompile``: compile ahead of time the kernels a GPU's JIT would compile.

For each arch the model is planned at the given input shapes as the runtime plans it
(``build_plan`` keeps every candidate tactic: the autotuner on the user's GPU times them all):
where inputs have symbolic dims, the generic engine a session builds first (over the model's
profile, else over the default ranges around those shapes), else the engine of those static
shapes. The plans' kernels are compiled with NVRTC, except those an earlier build left in the
runtime cache (cache/kernel_store.py). The cubins go into the .rtxir's CUBINS section, where
the runtime looks a kernel up before compiling it. No GPU is needed.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from ..format import Cubins
from ..display import format_bytes
from ..ir.graph import Model
from ..ir.shape_profile import stored_profile


@dataclass(frozen=True)
class PrecompileOptions:
    """The archs to compile for ("sm_86", ...) and the input shapes to plan at (default:
    the model's static shapes). The app gets compiled kernels only at these shapes."""

    archs: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchReport:
    """What precompiling for one arch produced."""

    arch: str
    kernels: int
    nbytes: int
    seconds: float
    compiled: int  # the others came from the kernel cache

    def summary(self) -> str:
        cached = self.kernels - self.compiled
        return (f"{self.arch}: {self.kernels} kernels, {format_bytes(self.nbytes)} in {self.seconds:.2f} s"
                + (f" ({cached} from the kernel cache)" if cached else ""))


def check_archs(archs: Iterable[str]) -> tuple[str, ...]:
    """The archs, each once, in the order given. InputError names an arch that rtxrt does
    not offer or that this NVRTC cannot compile for (checked before any slow work)."""
    from ..backends.cuda.device import SUPPORTED_ARCHS
    from ..backends.cuda.compile.nvrtc import nvrtc_version, supported_archs

    wanted = tuple(dict.fromkeys(archs))
    if not wanted:
        raise InputError(f"--precompile needs at least one arch, e.g. sm_86 (any of {', '.join(SUPPORTED_ARCHS)})")
    unknown = [a for a in wanted if a not in SUPPORTED_ARCHS]
    if unknown:
        raise InputError(f"cannot precompile for {', '.join(map(repr, unknown))}: the archs rtxrt supports are "
                         f"{', '.join(SUPPORTED_ARCHS)}")
    known = supported_archs()
    missing = [a for a in wanted if int(a[3:]) not in known]
    if missing:
        major, minor = nvrtc_version()
        raise InputError(f"this NVRTC ({major}.{minor}) cannot compile for {', '.join(missing)}; "
                         "install a newer nvidia-cuda-nvrtc-cu12")
    return wanted


def planning_shapes(model: Model, shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """``shapes``, plus the static shape of every input they leave out. InputError names an
    unknown input, or the inputs with symbolic dims and no shape; the planner checks the rest."""
    graph = model.graph
    inputs = [name for name in graph.inputs if name not in graph.initializers]
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise InputError(f"--shapes names unknown input(s) {unknown}; the model's inputs are {inputs}")
    out = {name: tuple(int(d) for d in dims) for name, dims in shapes.items()}
    missing = {}
    for name in inputs:
        if name in out:
            continue
        t = graph.types.get(name)
        if t is not None and t.is_static:
            out[name] = tuple(t.shape)
        else:
            missing[name] = t
    if missing:
        example = ",".join(f"{name}:" + ("x".join(str(d) if isinstance(d, int) else "1" for d in t.shape)
                                         if t is not None and t.shape else "DxD") for name, t in missing.items())
        raise InputError(f"input(s) {', '.join(f'{n} {t}' for n, t in missing.items())} have symbolic dims: give "
                         f"the shapes to precompile at (the app must run those shapes), e.g. --shapes {example}")
    return out


def precompile(model: Model, options: PrecompileOptions) -> tuple[Cubins, list[ArchReport]]:
    """Compile every kernel ``model`` needs at ``options.shapes`` for each arch. ``model``
    should be read back from the .rtxir bytes, so that it is exactly what the runtime plans."""
    from ..backends.cuda.cache.kernel_store import compile_cached
    from ..backends.cuda.cache.runtime_cache import RuntimeCache, kernel_blob_name

    archs = check_archs(options.archs)
    shapes = planning_shapes(model, options.shapes)
    blobs: dict[str, dict[str, bytes]] = {}
    reports = []
    cache = RuntimeCache()
    for arch in archs:
        started = time.perf_counter()
        cubins, compiled = compile_cached(first_run_plan(model, shapes, arch).kernels, arch, cache)
        blobs[arch] = {kernel_blob_name(name, arch): cubin for name, cubin in cubins.items()}
        reports.append(ArchReport(arch, len(cubins), sum(map(len, cubins.values())), time.perf_counter() - started,
                                  compiled))
    return Cubins(blobs, [shapes]), reports


def first_run_plan(model: Model, shapes: Mapping[str, tuple[int, ...]], arch: str):
    """The plan whose kernels a session of ``model`` compiles on its first run at ``shapes``
    on a GPU of ``arch``: where inputs have symbolic dims, the generic engine at the opt shapes
    of the model's profile, else of the default ranges around ``shapes`` (ir/default_ranges.py),
    as the session makes them; else the engine of those static shapes. (A hot shape's own
    engine, which a lazy session builds later in the background, is left to the JIT.) Kernels
    do not depend on the SM count (only launch grids do), so any count will do."""
    from ..backends.cuda.generic import GenericEngines, default_generic_ranges, varies
    from ..backends.cuda.plan.builder import build_plan

    model = _as_run_on(model, arch)
    profile = stored_profile(model)
    graph = model.graph
    declared = {name: graph.types[name].shape for name in shapes if name in graph.types}
    found = None
    if profile is not None:
        found = profile.ranges, GenericEngines.probe(model, profile.ranges)
    elif not all(isinstance(d, int) for shape in declared.values() for d in (shape or ())):
        found = default_generic_ranges(model, declared, shapes)
    if found is None or not varies(found[0]):
        return build_plan(model, shapes, arch=arch, sm_count=1)
    ranges, dims = found
    return build_plan(model, {n: r[1] for n, r in ranges.items()}, arch=arch, sm_count=1, dims=dims)


def _as_run_on(model: Model, arch: str) -> Model:
    """The model as the runtime runs it on a GPU of ``arch`` (bf16 storage becomes fp16 below
    sm_80), so that the kernels planned here are the ones it will look up."""
    from ..backends.cuda.target import compute_capability, runtime_model

    with warnings.catch_warnings():  # the runtime's warning is for the user of that GPU, not the builder
        warnings.simplefilter("ignore", RuntimeWarning)
        return runtime_model(model, None, compute_capability(arch))
