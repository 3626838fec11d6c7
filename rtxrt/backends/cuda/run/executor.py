"""Runs a finalized plan on the GPU: one arena for every intermediate value, one for the
weights, kernels loaded from cubins, one stream, and each run of device steps captured once
as a CUDA graph and replayed (host fallback steps, where a model has them, sit between
graphs)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ....errors import ExecutionError
from ....ir.graph import Graph, Model
from ...reference.executor import ReferenceExecutor
from ..plan.arena import Allocation, Place
from ..plan.builder import FinalPlan, Step
from ..plan.forms import TensorForm, device_dtype, from_form, numpy_dtype, to_form
from ..plan.program import Copy, Gemm, HostRun, Launch, NodeProgram, Ref
from ..tune.timing import gpu_milliseconds

H2D, D2H, D2D = 1, 2, 3  # cudaMemcpyKind
_GEMM_OPTIONS = ("dtype", "out_dtype", "compute", "trans_a", "trans_b", "lda", "ldb", "ldc", "alpha", "beta",
                 "batch", "stride_a", "stride_b", "stride_c")


def load_functions(cubins: Mapping[str, bytes]) -> dict[str, Any]:
    """Kernel name -> loaded CuPy function (one module per cubin; a function keeps its
    module alive)."""
    from cupy.cuda.function import Module

    functions = {}
    for name, cubin in cubins.items():
        module = Module()
        module.load(cubin)
        functions[name] = module.get_function(name)
    return functions


def step_calls(program: NodeProgram, address: Callable[[Ref], int], functions: Mapping[str, Any],
               cublas: Any, stream: Any) -> list[Callable[[], None]]:
    """Zero-argument callables enqueuing ``program``'s device steps on ``stream`` with every
    pointer resolved by ``address``."""
    import cupy

    calls: list[Callable[[], None]] = []
    for step in program.steps:
        if isinstance(step, Launch):
            fn = functions[step.kernel]
            args = tuple(np.uint64(address(r)) for r in step.args) + tuple(np.int32(d) for d in step.dims)
            calls.append(lambda fn=fn, s=step, args=args: fn(s.grid, s.block, args, stream=stream))
        elif isinstance(step, Gemm):
            a, b, c = address(step.a), address(step.b), address(step.c)
            kw = {key: getattr(step, key) for key in _GEMM_OPTIONS}
            calls.append(lambda a=a, b=b, c=c, s=step, kw=kw: cublas.gemm(a, b, c, s.m, s.n, s.k, **kw))
        elif isinstance(step, Copy):
            src, dst = address(step.src), address(step.dst)
            if src != dst and step.nbytes:
                calls.append(lambda src=src, dst=dst, n=step.nbytes: cupy.cuda.runtime.memcpyAsync(
                    dst, src, n, D2D, stream.ptr))
        elif not isinstance(step, HostRun):
            raise ExecutionError(f"unknown step {step!r}")
    return calls


@dataclass
class SharedMemory:
    """What the engines of one model on one stream share: loaded kernels, the weights (where
    an engine's weights layout is the one held) and one arena (runs on one stream never
    overlap). ``arena_bytes``: reserve this much at the first engine (the profile's largest)."""

    arena_bytes: int = 0
    functions: dict[str, Any] = field(default_factory=dict)
    arena: Any = None
    weights: Any = None
    weights_key: tuple = ()
    own_bytes: int = 0  # what engines allocated for themselves (shape constants, a larger arena)

    @property
    def device_bytes(self) -> int:
        held = (self.arena.mem.size if self.arena is not None else 0) + \
            (self.weights.mem.size if self.weights is not None else 0)
        return held + self.own_bytes


class Engine:
    """A plan loaded on the GPU. ``run`` takes device arrays already checked against the
    inputs' logical types and returns CuPy arrays (enqueued on ``stream``). ``shared``: the
    memory this engine may share with the other engines of its model (else it owns its own)."""

    def __init__(self, final: FinalPlan, cubins: Mapping[str, bytes], *, stream: Any, cublas: Any,
                 use_graph: bool = True, shared: SharedMemory | None = None):
        import cupy

        self.final, self.plan, self.layout = final, final.plan, final.layout
        self.stream, self.cublas = stream, cublas
        self.use_graph = use_graph
        shared = shared if shared is not None else SharedMemory()
        self.shared, self.own_bytes = shared, 0  # own_bytes: what it allocated for itself alone
        self.arena = self._arena(shared)
        weights_key = tuple((place.offset, id(array)) for place, array in final.constants()
                            if place.allocation is Allocation.WEIGHTS)
        upload_weights = shared.weights is None or shared.weights_key != weights_key
        if shared.weights is None:
            shared.weights, shared.weights_key = cupy.cuda.alloc(max(self.layout.weights_bytes, 1)), weights_key
            self.weights = shared.weights
        elif upload_weights:
            self.weights = cupy.cuda.alloc(max(self.layout.weights_bytes, 1))
            self._own(self.weights.mem.size)
        else:
            self.weights = shared.weights
        self.shape_consts = cupy.cuda.alloc(max(self.layout.shape_bytes, 1))
        self._own(self.shape_consts.mem.size)
        self.bases = {Allocation.ARENA: self.arena.ptr, Allocation.WEIGHTS: self.weights.ptr,
                      Allocation.SHAPE: self.shape_consts.ptr}
        missing = {n: cubins[n] for n in final.kernels if n not in shared.functions}
        shared.functions.update(load_functions(missing))
        self.functions = {n: shared.functions[n] for n in final.kernels}
        self._upload_constants(upload_weights)
        self.segments: list[tuple[str, Any]] = []  # ("device", [calls]) or ("host", step)
        self.step_calls: list[tuple[str, list[Callable[[], None]]]] = []
        self.host_steps: set[int] = set()  # indexes into step_calls
        for i, (step, program) in enumerate(zip(self.plan.steps, final.programs)):
            if program.on_host:
                self.host_steps.add(len(self.step_calls))
                self.segments.append(("host", step))
                self.step_calls.append((step.label, [lambda step=step: self._run_host(step)]))
                continue
            calls = step_calls(program, self.layout.steps[i].addresses(self.bases), self.functions, cublas, stream)
            self.step_calls.append((step.label, calls))
            if not self.segments or self.segments[-1][0] != "device":
                self.segments.append(("device", []))
            self.segments[-1][1].extend(calls)
        self._graphs: list[Any] | None = None
        self._launched = False

    def _arena(self, shared: SharedMemory) -> Any:
        import cupy

        need = max(self.layout.arena_bytes, 1)
        if shared.arena is None:
            shared.arena = cupy.cuda.alloc(max(need, shared.arena_bytes))
        if shared.arena.mem.size >= need:
            return shared.arena
        self._own(need)  # a shape needing more than the profile reserved
        return cupy.cuda.alloc(need)

    def _own(self, nbytes: int) -> None:
        self.own_bytes += nbytes
        self.shared.own_bytes += nbytes

    def release(self) -> None:
        """Give back what this engine allocated for itself (its shape constants, an arena or
        weights of its own) and its CUDA graphs; the memory it shares stays. It cannot run
        again."""
        self.shared.own_bytes -= self.own_bytes
        self.own_bytes = 0
        self.arena = self.weights = self.shape_consts = None
        self._graphs, self.segments, self.step_calls = None, [], []

    @property
    def device_bytes(self) -> int:
        return self.layout.arena_bytes + self.layout.weights_bytes + self.layout.shape_bytes

    @property
    def uses_graph(self) -> bool:
        return self.use_graph

    # --- addresses ---------------------------------------------------------------------------

    def value_address(self, value: str) -> int:
        return self._pointer(self.layout.values[value])

    def _pointer(self, place: Place) -> int:
        return self.bases[place.allocation] + place.offset

    def _upload_constants(self, weights: bool = True) -> None:
        uploads = [(place, np.ascontiguousarray(array)) for place, array in self.final.constants()
                   if weights or place.allocation is not Allocation.WEIGHTS]
        for place, array in uploads:
            if array.nbytes:
                self._copy(self._pointer(place), array.ctypes.data, array.nbytes, H2D)
        self.stream.synchronize()  # the host arrays must outlive their copies

    # --- running -----------------------------------------------------------------------------

    def view(self, value: str) -> Any:
        """A CuPy array over the arena bytes of device value ``value`` (logical form): no
        copy, valid while the engine lives, overwritten by the next run."""
        import cupy

        form = self.plan.forms[value]
        memory = cupy.cuda.UnownedMemory(self.value_address(value), max(form.nbytes, 1), self.arena)
        return cupy.ndarray(form.shape, _cupy_dtype(form), cupy.cuda.MemoryPointer(memory, 0))

    def launch(self) -> None:
        """Enqueue one run on the inputs already in the arena (see ``view``). The first run
        launches the kernels one by one; the second captures the CUDA graph that every later
        run replays (a shape met once, as a generic engine meets many, pays no capture)."""
        first = not self._launched
        self._launched = True
        if self.use_graph and not first:
            if self._graphs is None:
                self._graphs = self._capture()
            for kind, item in self._graphs:
                item.launch(self.stream) if kind == "device" else self._run_host(item)
        else:
            for kind, item in self.segments:
                if kind == "device":
                    for call in item:
                        call()
                else:
                    self._run_host(item)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """``feeds``: input name -> CuPy or numpy array of the logical type and this engine's
        shape. Returns output name -> a new CuPy array (logical type)."""
        import cupy

        for name, array in feeds.items():
            dst = self.value_address(self.plan.feeds[name])
            if isinstance(array, np.ndarray):
                array = np.asarray(array, order="C")
                cupy.cuda.runtime.memcpyAsync(dst, array.ctypes.data, array.nbytes, H2D, self.stream.ptr)
            else:
                array = cupy.ascontiguousarray(array)
                cupy.cuda.runtime.memcpyAsync(dst, array.data.ptr, array.nbytes, D2D, self.stream.ptr)
        self.launch()
        outputs = {}
        with self.stream:
            for name, value in self.plan.results.items():
                form = self.plan.forms[value]
                out = cupy.empty(form.shape, _cupy_dtype(form))
                cupy.cuda.runtime.memcpyAsync(out.data.ptr, self.value_address(value), form.nbytes, D2D, self.stream.ptr)
                outputs[name] = out
        return outputs

    def _capture(self) -> list[tuple[str, Any]]:
        graphs = []
        for kind, item in self.segments:
            if kind != "device":
                graphs.append((kind, item))
                continue
            self.stream.begin_capture()
            try:
                for call in item:
                    call()
            finally:
                graph = self.stream.end_capture()
            graphs.append(("device", graph))
        return graphs

    def profile(self, feeds: Mapping[str, Any]) -> list[tuple[str, float]]:
        """Milliseconds of every step: a device step replayed on its own as a CUDA graph
        (timing.py), so those add up to about one graph replay of the whole run; a host step
        run once, with the GPU waiting for it."""
        self.run(feeds)
        return [(label, self._host_milliseconds(calls) if i in self.host_steps else gpu_milliseconds(calls, self.stream))
                for i, (label, calls) in enumerate(self.step_calls)]

    def _host_milliseconds(self, calls: list[Callable[[], None]]) -> float:
        import cupy

        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(self.stream)
        for call in calls:
            call()
        end.record(self.stream)
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end)

    # --- host fallback -----------------------------------------------------------------------

    def _run_host(self, step: Step) -> None:
        """Runs ``step.node`` with the reference backend: reads copied down, results up."""
        env = {name: self.plan.host_values[name] for name, value in step.host_reads.items() if value is None}
        downloads = {}
        for name, value in step.host_reads.items():
            if value is not None:
                form = self.plan.forms[value]
                downloads[name] = (np.empty(form.physical, numpy_dtype(form.dtype)), form)
                self._copy(downloads[name][0].ctypes.data, self.value_address(value), form.nbytes, D2H)
        self.stream.synchronize()  # the step's inputs, and everything before them, are done
        env.update({name: from_form(host, form, form.dtype) for name, (host, form) in downloads.items()})
        node = step.node
        graph = Graph([node], sorted(env), [o for o in node.outputs if o], name=node.name or node.op_type)
        graph.types = {n: t for n, t in self.plan.model.graph.types.items() if n in env or n in node.outputs}
        model = Model(graph, dict(self.plan.model.opsets))
        try:
            results = ReferenceExecutor(model).run(env)
        except Exception as exc:
            raise ExecutionError(f"{node.label} (run on the host): {exc}") from exc
        uploads = []
        for name, value in zip(node.outputs, step.outputs):
            if not name:
                continue
            form: TensorForm = self.plan.forms[value]
            uploads.append(to_form(results[name], form))
            self._copy(self.value_address(value), uploads[-1].ctypes.data, uploads[-1].nbytes, H2D)
        self.stream.synchronize()  # the host arrays must outlive their copies

    def _copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        """A copy ordered on our stream. Never the synchronous memcpy: from pageable host memory
        it may return before the data reaches the device, and our non-blocking stream does not
        wait for the legacy stream it runs on, so the next kernel could read stale bytes."""
        import cupy

        cupy.cuda.runtime.memcpyAsync(dst, src, nbytes, kind, self.stream.ptr)


def _cupy_dtype(form: TensorForm) -> Any:
    return device_dtype(form.dtype)
