"""The JIT: specialize a model to this GPU at concrete input shapes, through the runtime cache.

A cold start plans the model (rtxrt.backends.cuda.plan.builder), compiles every candidate kernel
with NVRTC in parallel, times the candidate tactics on the device, and stores the cubins and
the choices in the cache entry of (model, GPU, driver, NVRTC, rtxrt, options). A warm start
plans again (pure Python, milliseconds), reads the choices and cubins, and compiles nothing.
Several input shapes share one entry: the tactics blob maps a shape signature to its choices,
and a new shape adds its kernels to the entry under the cross-process lock.
"""
from __future__ import annotations

import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .tune.autotune import autotune
from .tune.timing_cache import TimingCache
from .plan.builder import FinalPlan, Plan, build_plan, finalize
from ..memory_plan import MemoryPlan
from .plan.dim_ranges import DimRanges
from .plan.lowering_templates import LoweringTemplates
from .run.executor import Engine, SharedMemory, load_functions
from ...errors import RtxrtError, warn
from ...ir.graph import Model
from .cache.runtime_cache import (
    TACTICS_BLOB,
    CacheEntry,
    CacheWarning,
    RuntimeCache,
    kernel_blob_name,
)
from .cache.key import CacheKey
from .device import DeviceInfo, probe
from .compile.nvrtc import compile_many
from ...runtime.progress import Progress


@dataclass
class JitStats:
    """What loading one engine cost: ``kernels_compiled`` is zero on a warm start."""

    jit_seconds: float = 0.0
    plan_seconds: float = 0.0
    compile_seconds: float = 0.0
    tune_seconds: float = 0.0
    kernels_compiled: int = 0
    kernels_loaded: int = 0
    from_cache: bool = True
    device_bytes: int = 0
    host_nodes: list[str] = field(default_factory=list)  # labels of the nodes run on the host, always set

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GpuContext:
    """One GPU as a session uses it: its description, one stream, one cuBLAS handle."""

    def __init__(self, device: int = 0):
        self.info: DeviceInfo = probe(device)  # first: NoGpuError names what is missing (CuPy, driver, GPU)
        import cupy

        from .run.cublas import Cublas

        self.device = cupy.cuda.Device(device)
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.cublas = Cublas(self.stream.ptr)

    def follow_current_stream(self) -> None:
        """Order our stream after the work already queued on the caller's current CuPy stream
        (e.g. the kernel that wrote an input): our stream does not sync with the default one."""
        import cupy

        current = cupy.cuda.get_current_stream()
        if current.ptr != self.stream.ptr:
            self.stream.wait_event(current.record())


_IMAGE_ERRORS = ("CUDA_ERROR_INVALID_IMAGE", "CUDA_ERROR_NO_BINARY_FOR_GPU", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
                 "CUDA_ERROR_INVALID_PTX")


def shape_signature(shapes: Mapping[str, Sequence[int]]) -> str:
    return ";".join(f"{name}={'x'.join(str(int(d)) for d in shape)}" for name, shape in sorted(shapes.items()))


@dataclass
class Specialized:
    """A model specialized to one GPU at one set of shapes, not yet loaded: the finalized
    plan and the cubins of its kernels."""

    final: FinalPlan
    cubins: dict[str, bytes]
    stats: JitStats

    def load(self, gpu: GpuContext, *, use_graph: bool = True, shared: SharedMemory | None = None) -> Engine:
        """Allocate, upload and bind it to ``gpu``'s stream and cuBLAS handle (sharing
        ``shared``'s memory and loaded kernels where it can)."""
        from cupy_backends.cuda.api.driver import CUDADriverError

        started = time.perf_counter()
        with gpu.device:
            try:
                engine = Engine(self.final, self.cubins, stream=gpu.stream, cublas=gpu.cublas, use_graph=use_graph,
                                shared=shared)
            except CUDADriverError as exc:
                if not any(code in str(exc) for code in _IMAGE_ERRORS):
                    raise
                # A cubin from the cache or the file that this driver cannot load (made by a
                # newer NVRTC, say): compile the plan's kernels here and load those instead.
                warn(f"rtxrt: a stored kernel does not load on this driver ({exc}); recompiling", CacheWarning)
                if shared is not None:
                    shared.functions.clear()
                self.cubins = _compile(self.final.kernels, gpu.info.arch, self.stats, None)
                engine = Engine(self.final, self.cubins, stream=gpu.stream, cublas=gpu.cublas, use_graph=use_graph,
                                shared=shared)
        self.stats.device_bytes = engine.device_bytes
        self.stats.jit_seconds += time.perf_counter() - started
        return engine


