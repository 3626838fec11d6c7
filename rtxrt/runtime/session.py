"""``rtxrt.Session``: load a .rtxir (or .onnx) model and run it by input name, on the GPU
through the JIT and the runtime cache, or on the CPU reference backend where allowed."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.cuda.plan.builder import DataDependentShape
from ..backends.cuda.target import runtime_model
from ..backends.reference.executor import (
    ReferenceExecutor,
    check_input,
    refuse_weightless,
)
from ..errors import FormatError, InputError, RtxrtError, warn
from ..ir.checker import check_and_type
from ..ir.graph import Dim, Model
from ..ir.shape_profile import make_profile, stored_profile
from .parameter_run import ParameterRun
from .progress import Progress, ProgressOption
from .split_run import SplitRun, to_host

if TYPE_CHECKING:
    from ..backends.cuda.generic import GenericEngines
    from ..backends.cuda.jit import JitStats
    from ..backends.cuda.plan.dim_ranges import DimRanges
    from ..backends.cuda.run.executor import Engine

ModelSource = str | os.PathLike | bytes | Model
FALLBACKS = (None, "cpu")
PRECISIONS = (None, "fp32")
SPECIALIZATIONS = ("eager", "lazy", "none")
HOT_USES = 2  # "lazy": a shape gets its specialized engine built once it has run this many times


@dataclass(frozen=True)
class IOInfo:
    """Name, element type and shape (ints, symbols or None) of a model input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None


@dataclass(frozen=True)
class OnHost:
    """What a session holds instead of an engine for shapes that run on the CPU reference
    backend: no static GPU plan holds them, or (specialization="none") none was cached."""

    reason: str


