"""Whole-model checks on the fake device: plan a model with the real builder, load the real
``Engine`` on a FakeDevice (cubins = the kernels' sources), run it, and check

- ``check_matches_reference``: its outputs against the reference backend's;
- ``check_plan_order``: the device ran the plan's device steps in plan order (each Launch's
  kernel, grid and block, each Gemm, each Copy that moves bytes);
- ``check_bindings``: every pointer of every launch (and cuBLAS call) is the address of the
  buffer its ``KernelArg`` names: input i / output j of the node by default, with a
  ``meaning`` hook for lowerings whose kernels read repacked constants or scratch.

KernelArgs are not kept in the plan (a Launch holds only Refs), so ``KernelCatalog`` records
every KernelSource the generators make while it is installed. Buffers are located through
the finalized plan's layout (``value_layout``), read without going through the Engine's own
Ref-to-pointer path.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtxrt.backends.cuda.codegen.kernel_source import KernelArg, KernelSource
from rtxrt.backends.cuda.plan.builder import FinalPlan, Plan, Step, build_plan, finalize
from rtxrt.backends.cuda.plan.forms import numpy_dtype
from rtxrt.backends.cuda.plan.program import BufferRole, Copy, Gemm, Launch, NodeProgram
from rtxrt.backends.reference.executor import ReferenceExecutor

from .cublas import FakeCublas
from .device import D2D, CopyRecord, FakeDevice, GemmRecord, LaunchRecord

ARCH, SM_COUNT = "sm_86", 46


# ------------------------------------------------------------------------------- kernels

class KernelCatalog(dict):
    """Kernel name -> the KernelSource (with its KernelArgs) that a generator made last;
    ``at(name, dims)``: the one made with those dim values (a generic kernel is made once per
    shape planned, its KernelArgs' shapes those of that shape)."""

    def __init__(self):
        super().__init__()
        self.by_dims: dict[tuple[str, tuple[int, ...]], KernelSource] = {}

    def at(self, name: str, dims: Sequence[int] = ()) -> KernelSource | None:
        return self.by_dims.get((name, tuple(int(d) for d in dims)), self.get(name))

    def install(self, monkeypatch: Any) -> KernelCatalog:
        """Record every KernelSource (and subclass) constructed while the test runs."""
        from rtxrt.backends.cuda import codegen, ops

        for package in (codegen, ops):  # every generator module, so every subclass is defined
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{info.name}")
        classes, todo = [], [KernelSource]
        while todo:
            cls = todo.pop()
            classes.append(cls)
            todo.extend(cls.__subclasses__())
        for cls in classes:
            if "__init__" not in cls.__dict__:
                continue
            original = cls.__dict__["__init__"]

            def init(self, *args, _original=original, **kwargs):
                _original(self, *args, **kwargs)
                catalog[self.name] = self
                catalog.by_dims[(self.name, tuple(int(d) for d in self.dims))] = self

            catalog = self
            monkeypatch.setattr(cls, "__init__", init)
        return self


# ------------------------------------------------------------------------------- plans and engines

def plan_model(model, shapes: Mapping[str, Sequence[int]], *, tune: bool = True, dims: Any = None,
               constants: dict | None = None, prefer: Mapping[str, str] | None = None, templates: Any = None) -> Plan:
    """The real builder's plan of ``model`` at ``shapes``; ``dims`` (plan/dim_ranges.py): a
    generic plan of that profile, ``constants`` the builder's memo shared between its plans
    (``prefer`` and ``templates``: build_plan's)."""
    return build_plan(model, {k: tuple(v) for k, v in shapes.items()}, arch=ARCH, sm_count=SM_COUNT, tune=tune,
                      dims=dims, constants=constants, prefer=prefer, templates=templates)


def choose(plan: Plan, prefer: Callable[[Step, NodeProgram], bool]) -> dict[int, int]:
    """Step index -> the first candidate ``prefer`` accepts (steps where none does keep the default)."""
    choices = {}
    for i, step in enumerate(plan.steps):
        for c, program in enumerate(step.candidates):
            if prefer(step, program):
                choices[i] = c
                break
    return choices


def load_engine(device: FakeDevice, final: FinalPlan, *, use_graph: bool = True,
                mutate: Callable[[str, str], str] | None = None, shared: Any = None, stream: Any = None):
    """The real Engine on ``device`` (installed), its "cubins" the kernels' CUDA sources;
    ``mutate(name, source)`` may change a source on its way to the device (a planted bug);
    ``shared``: the executor's SharedMemory (kernels, weights, arena) of the engines of one
    model, ``stream`` theirs (engines sharing an arena run on one stream)."""
    from rtxrt.backends.cuda.run.executor import Engine

    stream = stream if stream is not None else device.cupy.cuda.Stream(non_blocking=True)
    sources = {name: (mutate(name, src) if mutate else src) for name, src in final.kernels.items()}
    cubins = {name: src.encode() for name, src in sources.items()}
    return Engine(final, cubins, stream=stream, cublas=FakeCublas(device, stream), use_graph=use_graph,
                  shared=shared)


@dataclass
class Run:
    """One model run on the fake device: the engine, its outputs (host arrays) and the
    device's records of the run (from the feeds' upload to the results' download)."""

    engine: Any
    outputs: dict[str, np.ndarray]
    records: list[Any]

    def again(self, feeds: Mapping[str, np.ndarray]) -> Run:
        """The same engine on new feeds (a CUDA graph is replayed, not captured again)."""
        device = engine_device(self.engine)
        mark = device.mark()
        outputs = run_engine(self.engine, feeds)
        return Run(self.engine, outputs, device.since(mark))


def run_model(device: FakeDevice, model, feeds: Mapping[str, np.ndarray], *,
              prefer: Callable[[Step, NodeProgram], bool] | None = None, use_graph: bool = True,
              mutate: Callable[[str, str], str] | None = None,
              edit: Callable[[FinalPlan], Any] | None = None) -> Run:
    """Plan ``model`` (an IR model) at the feeds' shapes, pick tactics with ``prefer`` (else
    each step's first), let ``edit`` change the finalized plan (a planted bug), load the
    Engine on ``device`` and run it once."""
    plan = plan_model(model, {k: v.shape for k, v in feeds.items()})
    final = finalize(plan, choose(plan, prefer) if prefer else None)
    if edit is not None:
        edit(final)
    engine = load_engine(device, final, use_graph=use_graph, mutate=mutate)
    mark = device.mark()
    outputs = run_engine(engine, feeds)
    return Run(engine, outputs, device.since(mark))


def run_engine(engine, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs as host arrays of their logical types."""
    outputs = engine.run({k: np.ascontiguousarray(v) for k, v in feeds.items()})
    plan = engine.plan
    return {name: out.get().view(numpy_dtype(plan.forms[plan.results[name]].dtype)).reshape(out.shape)
            for name, out in outputs.items()}


def reference_outputs(model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return ReferenceExecutor(model).run(dict(feeds))


def check_matches_reference(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], *, tol: float,
                            what: str = "") -> None:
    """Every output within ``tol`` of the reference, relative to the output's largest
    magnitude (at least 1): fp16 storage rounds each value, so relative to the values
    themselves would fail where they cancel to near zero."""
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, w in want.items():
        g, w = np.asarray(got[name], np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape, f"{what} {name}: shape {g.shape} vs reference {w.shape}"
        scale = max(1.0, float(np.nanmax(np.abs(w))) if w.size else 1.0)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale, equal_nan=True,
                                   err_msg=f"{what} output {name} differs from the reference")


TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 4e-2}


def cublas_tactic(step: Step, program: NodeProgram) -> bool:
    """Prefer cuBLAS and the epilogue kernel where a node has that tactic (its own GEMM
    kernels are tiled: the interpreter cannot run them)."""
    return "cublas" in program.label


def check_model(device: FakeDevice, proto, feeds_list: Sequence[Mapping[str, np.ndarray]], precision: str, *,
                prefer: Callable[[Step, NodeProgram], bool] | None = None, use_graph: bool = True,
                mutate: Callable[[str, str], str] | None = None,
                edit: Callable[[FinalPlan], Any] | None = None) -> list[Run]:
    """Run the ONNX model ``proto``, AOT-compiled at ``precision``, on the fake device once
    per feeds (one engine: later runs replay the graph the first captured, on new inputs)
    and compare with the reference backend running the original model (``TOLERANCE``); the
    device must also have run the plan's steps in plan order. Returns the runs."""
    from .models import compiled, original

    model, reference = compiled(proto, precision), original(proto)
    run = run_model(device, model, feeds_list[0], prefer=prefer, use_graph=use_graph, mutate=mutate, edit=edit)
    runs = [run] + [run.again(feeds) for feeds in feeds_list[1:]]
    for k, (r, feeds) in enumerate(zip(runs, feeds_list)):
        check_plan_order(r.engine, r.records)
        check_matches_reference(r.outputs, reference_outputs(reference, feeds), tol=TOLERANCE[precision],
                                what=f"{precision} run {k}")
    return runs


# ------------------------------------------------------------------------------- the layout

@dataclass(frozen=True)
class Buffer:
    """What a pointer should point at: a device ``value`` (by its plan name), or one of the
    step's program's own ``const`` or ``scratch`` buffers (by the program's name for it)."""

    kind: str  # "value", "const" or "scratch"
    name: str

    def __str__(self) -> str:
        return self.name if self.kind == "value" else f"the program's {self.kind} {self.name!r}"


def allocation_bases(engine) -> dict[Any, int]:
    """Allocation (plan/arena.py) -> the device address of the engine's allocation of it,
    taken from the engine's own memory (the arena, the weights, the shape constants), not
    from the engine's table of them."""
    from rtxrt.backends.cuda.plan.arena import Allocation

    bases = {Allocation.ARENA: engine.arena.ptr, Allocation.WEIGHTS: engine.weights.ptr}
    shape_consts = getattr(engine, "shape_consts", None)
    if shape_consts is not None:
        bases[Allocation.SHAPE] = shape_consts.ptr
    return bases


def value_layout(engine) -> Callable[[int, Buffer], tuple[int, int]]:
    """(step index, buffer) -> (address, bytes), from the finalized plan's layout and the
    engine's allocations (the arena, the weights, the shape constants)."""
    final, plan = engine.final, engine.plan
    bases = allocation_bases(engine)
    layout = final.layout

    def locate(i: int, buffer: Buffer) -> tuple[int, int]:
        program = final.programs[i]
        if buffer.kind == "value":
            nbytes = plan.forms[buffer.name].nbytes
            place = layout.values[buffer.name]
        elif buffer.kind == "const":
            nbytes = program.consts[buffer.name].nbytes
            place = layout.steps[i].consts[buffer.name]
        else:
            nbytes = program.scratch[buffer.name]
            place = layout.steps[i].scratch[buffer.name]
        return bases[place.allocation] + place.offset, nbytes

    return locate


def buffers_at(engine, i: int, address: int) -> list[str]:
    """Every buffer step ``i`` could mean by ``address`` (several where the arena reuses
    memory): for messages."""
    locate = value_layout(engine)
    plan, program, step = engine.plan, engine.final.programs[i], engine.plan.steps[i]
    candidates = [Buffer("value", v) for v in plan.forms if v in _placed(engine)]
    candidates += [Buffer("const", c) for c in program.consts] + [Buffer("scratch", s) for s in program.scratch]
    found = []
    for buffer in candidates:
        start, nbytes = locate(i, buffer)
        if start <= address < start + max(nbytes, 1):
            role = ""
            if buffer.kind == "value" and buffer.name in step.inputs:
                role = f" (input {step.inputs.index(buffer.name)})"
            elif buffer.kind == "value" and buffer.name in step.outputs:
                role = f" (output {step.outputs.index(buffer.name)})"
            found.append(f"{buffer}{role}" + (f" + {address - start}" if address != start else ""))
    return found or [engine_device(engine).memory.describe(address)]


def resolve_launches(engine, records: Sequence[Any]) -> list[tuple[str, str, list[str]]]:
    """(step label, kernel, what each pointer argument points at) for every launch of one run,
    through the plan's layout: the graph values (device value names), constants and scratch."""
    return [(engine.plan.steps[i].label, record.kernel, [" or ".join(buffers_at(engine, i, p)) for p in record.args])
            for i, op, record in check_plan_order(engine, records) if isinstance(op, Launch)]


def _placed(engine) -> set[str]:
    layout = getattr(engine.final, "layout", None)
    if layout is not None:
        return set(layout.values)
    return set(engine.final.memory.offsets) | set(engine.final.const_offsets)


def engine_device(engine) -> FakeDevice:
    return engine.stream.device


# ------------------------------------------------------------------------------- plan order

def device_operations(engine, records: Sequence[Any]) -> list[Any]:
    """The records of the engine's own steps among ``records``: launches, cuBLAS calls, and
    copies inside its arena (not the feeds' uploads or the results' downloads)."""
    device = engine_device(engine)
    arena = device.memory.find(engine.arena.ptr)[0]
    ops = []
    for r in records:
        if isinstance(r, (LaunchRecord, GemmRecord)):
            ops.append(r)
        elif isinstance(r, CopyRecord) and r.kind == D2D and device.memory.find(r.dst)[0] is arena:
            ops.append(r)
    return ops


def expected_operations(engine) -> list[tuple[int, Any]]:
    """(step index, Launch / Gemm / Copy) the plan runs on the device, in plan order (a Copy
    whose source and destination coincide moves nothing and is not enqueued)."""
    locate = value_layout(engine)
    ops = []
    for i, (step, program) in enumerate(zip(engine.plan.steps, engine.final.programs)):
        if program.on_host:
            continue
        for s in program.steps:
            if isinstance(s, Copy):
                src, dst = (locate(i, ref_buffer(step, r))[0] + r.offset for r in (s.src, s.dst))
                if src == dst or not s.nbytes:
                    continue
            ops.append((i, s))
    return ops


def check_plan_order(engine, records: Sequence[Any]) -> list[tuple[int, Any, Any]]:
    """The device ran exactly the plan's device operations, in plan order (a launch with its
    grid, block and dim arguments); returns (step index, plan operation, record) triples."""
    want, got = expected_operations(engine), device_operations(engine, records)

    def describe(op: Any) -> str:
        if isinstance(op, (Launch, LaunchRecord)):
            dims = tuple(int(d) for d in (op.dims if isinstance(op, Launch) else op.scalars))
            text = f"launch {op.kernel} grid {tuple(op.grid)} block {tuple(op.block)}"
            return text + (f" dims {dims}" if dims else "")
        if isinstance(op, (Gemm, GemmRecord)):
            return f"gemm {op.m}x{op.n}x{op.k}"
        return f"copy {op.nbytes} bytes"

    want_text = [f"step {i} ({engine.plan.steps[i].label}): {describe(op)}" for i, op in want]
    got_text = [describe(r) for r in got]
    assert [w.split(": ", 1)[1] for w in want_text] == got_text, (
        "the device did not run the plan's steps in plan order:\nplan:\n  " + "\n  ".join(want_text)
        + "\ndevice:\n  " + "\n  ".join(got_text))
    return [(i, op, r) for (i, op), r in zip(want, got)]


# ------------------------------------------------------------------------------- bindings

Meaning = Callable[[KernelArg, Step, NodeProgram, int], Buffer]


def node_buffer(arg: KernelArg, step: Step, program: NodeProgram, launch: int) -> Buffer:
    """The default meaning of a KernelArg of the program's ``launch``-th launch: input
    ``index`` / output ``index`` of the node; in a conversion of two kernels (a cast, then a
    transpose) the value between them is the program's scratch "cast"."""
    launches = sum(isinstance(s, Launch) for s in program.steps)
    if step.node is None and launches == 2 and "cast" in program.scratch:
        if (launch, arg.role) in ((0, BufferRole.OUT), (1, BufferRole.IN)):
            return Buffer("scratch", "cast")
    values = step.inputs if arg.role is BufferRole.IN else step.outputs
    assert arg.index < len(values) and values[arg.index], (
        f"{step.label}: kernel argument {arg.name} is {arg.role} {arg.index}, which the node does not have")
    return Buffer("value", values[arg.index])


def ref_buffer(step: Step, ref: Any) -> Buffer:
    if ref.role in (BufferRole.IN, BufferRole.OUT):
        return Buffer("value", (step.inputs if ref.role is BufferRole.IN else step.outputs)[ref.key])
    return Buffer(ref.role.value, ref.key)


# A cuBLAS call's operands as the KernelArgs of the GEMM it stands for (A, B: inputs 0 and 1; D: output 0).
GEMM_OPERANDS = {"a": ("A", BufferRole.IN, 0), "b": ("B", BufferRole.IN, 1), "c": ("D", BufferRole.OUT, 0)}


def check_bindings(engine, catalog: Mapping[str, KernelSource], records: Sequence[Any], *,
                   meaning: Meaning = node_buffer) -> int:
    """Every pointer of every launch and cuBLAS call of one run (``records``) points at the
    start of the buffer its KernelArg means, and the KernelArg's extent fits that buffer; a
    launch's scalar arguments after the pointers are its kernel's dim arguments, the values
    the plan's Launch carries (those of the shape planned). Returns how many pointers were
    checked."""
    locate = value_layout(engine)
    checked = 0
    for i, op, record in check_plan_order(engine, records):
        step, program = engine.plan.steps[i], engine.final.programs[i]
        launch = [s for s in program.steps if isinstance(s, Launch)].index(op) if isinstance(op, Launch) else -1
        if isinstance(op, Launch):
            at = getattr(catalog, "at", None)
            kernel = at(op.kernel, op.dims) if at is not None else catalog.get(op.kernel)
            assert kernel is not None, f"{step.label}: no KernelSource recorded for {op.kernel}"
            assert len(record.args) == len(kernel.args), (
                f"{step.label}: {op.kernel} launched with {len(record.args)} pointers for {len(kernel.args)} "
                f"kernel arguments {[a.name for a in kernel.args]}")
            assert tuple(record.scalars) == tuple(int(d) for d in op.dims), (
                f"{step.label}: {op.kernel} launched with dim arguments {tuple(record.scalars)}, "
                f"the plan's launch has {tuple(op.dims)}")
            assert len(op.dims) == len(kernel.dims), (
                f"{step.label}: {op.kernel} takes {len(kernel.dims)} dim arguments, the launch passes {len(op.dims)}")
            pairs = [(arg, ptr, arg.name) for arg, ptr in zip(kernel.args, record.args)]
        elif isinstance(op, Gemm):
            pairs = []
            for field_name, (name, role, index) in GEMM_OPERANDS.items():
                arg = KernelArg(name, role, index, op.dtype if field_name != "c" else op.out_dtype, ())
                pairs.append((arg, getattr(record, field_name), f"cuBLAS {field_name.upper()}"))
        else:
            continue
        for arg, ptr, what in pairs:
            buffer = meaning(arg, step, program, launch)
            address, nbytes = locate(i, buffer)
            assert ptr == address, (
                f"step {i} ({step.label}): {what} ({arg.role} {arg.index}) should point at {buffer}, "
                f"but points at {', '.join(buffers_at(engine, i, ptr))}")
            extent = math.prod(int(d) for d in arg.shape) * arg.dtype.itemsize
            assert extent <= nbytes, (f"step {i} ({step.label}): {what} spans {extent} bytes, "
                                      f"but {buffer} holds {nbytes}")
            checked += 1
    return checked


# What FusedConv's kernels point at, by KernelArg (see rtxrt.backends.cuda.ops.conv): the conv
# uploads its weights (input 1) packed as [OC, K] and its bias (input 2) as constants of its
# own; im2col writes the patch matrix into the scratch "workspace", and the GEMM after it (its
# A, input 0) multiplies that. A grouped conv on cuBLAS writes the product (cuBLAS's D) into
# the scratch "product", which its epilogue kernel reads. ConvTranspose reads its repacked
# weights and its bias as its constants "W" and "B".
# Everything else is the node's own input or output.
CONV_CONSTANTS = {1: "W", 2: "bias"}
CONV_TRANSPOSE_CONSTANTS = {1: "W", 2: "B"}


def conv_buffer(arg: KernelArg, step: Step, program: NodeProgram, launch: int) -> Buffer:
    if step.node is not None and step.node.op_type == "ConvTranspose":  # weights and bias as constants "W", "B"
        if arg.role is BufferRole.IN and CONV_TRANSPOSE_CONSTANTS.get(arg.index) in program.consts:
            return Buffer("const", CONV_TRANSPOSE_CONSTANTS[arg.index])
        return node_buffer(arg, step, program, launch)
    if step.node is None or step.node.op_type not in ("FusedConv", "Conv"):
        return node_buffer(arg, step, program, launch)
    if arg.name == "workspace" or (arg.role is BufferRole.IN and arg.index == 0 and arg.name == "A"
                                   and "workspace" in program.scratch):
        return Buffer("scratch", "workspace")
    if "product" in program.scratch and (arg.name == "product" or (arg.role is BufferRole.OUT and arg.name == "D")):
        return Buffer("scratch", "product")
    if arg.role is BufferRole.IN and arg.index in CONV_CONSTANTS:
        return Buffer("const", CONV_CONSTANTS[arg.index])
    return node_buffer(arg, step, program, launch)