class NotSpecialized(RtxrtError):
    """``specialize(..., build=False)``: the cache does not hold this shape's engine."""


def specialize(model: Model, key: CacheKey, cache: RuntimeCache, gpu: GpuContext,
               shapes: Mapping[str, Sequence[int]], *, progress: Progress | None = None,
               precompiled: Mapping[str, bytes] | None = None, build: bool = True,
               dims: DimRanges | None = None, signature: str | None = None, constants: dict | None = None,
               loaded: Container[str] = (), tactics: Mapping[str, str] | None = None,
               prefer: Mapping[str, str] | None = None, templates: LoweringTemplates | None = None,
               memory: MemoryPlan | None = None) -> Specialized:
    """Plan ``model`` at ``shapes`` for ``gpu`` and get its cubins and tactic choices from the
    cache, or compile and tune them (timing on ``gpu``'s stream) and store them there.
    ``build=False`` compiles nothing: NotSpecialized unless the cache (or the file's embedded
    cubins) holds everything.

    A generic plan (``dims``, with the profile's ``signature``): the tactics tuned at the
    first shape serve every shape of the profile, and so do its kernels. ``constants``: the
    memo builder.build_plan keeps from plan to plan; ``loaded``: kernels the caller has loaded
    already (no cubin needed); ``tactics``: the signature's tactic labels, which the caller
    read before (the cache is then read only for cubins not loaded); ``prefer``: node label ->
    the tactic chosen at the first shape (build_plan's ``prefer``); ``templates``: the
    profile's lowering templates (build_plan's); ``memory``: the memory plan of the profile's
    largest shapes (finalize's ``reference``)."""
    stats = JitStats()
    started = time.perf_counter()
    arch = gpu.info.arch
    with gpu.device:
        # A generic plan whose tactics the cache holds needs only each node's first candidate,
        # unless the tuned one is another: planning every candidate is most of a plan's time.
        stored = tactics
        if stored is None and dims is not None and signature:
            stored = _tactics(cache.entry(key), signature)
        plan = build_plan(model, shapes, arch=arch, sm_count=gpu.info.sm_count, dims=dims, constants=constants,
                          tune=stored is None, prefer=prefer, templates=templates)
        if stored is not None and len(_choices(plan, stored)) < len(stored):
            if not prefer:  # the stored tactics by node: a plan's steps are the same at every shape
                prefer = {plan.steps[int(i)].label: label for i, label in stored.items() if int(i) < len(plan.steps)}
            plan = build_plan(model, shapes, arch=arch, sm_count=gpu.info.sm_count, dims=dims, constants=constants,
                              tune=False, prefer=prefer, templates=templates)
        if stored is not None and len(_choices(plan, stored)) < len(stored):
            plan = build_plan(model, shapes, arch=arch, sm_count=gpu.info.sm_count, dims=dims, constants=constants)
        stats.plan_seconds = time.perf_counter() - started
        signature = signature or shape_signature(shapes)
        builder = _Build(plan, signature, gpu, stats, progress, precompiled or {}, TimingCache(cache, gpu.info))
        entry = None
        if tactics is not None:
            labels = dict(tactics)
        else:
            if not build:
                entry = cache.entry(key)
                if entry.problem() is not None or _tactics(entry, signature) is None:
                    raise NotSpecialized(f"no engine for {signature} in the runtime cache")
            entry = cache.get_or_build(key, builder)
            labels = _tactics(entry, signature)
            if labels is None:  # a new shape for a cached model (or an entry removed since it was read)
                with cache.lock(key):
                    entry = cache.entry(key)
                    labels = _tactics(entry, signature)
                    if labels is None:
                        builder(entry)
                        entry.complete()
            labels = labels or builder.labels  # what the builder chose, whether or not it is still on disk
        final = finalize(plan, _choices(plan, labels), reference=memory)
        cubins = {}
        missing = {}
        for name, source in final.kernels.items():
            if name in loaded:
                continue
            entry = entry or cache.entry(key)
            blob = builder.cubins.get(name) or precompiled and precompiled.get(kernel_blob_name(name, arch)) \
                or entry.get(kernel_blob_name(name, arch))
            if blob is None:
                missing[name] = source
            else:
                cubins[name] = blob
        if missing and not build:
            raise NotSpecialized(f"the runtime cache lacks {len(missing)} kernel(s) for {signature}")
        if missing:  # only an entry written by another rtxrt build could lack them
            cubins.update(_compile(missing, arch, stats, progress))
    stats.kernels_loaded = len(cubins)
    stats.host_nodes = [s.label for s in plan.host_steps]
    stats.jit_seconds = time.perf_counter() - started
    if progress is not None:
        progress.close()
    return Specialized(final, cubins, stats)