@dataclass
class IOBinding:
    """Device buffers bound to one engine (see Session.bind)."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    _engine: Engine
    _gpu: Any

    def run(self, synchronize: bool = True) -> dict[str, Any]:
        """Run on the bound inputs; returns the bound outputs (after the stream finishes,
        unless ``synchronize`` is False: then order your work after ``Session.stream``)."""
        with self._gpu.device:
            self._gpu.follow_current_stream()
            self._engine.launch()
            if synchronize:
                self._gpu.stream.synchronize()
        return self.outputs


class Session:
    """Runs a model on GPU ``device``: the first run at each input shape specializes the
    model to this GPU (or loads that from the runtime cache at ``cache_dir``, default the
    user cache, overridable with $RTXRT_CACHE_DIR). A model whose inputs are all static is
    specialized here, in the constructor.

    ``precision``: None runs as the .rtxir was annotated (``rtxrt aot --precision``);
    "fp32" runs every value in float32 whatever the annotations. ``fallback="cpu"`` runs the
    numpy reference backend, with a warning, when there is no usable GPU; without it that is
    an error. ``progress``: a bar on a terminal (True), silence (False) or a callback
    ``(stage, done, total)`` for GUIs. ``use_cuda_graph``: replay each run as a CUDA graph.

    Dynamic shapes: ``profile={input: (min, opt, max)}`` (default: the one ``rtxrt aot
    --profile`` stored in the file, if any) refuses shapes outside [min, max] and builds, here,
    the profile's generic engine: kernels that take the varying dims as arguments, compiled
    and tuned once at the opt shapes, which run every shape of the profile on the GPU (a new
    shape costs a plan on the host and a CUDA graph capture, no compile). A model with
    symbolic dims and no profile gets one at its first run: each symbolic dim ranges over
    [1, max(its size then, 2048)] (an input's largest shape capped in elements; the bounds
    narrowed where the model refuses them, as ir/default_ranges.py says), opt is that
    first shape, and a shape outside is specialized on its own. ``specialization`` says what
    shape-specialized engines are built on top, as TensorRT-RTX does: "lazy" (default) runs a
    new shape on the generic engine at once and, once it has run HOT_USES (2) times, builds its
    specialized engine in a background thread and swaps it in when ready; "eager" specializes a
    new shape before running it (the first run waits for the JIT); "none" never compiles after
    loading: a shape runs specialized where that engine was made at load or is in the runtime
    cache (``rtxrt jit --shapes``), else on the generic engine. The CPU reference backend runs a
    model only where no GPU plan holds it (``fallback="cpu"`` without a GPU, values whose shapes
    depend on the data). ``stats["engine"]`` says which engine the last run used.

    ``embedded_kernels``: also use the cubins ``rtxrt aot --precompile`` put in the file for
    this GPU's arch (no compile on first launch). They are machine code from whoever built
    the file, so they run only when you pass True, and then only where they are bound to this
    file's graph and are cubins for this arch (else they are ignored, with a warning, and the
    kernels compiled). Pass True only for files whose builder you trust as you trust a
    program from them. By default every kernel is compiled here (or taken from the cache).

    ``base_dir``: for an ONNX model, the only folder its external data is read from; by
    default the folder of a model given as a path. A model given as bytes has no folder: its
    external data is refused unless ``base_dir`` names one.
    """

    def __init__(self, source: ModelSource, *, device: int = 0, cache_dir: str | os.PathLike | None = None,
                 precision: str | None = None, fallback: str | None = None, progress: ProgressOption = True,
                 use_cuda_graph: bool = True, profile: Mapping[str, Sequence[Sequence[int]]] | None = None,
                 specialization: str = "lazy", embedded_kernels: bool = False,
                 base_dir: str | os.PathLike | None = None):
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be None or 'cpu', not {fallback!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if specialization not in SPECIALIZATIONS:
            raise ValueError(f"specialization must be one of {SPECIALIZATIONS}, not {specialization!r}")
        self.model, self._ir_bytes = load_model_and_bytes(source, base_dir)
        refuse_weightless(self.model.graph)
        check_and_type(self.model)  # a file may come from anywhere: it gets a compiled model's checks
        self.shape_profile = make_profile(self.model.graph, profile) if profile else stored_profile(self.model)
        self.specialization = specialization
        self._building: dict[str, Any] = {}  # lazy: shape signature -> Future of a Specialized
        self._splits: dict[tuple[str, ...], SplitRun] = {}  # by the labels of the nodes cut at
        self._parameters: ParameterRun | None = None  # where the plan needs some inputs' values
        self._fallback = fallback
        self._cached_signatures: set[str] = set()  # specialized engines in the cache, as of _cached_stamp
        self._cached_stamp: tuple[int, int] | None = None
        self._generic: GenericEngines | OnHost | None = None  # the profile's (or default ranges') engines
        self._uses: dict[str, int] = {}  # runs per shape signature on the generic engine
        self.last_engine = ""  # "specialized", "generic" or "host": what the last run used
        self._kernels_compiled = 0  # by this session's own JITs (background builds included)
        self._reference: ReferenceExecutor | None = None
        self._pool: Any = None
        self.precision = precision
        self.progress = progress
        self.use_cuda_graph = use_cuda_graph
        from ..backends.cuda.jit import GpuContext, JitStats

        # The last engine's JIT statistics; before any (and on the CPU) nothing came from a cache.
        self.jit_stats: JitStats = JitStats(from_cache=False)
        self._engines: dict[str, Engine | OnHost] = {}
        self._executor: ReferenceExecutor | None = None
        try:
            self._gpu = GpuContext(device)
        except RtxrtError as exc:
            if fallback != "cpu":
                raise
            warn(f"rtxrt: {exc} -- running the CPU reference backend (fallback='cpu')")
            self._gpu = None
            self.backend = "reference (CPU)"
            self.fallback_reason = str(exc)
            self._executor = ReferenceExecutor(self.model)
            return
        from ..backends.cuda.cache.runtime_cache import RuntimeCache
        from ..backends.cuda.cache.key import CacheKey

        self.backend = f"cuda ({self._gpu.info.describe()})"
        self.fallback_reason = ""
        self._model = runtime_model(self.model, precision, self._gpu.info.compute_capability)
        self.cache = RuntimeCache(cache_dir)
        self.cache_key = CacheKey.for_model(self._ir_bytes, self._gpu.info,
                                            {"precision": precision} if precision else {})
        self._precompiled = embedded_cubins(self._ir_bytes, self._gpu.info.arch) if embedded_kernels else {}
        static = self.static_input_shapes()
        if static is not None:
            self._engine(static)
        elif self.shape_profile is not None:
            self._generic_engines(self.shape_profile.ranges, reserve=True)
            if specialization == "eager":
                self._engine(self.shape_profile.opt_shapes)

    # --- metadata ----------------------------------------------------------------------------

    @property
    def inputs(self) -> list[IOInfo]:
        g = self.model.graph
        return [self._info(n) for n in g.inputs if n not in g.initializers]

    @property
    def outputs(self) -> list[IOInfo]:
        return [self._info(n) for n in self.model.graph.outputs]

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    @property
    def stats(self) -> dict[str, Any]:
        """``jit_stats`` as a dict: jit_seconds, kernels_compiled, from_cache, device_bytes,
        host_nodes (labels of the nodes the last engine runs on the host), ...; plus
        ``engine`` (what the last run used: "specialized", "generic" or "host") and
        ``kernels_compiled_total`` (every compile of this session)."""
        return self.jit_stats.as_dict() | {"engine": self.last_engine,
                                           "kernels_compiled_total": self.kernels_compiled_total}

    @property
    def kernels_compiled_total(self) -> int:
        """Kernels compiled by every JIT of this session: its own (finished background builds
        too) and those of the sessions it runs parts of the model on."""
        parts = [s for split in self._splits.values() for s in split.sessions()]
        built = [f.result().stats for f in self._building.values() if f.done() and f.exception() is None]
        return (self._kernels_compiled + sum(stats.kernels_compiled for stats in built)
                + sum(s.kernels_compiled_total for s in parts)
                + (self._parameters.kernels_compiled if self._parameters is not None else 0))

    @property
    def stream(self) -> Any:
        """The CuPy stream every GPU run is enqueued on (None on the CPU)."""
        return self._gpu.stream if self._gpu is not None else None

    def static_input_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The input shapes when no input has a symbolic dim, else None."""
        shapes = {}
        for info in self.inputs:
            if info.shape is None or not all(isinstance(d, int) for d in info.shape):
                return None
            shapes[info.name] = tuple(info.shape)
        return shapes

    # --- running -----------------------------------------------------------------------------

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        """Outputs (all, or those named) for ``feeds``: numpy arrays for numpy inputs, CuPy
        arrays for CuPy inputs, and for other DLPack arrays (torch, JAX) arrays of that kind."""
        wanted = list(output_names) if output_names else list(self.model.graph.outputs)
        for name in wanted:
            if name not in self.model.graph.outputs:
                raise InputError(f"unknown output {name!r}; the model's outputs are {self.model.graph.outputs}")
        if self._executor is not None:
            self.last_engine = "host"
            results = self._executor.run({k: to_host(v) for k, v in feeds.items()}, wanted)
            return [results[n] for n in wanted]
        if self._parameters is not None:
            return self._run_by_parameters(wanted, feeds)
        kind, arrays = _device_feeds(feeds)
        shapes = self._check(arrays)
        engine = self._select(shapes)
        if self._needs_parameters(engine):
            return self._run_by_parameters(wanted, feeds)
        if isinstance(engine, SplitRun):  # cut at data-dependent nodes: GPU parts around host ones
            import cupy

            with self._gpu.device:  # the parts take and give CuPy arrays, whatever the caller gave
                values = engine.run({n: cupy.asarray(a) for n, a in arrays.items()})
                values = {n: cupy.asarray(v) for n, v in values.items() if n in wanted}
            self.last_engine = "split"
            return [_as_kind(values[n], kind, self.model.graph.types[n].dtype) for n in wanted]
        if engine is None or isinstance(engine, OnHost):  # lazy: still being built; or no static plan exists
            self.last_engine = "host"
            return self._run_on_host(wanted, arrays, kind)
        with self._gpu.device:
            self._gpu.follow_current_stream()
            outputs = engine.run(arrays)
            self._gpu.stream.synchronize()
        return [_as_kind(outputs[n], kind, self.model.graph.types[n].dtype) for n in wanted]

    def _needs_parameters(self, engine: Any) -> bool:
        """Whether ``engine``'s plan left nodes on the host for want of inputs' values (axes,
        scales given as inputs): then every run reads those inputs and runs a session of the
        model with their values as constants (parameter_run.py)."""
        from ..backends.parameter_inputs import parameter_inputs

        if self._parameters is not None:  # found where the plan's shapes needed them
            return True
        needs = getattr(getattr(engine, "plan", None), "needs_values", None)
        parameters = parameter_inputs(self._model, needs) if needs else []
        if parameters:
            self._parameters = ParameterRun(self._model, parameters, self._part_session)
        return bool(parameters)

    def _run_by_parameters(self, wanted: list[str], feeds: Mapping[str, Any]) -> list[Any]:
        run = self._parameters
        outputs = run.run(wanted, feeds)
        self.jit_stats, self.last_engine = run.last.jit_stats, run.last.last_engine
        return outputs

    def bind(self, shapes: Mapping[str, Sequence[int]]) -> IOBinding:
        """Zero-copy I/O at these input shapes: CuPy arrays over the engine's own input and
        output buffers. Write the inputs in place, call ``binding.run()``, read the outputs;
        nothing is copied, and each run overwrites the outputs of the last."""
        if self._gpu is None:
            raise InputError("bind() needs the GPU; this session runs on the CPU reference backend")
        shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        engine = self._engine(shapes)
        if isinstance(engine, SplitRun):
            raise InputError(f"bind(): this model is cut at data-dependent node(s) {engine.split.cut_labels}, "
                             "so no one engine holds it")
        if isinstance(engine, OnHost):
            raise InputError(f"bind(): this model cannot run on the GPU at these shapes ({engine.reason})")
        plan = engine.plan
        return IOBinding({n: engine.view(v) for n, v in plan.feeds.items()},
                         {n: engine.view(v) for n, v in plan.results.items()}, engine, self._gpu)

    def profile(self, feeds: Mapping[str, Any]) -> list[tuple[str, float]]:
        """Per-step GPU milliseconds at these inputs' shapes (each step replayed on its own as a
        CUDA graph; a step run on the host: its time with the GPU waiting for it)."""
        _, arrays = _device_feeds(feeds)
        engine = self._engine(self._check(arrays))
        if isinstance(engine, SplitRun):
            raise InputError(f"profile(): this model is cut at data-dependent node(s) {engine.split.cut_labels}; "
                             "profile its parts")
        if isinstance(engine, OnHost):
            raise InputError(f"profile(): this model runs on the host at these shapes ({engine.reason})")
        with self._gpu.device:
            return engine.profile(arrays)

    def engine(self, shapes: Mapping[str, Sequence[int]]) -> Engine | OnHost:
        """The GPU engine for these input shapes (specialized now if it is new), or OnHost
        where no static GPU plan holds them."""
        return self._engine({k: tuple(int(d) for d in v) for k, v in shapes.items()})

    def _select(self, shapes: dict[str, tuple[int, ...]]) -> Engine | OnHost | None:
        """The engine a run at ``shapes`` uses (see the class docstring); None: lazy, on the host."""
        from ..backends.cuda.jit import NotSpecialized, shape_signature

        signature = shape_signature(shapes)
        self.last_engine = "specialized"
        if signature in self._engines:
            return self._engines[signature]
        generic = self._generic_for(shapes)
        if generic is None or isinstance(generic, (OnHost, SplitRun)):  # static, outside the ranges, or no one plan
            if generic is not None:
                return generic
            if self.specialization == "lazy":
                return self._lazy_engine(shapes)
            return self._cached_engine(shapes) if self.specialization == "none" else self._engine(shapes)
        if self.specialization == "eager":
            return self._engine(shapes)
        if self.specialization == "lazy":
            self._uses[signature] = self._uses.get(signature, 0) + 1
            if self._uses[signature] >= HOT_USES or signature in self._building:
                specialized = self._lazy_engine(shapes)
                if specialized is not None:
                    return specialized
        elif self._in_cache(signature):
            cached = self._cached_engine(shapes, remember_miss=False)
            if not isinstance(cached, OnHost):
                return cached
        self.last_engine = "generic"
        try:
            engine, stats = generic.engine(shapes, build=self.specialization != "none")
        except NotSpecialized as exc:
            return OnHost(f"{exc} (specialization='none')")
        self._count(stats)
        return engine

    def _generic_for(self, shapes: dict[str, tuple[int, ...]]) -> GenericEngines | OnHost | None:
        """The generic engines serving ``shapes``: the profile's, else ones over default ranges
        made now (None for a static model or shapes outside the default ranges)."""
        if self._generic is None and self.static_input_shapes() is None and self.shape_profile is None:
            self._default_generic_engines(shapes)
        if isinstance(self._generic, (OnHost, SplitRun)) or self._generic is None:
            return self._generic
        return self._generic if self._generic.contains(shapes) else None

    def _default_generic_engines(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Generic engines over default ranges the model takes (default_ranges.py); none where
        no range around ``shapes`` works (every new shape is then specialized on its own)."""
        from ..backends.cuda.generic import default_generic_ranges

        found = default_generic_ranges(self._model, {info.name: info.shape for info in self.inputs}, shapes)
        if found is not None:
            ranges, dims = found
            self._generic_engines(ranges, reserve=False, dims=dims)

    def _generic_engines(self, ranges: Mapping[str, Any], *, reserve: bool, dims: DimRanges | None = None) -> None:
        """The generic engines of ``ranges``, built now."""
        from ..backends.cuda.generic import GenericEngines, varies

        if not varies(ranges):
            return
        generic = GenericEngines(self._model, self.cache_key, self.cache, self._gpu, ranges,
                                 use_graph=self.use_cuda_graph, precompiled=self._precompiled, reserve=reserve,
                                 dims=dims)
        try:
            stats = generic.build(Progress(self.progress, "rtxrt JIT"))
        except DataDependentShape as exc:
            self._generic = self._data_dependent(exc, {n: tuple(r[1]) for n, r in ranges.items()})
            return
        self._generic = generic
        self._count(stats)

    def _count(self, stats: JitStats) -> None:
        self.jit_stats = stats
        self._kernels_compiled += stats.kernels_compiled

    def _engine(self, shapes: dict[str, tuple[int, ...]]) -> Engine | OnHost:
        from ..backends.cuda.jit import shape_signature, specialize

        signature = shape_signature(shapes)
        if signature not in self._engines:
            progress = Progress(self.progress, "rtxrt JIT")
            try:
                specialized = specialize(self._model, self.cache_key, self.cache, self._gpu, shapes, progress=progress,
                                         precompiled=self._precompiled, constants=self._constants())
                engine = specialized.load(self._gpu, use_graph=self.use_cuda_graph, shared=self._shared())
                stats = specialized.stats
            except DataDependentShape as exc:
                self._engines[signature] = self._data_dependent(exc, shapes)
            else:
                self._engines[signature] = engine
                self._count(stats)
        return self._engines[signature]

    def _data_dependent(self, exc: DataDependentShape, shapes: Mapping[str, Sequence[int]]) -> SplitRun | OnHost:
        """No one static plan holds these shapes: the model is cut at its data-dependent nodes,
        which run on the host, and the parts around them on the GPU (one split per cut)."""
        from ..backends.data_dependent import split_model
        from ..backends.parameter_inputs import parameter_inputs

        parameters = parameter_inputs(self._model, exc.needs_values) if exc.needs_values else []
        if parameters:  # a shape that follows from parameters given as inputs (a Slice's starts)
            self._parameters = ParameterRun(self._model, parameters, self._part_session)
            return OnHost(f"the plan needs the values of input(s) {', '.join(parameters)}; it is made per value")
        try:
            split = split_model(self._model, shapes)
        except RtxrtError as why:
            warn(f"rtxrt: {exc}; running this model on the CPU reference backend ({why})")
            on_host = OnHost(f"every node ({exc})")
            self.jit_stats = replace(self.jit_stats, kernels_compiled=0, host_nodes=[on_host.reason])
            return on_host
        key = tuple(split.cut_labels)
        if key not in self._splits:
            self._splits[key] = SplitRun(split, self._part_session)
        run = self._splits[key]
        self.jit_stats = replace(self.jit_stats, host_nodes=run.host_nodes)
        return run

    def _part_session(self, model: Model) -> Session:
        """A session for one part of a split model, with this session's options (the
        profile's ranges for the inputs the part shares with the model)."""
        ranges = self.shape_profile.ranges if self.shape_profile is not None else {}
        profile = {n: ranges[n] for n in model.graph.inputs if n in ranges}
        if profile and len(profile) < len([n for n in model.graph.inputs if n not in model.graph.initializers]):
            profile = {}  # a profile must cover every input; the part's own default ranges then
        return Session(model, device=self._gpu.info.index, cache_dir=self.cache.root, fallback=self._fallback,
                       progress=self.progress, use_cuda_graph=self.use_cuda_graph, profile=profile or None,
                       specialization=self.specialization)

    def _lazy_engine(self, shapes: dict[str, tuple[int, ...]]) -> Engine | OnHost | None:
        """The engine for ``shapes`` if it is ready; else None, with its build running (or
        started now) in a background thread that tunes on a stream and cuBLAS handle of its own."""
        from concurrent.futures import ThreadPoolExecutor

        from ..backends.cuda.jit import GpuContext, shape_signature, specialize

        signature = shape_signature(shapes)
        if signature in self._engines:
            return self._engines[signature]
        future = self._building.get(signature)
        if future is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="rtxrt-jit")

            constants = self._constants()

            def build() -> Any:
                return specialize(self._model, self.cache_key, self.cache, GpuContext(self._gpu.info.index), shapes,
                                  progress=Progress(self.progress if callable(self.progress) else False, "rtxrt JIT"),
                                  precompiled=self._precompiled, constants=constants)

            self._building[signature] = self._pool.submit(build)
            return None
        if not future.done():
            return None
        del self._building[signature]
        try:
            specialized = future.result()  # a failed build raises here, naming what failed
        except DataDependentShape as exc:
            self._engines[signature] = self._data_dependent(exc, shapes)
            return self._engines[signature]
        self._engines[signature] = specialized.load(self._gpu, use_graph=self.use_cuda_graph, shared=self._shared())
        self._count(specialized.stats)
        return self._engines[signature]

    def _in_cache(self, signature: str) -> bool:
        """Whether the runtime cache holds a specialized engine's tactics for this signature."""
        from ..backends.cuda.cache.runtime_cache import TACTICS_BLOB, CacheError

        # (the tactics blob alone: verifying every blob of the entry would cost a new shape more
        # than planning it; loading the engine checks what it reads. Read again only when the
        # entry's manifest changed: a new shape's first run should not wait for the disk.)
        entry = self.cache.entry(self.cache_key)
        stamp = entry.stamp()
        if stamp is None or stamp != self._cached_stamp:
            try:
                self._cached_signatures = set(entry.get_json(TACTICS_BLOB) or {})
            except CacheError:
                self._cached_signatures = set()
            self._cached_stamp = stamp
        return signature in self._cached_signatures

    def _shared(self) -> Any:
        """The memory the generic engines hold, for a specialized engine to share (or None)."""
        from ..backends.cuda.generic import GenericEngines

        return self._generic.shared if isinstance(self._generic, GenericEngines) else None

    def _constants(self) -> dict | None:
        from ..backends.cuda.generic import GenericEngines

        return self._generic.constants if isinstance(self._generic, GenericEngines) else None

    def _cached_engine(self, shapes: dict[str, tuple[int, ...]], remember_miss: bool = True) -> Engine | OnHost:
        """specialization="none": the engine if loaded or in the cache, else OnHost."""
        from ..backends.cuda.jit import NotSpecialized, shape_signature, specialize

        signature = shape_signature(shapes)
        if signature not in self._engines:
            try:
                specialized = specialize(self._model, self.cache_key, self.cache, self._gpu, shapes,
                                         precompiled=self._precompiled, build=False, constants=self._constants())
            except NotSpecialized as exc:
                if not remember_miss:
                    return OnHost(f"{exc} (specialization='none')")
                self._engines[signature] = OnHost(f"{exc} (specialization='none')")
            except DataDependentShape as exc:
                self._engines[signature] = self._data_dependent(exc, shapes)
            else:
                self._engines[signature] = specialized.load(self._gpu, use_graph=self.use_cuda_graph,
                                                            shared=self._shared())
                self._count(specialized.stats)
        return self._engines[signature]

    def wait(self) -> None:
        """Block until every background (lazy) specialization has finished, those of the
        sessions it runs parts of the model on too."""
        for future in list(self._building.values()):
            future.result()
        for split in self._splits.values():
            for part in split.sessions():
                part.wait()
        if self._parameters is not None:
            self._parameters.wait()

    def _run_on_host(self, wanted: list[str], arrays: Mapping[str, Any], kind: Any) -> list[Any]:
        import cupy

        if self._reference is None:
            self._reference = ReferenceExecutor(self.model)
        results = self._reference.run({k: to_host(v) for k, v in arrays.items()}, wanted)
        outputs = [results[n] for n in wanted]
        if kind == "numpy":
            return outputs
        device = [cupy.asarray(o) for o in outputs]
        return device if kind == "cupy" else [kind(d) for d in device]

    def _check(self, arrays: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        graph = self.model.graph
        runtime_inputs = [n for n in graph.inputs if n not in graph.initializers]
        unknown = sorted(set(arrays) - set(runtime_inputs))
        missing = [n for n in runtime_inputs if n not in arrays]
        if unknown or missing:
            raise InputError(f"unknown input(s) {unknown}, missing {missing}; the model's inputs are {runtime_inputs}")
        symbols: dict[str, tuple[int, str]] = {}
        for name, array in arrays.items():
            check_input(name, array, graph.types[name], symbols)
        shapes = {name: tuple(int(d) for d in array.shape) for name, array in arrays.items()}
        if self.shape_profile is not None:
            self.shape_profile.check(shapes)
        return shapes

    def _info(self, name: str) -> IOInfo:
        t = self.model.graph.types.get(name)
        return IOInfo(name, t.dtype.short if t else "unknown", t.shape if t else None)


# --- models ------------------------------------------------------------------------------------


def load_model_and_bytes(source: ModelSource,
                         base_dir: str | os.PathLike | None = None) -> tuple[Model, bytes | Path]:
    """The model and its .rtxir (bytes or path: the cache keys on its header; an .onnx is
    compiled first, reading external data only from ``base_dir`` or its own folder)."""
    from ..format import read_rtxir
    from ..format.layout import MAGIC

    if isinstance(source, Model):
        from ..format import to_bytes

        return source, to_bytes(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if data[: len(MAGIC)] == MAGIC:
            return read_rtxir(data), data
        return _compile_onnx(data, base_dir)
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        return _compile_onnx(path, base_dir)
    return read_rtxir(path), path


def _compile_onnx(source: bytes | Path, base_dir: str | os.PathLike | None) -> tuple[Model, bytes]:
    from ..aot import compile_onnx
    from ..format import read_rtxir, to_bytes

    data = to_bytes(compile_onnx(source, base_dir=base_dir))
    return read_rtxir(data), data


def embedded_cubins(source: bytes | Path, arch: str) -> dict[str, bytes]:
    """The file's cubins for ``arch`` when they may run; else {} with a warning saying why."""
    from ..format import read_cubins

    try:
        return read_cubins(source, arch)
    except FormatError as exc:
        warn(f"rtxrt: not running embedded kernels: {exc}; compiling them instead")
        return {}


# --- arrays ------------------------------------------------------------------------------------


def _device_feeds(feeds: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """("numpy" | "cupy" | a from_dlpack function, arrays numpy or CuPy)."""
    import cupy

    kinds = set()
    arrays = {}
    for name, value in feeds.items():
        if isinstance(value, np.ndarray) or np.isscalar(value) or isinstance(value, (list, tuple)):
            kinds.add("numpy")
            arrays[name] = np.asarray(value)
        elif isinstance(value, cupy.ndarray):
            kinds.add("cupy")
            arrays[name] = value
        elif hasattr(value, "__dlpack__"):
            kinds.add(_from_dlpack_of(value))
            arrays[name] = cupy.from_dlpack(value)
        else:
            raise InputError(f"input {name!r}: expected a numpy, CuPy or DLPack array, got {type(value).__name__}")
    if len(kinds) > 1:
        raise InputError("inputs mix array kinds (numpy, CuPy, DLPack); give them all as one kind")
    return (kinds.pop() if kinds else "numpy"), arrays


def _from_dlpack_of(value: Any) -> Any:
    import importlib

    module = importlib.import_module(type(value).__module__.split(".")[0])
    convert = getattr(module, "from_dlpack", None)
    if convert is None:
        raise InputError(f"{type(value).__name__} arrays: their library has no from_dlpack to return outputs with")
    return convert


def _as_kind(array: Any, kind: Any, dtype: Any) -> Any:
    if kind == "cupy":
        return array
    if kind == "numpy":
        from ..backends.cuda.plan.forms import numpy_dtype

        return array.get().view(numpy_dtype(dtype))
    return kind(array)


def is_cached(source: str | os.PathLike | bytes, *, device: int = 0, cache_dir: str | os.PathLike | None = None,
              precision: str | None = None, shapes: Mapping[str, Sequence[int]] | None = None) -> bool:
    """Will ``Session(source, ...)`` on this GPU load from the runtime cache without compiling
    (True), or JIT (False)? Like TensorRT-RTX's getEngineValidity. ``shapes``: the input shapes
    the app will run (default: the model's static shapes). False without a usable GPU."""
    from ..backends.cuda.cache.runtime_cache import TACTICS_BLOB, RuntimeCache
    from ..backends.cuda.cache.key import CacheKey
    from ..backends.cuda.device import probe
    from ..backends.cuda.jit import shape_signature

    model, data = load_model_and_bytes(source)
    try:
        info = probe(device)
    except RtxrtError:
        return False
    cache = RuntimeCache(cache_dir)
    key = CacheKey.for_model(data, info, {"precision": precision} if precision else {})
    entry = cache.entry(key)
    if entry.problem() is not None:
        return False
    tactics = entry.get_json(TACTICS_BLOB) or {}
    if shapes is None:
        g = model.graph
        shapes = {n: g.types[n].shape for n in g.inputs if n not in g.initializers}
        if not all(all(isinstance(d, int) for d in s or ()) for s in shapes.values()):
            profile = stored_profile(model)
            if profile is not None:  # the generic engine of the file's profile serves every shape in it
                from ..backends.cuda.generic import profile_signature

                return profile_signature(profile.ranges) in tactics
            return True  # cached for the shapes it has run; a new shape runs on their generic engine
    return shape_signature(shapes) in tactics