class _Build:
    """Compiles a plan's kernels and tunes its tactics into a cache entry."""

    def __init__(self, plan: Plan, signature: str, gpu: GpuContext, stats: JitStats, progress: Progress | None,
                 precompiled: Mapping[str, bytes], timings: TimingCache):
        self.plan, self.signature, self.gpu, self.stats = plan, signature, gpu, stats
        self.progress, self.precompiled, self.timings = progress, precompiled, timings
        self.cubins: dict[str, bytes] = {}
        self.labels: dict[str, str] = {}  # step index -> chosen tactic, once built

    def __call__(self, entry: CacheEntry) -> None:
        arch = self.gpu.info.arch
        self.stats.from_cache = False
        kernels = self.plan.kernels
        todo = {}
        for name, source in kernels.items():
            blob_name = kernel_blob_name(name, arch)
            blob = self.precompiled.get(blob_name) or entry.get(blob_name)
            if blob is None:
                todo[name] = source
            else:
                self.cubins[name] = blob
        fresh = _compile(todo, arch, self.stats, self.progress)
        for name, cubin in fresh.items():
            entry.put(kernel_blob_name(name, arch), cubin)
        self.cubins.update(fresh)
        started = time.perf_counter()
        tuned = {n for s in self.plan.steps if len(s.candidates) > 1 for p in s.candidates for n in p.kernels}
        functions = load_functions({n: self.cubins[n] for n in tuned})
        kept = self.timings.read()
        timings = dict(kept)
        choices = autotune(self.plan, functions, self.gpu.cublas, self.gpu.stream,
                           self.progress.stage("tune") if self.progress else None, timings)
        self.timings.add({digest: label for digest, label in timings.items() if digest not in kept})
        self.stats.tune_seconds = time.perf_counter() - started
        self.labels = {str(i): self.plan.steps[i].candidates[c].label for i, c in choices.items()}
        tactics = entry.get_json(TACTICS_BLOB) or {}
        tactics[self.signature] = self.labels
        entry.put_json(TACTICS_BLOB, tactics)


def _compile(sources: Mapping[str, str], arch: str, stats: JitStats, progress: Progress | None) -> dict[str, bytes]:
    if not sources:
        return {}
    started = time.perf_counter()
    cubins = compile_many(sources.items(), arch, progress=progress.stage("compile") if progress else None)
    stats.compile_seconds += time.perf_counter() - started
    stats.kernels_compiled += len(cubins)
    return cubins


def stored_tactics(cache: RuntimeCache, key: CacheKey, signature: str) -> dict[str, str] | None:
    """The tactic labels the runtime cache holds for ``signature``, or None."""
    return _tactics(cache.entry(key), signature)


def _tactics(entry: CacheEntry, signature: str) -> dict[str, str] | None:
    """The tactic labels the entry holds for this shape signature, or None."""
    return (entry.get_json(TACTICS_BLOB) or {}).get(signature)


def _choices(plan: Plan, labels: Mapping[str, str]) -> dict[int, int]:
    """Step index -> candidate index, from the tactic labels the cache stored."""
    choices = {}
    for key, label in labels.items():
        i = int(key)
        if i < len(plan.steps):
            found = [c for c, p in enumerate(plan.steps[i].candidates) if p.label == label]
            if found:
                choices[i] = found[0]
    return choices
