"""Plans a model for the CUDA backend at concrete input shapes, without touching a GPU.

1. Specialize: bind the input shapes, infer every type, and compute the values that follow
   from shapes alone (shape arithmetic) once, as constants.
2. Lower each node to candidate ``NodeProgram``s. A node first sees its inputs in the forms
   the AOT annotations give them (``graph.storage``), then as they are held now; where its
   lowering cannot take those, it sees them in the logical layout, then in the logical type,
   and as a last resort it runs on the host. The
   conversions this needs are inserted once per value and form and shared by every reader.
3. ``finalize(choices)`` fixes one program per node (the autotuner's choice, else the first)
   and plans the arena: every device value and scratch buffer gets an offset (buffers reused
   by liveness, views aliased); constants get a weight arena of their own. The result's
   ``layout`` (arena.py) places every buffer each step's Refs name.

Device values are named apart from graph values where a value is held in more than one
form (``name@form``), so the memory plan sees each form as its own buffer.

A generic plan (``dims``: the DimRanges of a shape profile) hands each lowering the dims that
vary over the profile as DimInts (codegen/dynamic.py): its kernels take them as arguments, so
the plan at any shape of the profile needs the same kernels as at the opt shape. Planning again
at a new shape is then cheap: ``constants`` carries the model's constants, converted once,
from one plan to the next.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ....errors import GraphError, UnsupportedOpError
from ....ir.dtypes import DType
from ....ir.graph import Graph, Model, Node, TensorType
from ....ir.ops import facts_of
from ...data_dependent import is_runtime_if
from ...memory_plan import Lifetime, MemoryPlan, fit_in, node_reads, plan_lifetimes, plan_time_values, specialize
from ...reference.kernel import find_kernel
from .forms import TensorForm, stored_form, to_form
from ..codegen.dynamic import DimInt, current_bindings, dim_bindings
from ..ops import LowerContext, Unsupported, lower
from ..ops.context import NeedsValue, WrongForm, kernel_args, launch_of
from ..ops.data_movement import conversion
from ..ops.lowering import shape_agnostic
from .arena import Allocation, ArenaLayout, Place, StepLayout, aligned, pack
from .dim_ranges import DimRanges
from .lowering_memo import LoweringMemo, form_key, lowering_key
from .lowering_templates import LoweringTemplates, plain
from .program import Copy, HostRun, NodeProgram, Ref

HOST_LABEL = "host"


class DataDependentShape(GraphError):
    """A value's shape depends on input data (NonZero, Unique, ...): no static plan exists.
    ``needs_values``: the node's parameters not known when the plan was made (a Slice's
    starts given as an input), whose values would make its shape static."""

    def __init__(self, message: str, needs_values: frozenset[str] = frozenset()):
        super().__init__(message)
        self.needs_values = needs_values


@dataclass
class Step:
    """One node (or one inserted conversion) with its candidate programs. ``inputs`` and
    ``outputs`` name device values by position (None: omitted); ``node`` is the graph node
    (None for a conversion)."""

    label: str
    candidates: list[NodeProgram]
    inputs: list[str | None]
    outputs: list[str | None]
    node: Node | None = None
    why_host: str = ""  # why the node runs on the host, when it does
    # A host step reads graph values by name (inputs and its subgraphs' outer values):
    # graph name -> device value, or None for a constant the host already has.
    host_reads: dict[str, str | None] = field(default_factory=dict)


@dataclass
class Plan:
    """The lowered model at one set of input shapes. ``forms``: every device value's form;
    ``consts``: device constants (host arrays already in their device form); ``feeds``
    / ``results``: graph input and output names -> device values (logical forms)."""

    model: Model
    steps: list[Step]
    forms: dict[str, TensorForm]
    consts: dict[str, np.ndarray]
    feeds: dict[str, str]
    results: dict[str, str]
    input_shapes: dict[str, tuple[int, ...]]
    host_values: dict[str, np.ndarray] = field(default_factory=dict)
    shape_consts: set[str] = field(default_factory=set)  # consts that follow from the input shapes
    dims: DimRanges | None = None  # a generic plan's: its kernels take these varying dims as arguments
    # Values a host step's lowering needed when the plan was made but were not known then
    # (computed from graph inputs): planning per value of those inputs puts the step on the GPU.
    needs_values: frozenset[str] = frozenset()

    @property
    def kernels(self) -> dict[str, str]:
        """Every kernel any candidate needs: name -> source."""
        return {name: src for step in self.steps for p in step.candidates for name, src in p.kernels.items()}

    @property
    def host_steps(self) -> list[Step]:
        return [s for s in self.steps if s.candidates[0].on_host]


@dataclass
class FinalPlan:
    """One program per step, the memory plan of the arena, and the ``layout`` every buffer
    a step names has in the arena or the weights."""

    plan: Plan
    programs: list[NodeProgram]
    memory: MemoryPlan
    layout: ArenaLayout

    @property
    def kernels(self) -> dict[str, str]:
        return {name: src for p in self.programs for name, src in p.kernels.items()}

    def constants(self) -> Iterator[tuple[Place, np.ndarray]]:
        """Every constant the weights hold (the plan's and each program's), with its place."""
        for name, array in self.plan.consts.items():
            yield self.layout.values[name], array
        for program, step in zip(self.programs, self.layout.steps):
            for name, array in program.consts.items():
                yield step.consts[name], array


def build_plan(model: Model, input_shapes: Mapping[str, Sequence[int]], *, arch: str, sm_count: int,
               tune: bool = True, dims: DimRanges | None = None, constants: dict | None = None,
               prefer: Mapping[str, str] | None = None, templates: LoweringTemplates | None = None) -> Plan:
    """Lower ``model`` at ``input_shapes`` for ``arch`` (no GPU needed). ``tune``: keep every
    candidate tactic, else only each node's first. ``dims``: make a generic plan for the
    profile these ranges describe. ``constants``: a dict kept from plan to plan of the same
    model, memoizing its constants in their device forms. ``prefer``: node label -> the tactic
    to offer first (with ``tune=False``, a node whose first tactic is another is lowered with
    every tactic, and that one put first: planning a generic engine's new shape). ``templates``:
    a generic plan's lowering templates, kept from plan to plan of one profile."""
    spec = specialize(model, input_shapes)
    builder = _Builder(spec, arch, sm_count, tune, dims, {} if constants is None else constants, prefer or {},
                       None if dims is None else templates)
    return builder.build({k: tuple(int(d) for d in v) for k, v in input_shapes.items()})


class _Builder:
    def __init__(self, model: Model, arch: str, sm_count: int, tune: bool, dims: DimRanges | None,
                 constants: dict, prefer: Mapping[str, str], templates: LoweringTemplates | None):
        self.model, self.graph = model, model.graph
        self.arch, self.sm_count, self.tune, self.prefer = arch, sm_count, tune, prefer
        self.dims, self.constants, self.templates = dims, constants, templates
        self.model_constants = set(self.graph.initializers)
        self.known = dict(self.graph.initializers) | plan_time_values(model, dims.largest if dims else None)
        for name, value in self.known.items():  # initializers need not be typed in the graph
            self.graph.types.setdefault(name, TensorType(DType.from_numpy(value.dtype), tuple(value.shape)))
        self.steps: list[Step] = []
        self.forms: dict[str, TensorForm] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.held: dict[str, str] = {}  # graph value -> device value holding it now
        self.converted: dict[tuple[str, TensorForm], str] = {}
        self.host_values: dict[str, np.ndarray] = {}  # constants host steps read
        self.lowered = LoweringMemo()
        self.conversions: dict[tuple, list[NodeProgram]] = {}  # (source form, target form) -> programs
        self.needs_values: set[str] = set()
        self.generic_forms: dict[tuple, tuple[TensorForm, dict[str, int]]] = {}  # _generic's, by value and place

    def build(self, shapes: dict[str, tuple[int, ...]]) -> Plan:
        g = self.graph
        feeds = {}
        for name in g.inputs:
            if name in g.initializers:
                continue
            self.forms[name] = _logical(g, name)
            self.held[name] = feeds[name] = name
        unsupported = []
        for node in g.nodes:
            if all(o in self.known for o in node.outputs if o):
                continue  # computed at plan time
            if not self._lower(node):
                unsupported.append((node.domain, node.op_type, node.name))
        if unsupported:
            raise UnsupportedOpError(unsupported)
        results = {}
        for name in g.outputs:  # a constant output (a Shape, say) is copied from the weight arena
            results[name] = self._present(name, _logical(g, name))
        shape_consts = {key for key in self.consts if key.split("@const:")[0] not in self.model_constants}
        return Plan(self.model, self.steps, self.forms, self.consts, feeds, results, shapes, self.host_values,
                    shape_consts, self.dims, frozenset(self.needs_values))

    # --- one node ----------------------------------------------------------------------------

    def _lower(self, node: Node) -> bool:
        g = self.graph
        if is_runtime_if(node):  # (an If whose condition was known is inlined by now)
            raise DataDependentShape(f"{node.label}: its condition is known only at run time; the model is cut "
                                     "here and the branch taken runs as a plan of its own")
        for name in node.outputs:
            t = g.types.get(name) if name else None
            if name and (t is None or not t.is_static):
                parameters = {n for n in self._parameters_of(node) if n != node.inputs[0]}  # input 0 is data
                raise DataDependentShape(f"{node.label}: the shape of output {name!r} depends on the input values "
                                         f"({t}); a static plan cannot hold it", frozenset(parameters))
        stored = [self._stored_input(n) if n else None for n in node.inputs]
        wanted = [stored_form(g, o) if o and o in g.types else None for o in node.outputs]
        wished: list[tuple[list, list]] = []  # inputs converted as a WrongForm wished, tried last

        def attempts() -> Iterator[tuple[list, list]]:  # made as needed: the first usually serves
            yield _narrowed(node, stored), wanted  # the annotated forms first: the AOT precision pass's plan
            yield stored, wanted
            yield [self._held_form(n) if n else None for n in node.inputs], wanted
            yield [f and f.logical for f in stored], [f and f.logical for f in wanted]
            yield ([self._logical_input(n) if n else None for n in node.inputs],
                   [_logical(g, o) if o and o in g.types else None for o in node.outputs])
            while wished:
                yield wished.pop(0)

        problems = []
        needed = set()  # values the lowerings needed when the plan is made
        seen = []
        agnostic = shape_agnostic(node)
        for inputs, outputs in attempts():
            if (inputs, outputs) in seen:
                continue
            seen.append((inputs, outputs))
            bindings: dict[str, int] = {}
            ctx = LowerContext(node, self._generic(node.inputs, inputs, "i", bindings, agnostic),
                               self._generic(node.outputs, outputs, "o", bindings, agnostic),
                               [self.known.get(n) if n else None for n in node.inputs],
                               self.model.opset, self.arch, self.sm_count, self.tune, self.constants,
                               self.prefer.get(node.label))
            try:
                with dim_bindings(bindings):
                    programs = self._programs(ctx, bool(bindings))
            except WrongForm as exc:  # lowered again below, with those inputs converted
                problems.append(str(exc))
                wanted_inputs = [exc.wanted[i].with_shape(tuple(int(d) for d in exc.wanted[i].shape))
                                 if i in exc.wanted and f is not None else f for i, f in enumerate(inputs)]
                if (wanted_inputs, outputs) not in seen:
                    wished.append((wanted_inputs, outputs))
                continue
            except Unsupported as exc:
                problems.append(str(exc))
                if isinstance(exc, NeedsValue) and self._parameter(node, exc.index):
                    needed |= self._parameters_of(node)
                continue
            self._add_node(node, programs, inputs)
            return True
        if find_kernel(node.op_type, node.domain) is None:
            return False
        self.needs_values |= needed
        self._add_host(node, problems[-1] if problems else "no GPU lowering")
        return True

    def _parameters_of(self, node: Node) -> set[str]:
        """The node's inputs not known now that are parameters (a lowering reads them one by
        one and stops at the first unknown: a Slice's starts, ends, axes and steps together)."""
        return {name for i, name in enumerate(node.inputs)
                if name and name not in self.known and self._parameter(node, i)}

    def _parameter(self, node: Node, index: int) -> bool:
        """Whether input ``index`` is a parameter (axes, pads, K, a Resize's scales), which a
        plan per value may take: an integer operand, or a float one the op's facts call exact.
        A weight given as an input is data: planning per value of it would plan every run."""
        t = self.graph.types.get(node.inputs[index])
        facts = facts_of(node)
        return t is not None and (not t.dtype.is_float or (facts is not None and index in facts.exact_inputs))

    def _programs(self, ctx: LowerContext, dims: bool) -> list[NodeProgram]:
        """The node's programs, the tactic ``ctx.wanted`` first; a node like one lowered
        before in this plan gets that one's programs, and in a generic plan a node whose
        template serves these dims gets the template's (lowering_templates.py). ``dims``:
        the node's forms hold DimInts (made plain ints in its programs)."""
        if self.templates is not None:  # the symbolic key and the dims' values tell as much as the full key
            symbolic = lowering_key(ctx, symbolic=True)
            key = None if symbolic is None else (symbolic, tuple(sorted(current_bindings().items())))
        else:
            key = lowering_key(ctx)
        programs = self.lowered.find(ctx, key)
        if programs is not None:
            return programs
        if self.templates is not None:
            programs, reads = self.templates.programs(ctx, symbolic, _lower_wanted)
        else:
            programs, reads = _lower_wanted(ctx)
            if dims:
                programs = plain(programs)
        self.lowered.keep(key, ctx, reads, programs)
        return programs

    def _add_node(self, node: Node, programs: list[NodeProgram], inputs: list[TensorForm | None]) -> None:
        device_inputs = [self._present(n, f) if n else None for n, f in zip(node.inputs, inputs)]
        outputs = []
        for name, form in zip(node.outputs, programs[0].outputs):
            if not name:
                outputs.append(None)
                continue
            if form is None:
                raise Unsupported(f"{node.label}: output {name!r} has no form")
            outputs.append(self._define(name, form))
        for p in programs[1:]:
            if p.outputs != programs[0].outputs:
                raise Unsupported(f"{node.label}: tactics {programs[0].label!r} and {p.label!r} write different forms")
        self.steps.append(Step(node.label, programs, device_inputs, outputs, node))

    def _add_host(self, node: Node, why: str) -> None:
        g = self.graph
        reads = {}
        for name in sorted(node_reads(node)):
            if name in self.known and name not in self.held:
                reads[name] = None
                self.host_values[name] = self.known[name]
            else:
                reads[name] = self._present(name, self._logical_input(name))
        outputs = [self._define(o, _logical(g, o)) if o else None for o in node.outputs]
        program = NodeProgram([HostRun()], [self.forms[o] if o else None for o in outputs], label=HOST_LABEL)
        self.steps.append(Step(node.label, [program], [], outputs, node, why, reads))

    # --- values and their forms --------------------------------------------------------------

    def _define(self, name: str, form: TensorForm) -> str:
        """A node writes graph value ``name`` in ``form``: its first device value."""
        self.forms[name] = form
        self.held[name] = name
        return name

    def _held_form(self, name: str) -> TensorForm:
        if name in self.held:
            return self.forms[self.held[name]]
        return self._stored_input(name)

    def _stored_input(self, name: str) -> TensorForm:
        if name in self.known and name not in self.held:
            return stored_form(self.graph, name) if name in self.graph.storage else _logical(self.graph, name)
        return stored_form(self.graph, name)

    def _logical_input(self, name: str) -> TensorForm:
        return _logical(self.graph, name)

    def _present(self, name: str, form: TensorForm) -> str:
        """The device value holding graph value ``name`` in ``form``: a constant uploaded in
        that form, the value itself, or a conversion of it (made once, shared)."""
        if name in self.known and name not in self.held:
            key = f"{name}@const:{form.describe()}"
            if key not in self.consts:
                if name in self.model_constants:  # the same at every shape: converted once
                    self.consts[key] = self.constants.get(key)
                    if self.consts[key] is None:
                        self.consts[key] = self.constants[key] = to_form(self.known[name], form)
                else:
                    self.consts[key] = to_form(self.known[name], form)
                self.forms[key] = form
            return key
        current = self.held[name]
        have = self.forms[current]
        if have == form:
            return current
        key = (name, form)
        if key not in self.converted:
            target = f"{name}@{form.describe()}"
            if have.same_bytes(form):  # the same bytes: a view
                steps = [NodeProgram([_copy(have.nbytes)], [form], label="view")]
            else:
                bindings: dict[str, int] = {}
                (src,) = self._generic([name], [have], "i", bindings)
                (dst,) = self._generic([name], [form], "o", bindings)
                known = (form_key(src), form_key(dst))
                if known not in self.conversions:
                    with dim_bindings(bindings):
                        self.conversions[known] = plain([_conversion_program(src, dst)])
                steps = self.conversions[known]
            self.forms[target] = form
            self.steps.append(Step(f"convert {name} {have.describe()} -> {form.describe()}", steps, [current], [target]))
            self.converted[key] = target
        return self.converted[key]

    def _generic(self, names: Sequence[str | None], forms: Sequence[TensorForm | None], side: str,
                 bindings: dict[str, int], every: bool = False) -> list[TensorForm | None]:
        """``forms`` of the values ``names`` as a lowering of a generic plan sees them: each axis
        that varies over the profile a DimInt named for its place (``rtxd_i0_1``: input 0, axis
        1), whose value ``bindings`` gets; ``every``: each fixed axis too (a shape-agnostic
        node: ops/lowering.py). Unchanged in a specialized plan, but for ``every``."""
        if self.dims is None and not every:
            return list(forms)
        out: list[TensorForm | None] = []
        for k, (name, form) in enumerate(zip(names, forms)):
            if name is None or form is None:
                out.append(form)
                continue
            key = (name, form, side, k, every)
            if key not in self.generic_forms:  # (a node's attempts present the same forms again)
                self.generic_forms[key] = self._generic_form(name, form, f"rtxd_{side}{k}_", every)
            generic, values = self.generic_forms[key]
            bindings.update(values)
            out.append(generic)
        return out

    def _generic_form(self, name: str, form: TensorForm, prefix: str,
                      every: bool) -> tuple[TensorForm, dict[str, int]]:
        spans = self.dims.sizes.get(name, ()) if self.dims is not None else ()  # per axis: its size or range
        shape = form.shape
        if not every and all(type(span) is int for span in spans[:len(shape)]):
            return form, {}
        generic, values = list(shape), {}
        for axis, size in enumerate(shape):
            span = spans[axis] if axis < len(spans) else size
            if type(span) is not int or every:
                label, size = f"{prefix}{axis}", int(size)
                lo, hi = (size, size) if type(span) is int else span  # (a fixed size as an argument: just that)
                values[label], generic[axis] = size, DimInt(size, label, lo, hi) if every or lo < hi else size
        return form.with_shape(tuple(generic)), values

    # --- finalize ----------------------------------------------------------------------------


def _lower_wanted(ctx: LowerContext) -> tuple[list[NodeProgram], set]:
    """The node's programs and the constants the lowering read. Not tuning: its first, or
    the one ``ctx.wanted`` names (lowered with every tactic where the first is another)."""
    programs = lower(ctx)
    reads = set(ctx.reads)
    if ctx.wanted and programs[0].label != ctx.wanted and not ctx.tune:  # a lowering that ignores it
        every_ctx = replace(ctx, tune=True)
        every = lower(every_ctx)
        reads |= every_ctx.reads
        programs = [p for p in every if p.label == ctx.wanted] or every
    return programs, reads


def finalize(plan: Plan, choices: Mapping[int, int] | None = None, *,
             reference: MemoryPlan | None = None) -> FinalPlan:
    """One program per step (``choices[step index]``, default the first candidate), the
    memory plan of the device values and scratch buffers, and the layout of every buffer.
    The weights hold the model's constants in plan order (the same places at every shape, so
    the engines of one profile share them); constants of the input shapes go apart.
    ``reference``: a generic plan's memory plan at its profile's largest shapes, whose places
    serve this plan where its values fit them (memory_plan.fit_in), else it is planned anew."""
    choices = choices or {}
    programs = [s.candidates[choices.get(i, 0)] for i, s in enumerate(plan.steps)]
    scratch_bytes = [sum(aligned(n) for n in p.scratch.values()) for p in programs]
    lifetimes = _lifetimes(plan, programs, scratch_bytes)
    memory = (fit_in(reference, lifetimes) if reference is not None else None) or \
        plan_lifetimes(lifetimes, check=True)
    values = {name: Place(Allocation.ARENA, offset) for name, offset in memory.offsets.items()}
    consts, weights = pack(((name, a.nbytes) for name, a in plan.consts.items() if name not in plan.shape_consts),
                           Allocation.WEIGHTS)
    shape_consts, shape_bytes = pack(((name, plan.consts[name].nbytes) for name in plan.consts
                                      if name in plan.shape_consts), Allocation.SHAPE)
    values.update(consts)
    values.update(shape_consts)
    steps = []
    for i, (step, program) in enumerate(zip(plan.steps, programs)):
        scratch, _ = pack(program.scratch.items(), Allocation.ARENA, memory.offsets.get(_scratch(i), 0))
        own, weights = pack(((name, a.nbytes) for name, a in program.consts.items()), Allocation.WEIGHTS, weights)
        steps.append(StepLayout(tuple(values[v] if v else None for v in step.inputs),
                                tuple(values[v] if v else None for v in step.outputs), scratch, own))
    return FinalPlan(plan, programs, memory, ArenaLayout(values, steps, memory.arena_bytes, weights, shape_bytes))


def _lifetimes(plan: Plan, programs: list[NodeProgram], scratch_bytes: list[int]) -> list[Lifetime]:
    """The lifetime of every device value and step scratch buffer. Step 0 is the caller writing
    the feeds, plan step i runs at step i + 1, and results are needed past the last step. A
    view's output shares its source's buffer where the view is the source's last reader (its
    copy then has nothing to do)."""
    sizes = {name: form.nbytes for name, form in plan.forms.items() if name not in plan.consts}
    written = dict.fromkeys(plan.feeds.values(), 0)  # value -> step that writes it
    last_read: dict[str, int] = {}
    views = []
    for t, (step, program) in enumerate(zip(plan.steps, programs), start=1):
        for v in (*step.inputs, *step.host_reads.values()):
            if v and v not in plan.consts:
                last_read[v] = t
        for v in step.outputs:
            if v:
                written.setdefault(v, t)
        if scratch_bytes[t - 1]:
            written[_scratch(t - 1)] = t
            sizes[_scratch(t - 1)] = scratch_bytes[t - 1]
        if program.label == "view" and step.inputs and step.inputs[0] and step.outputs[0]:
            views.append((t, step.inputs[0], step.outputs[0]))
    results = set(plan.results.values())
    end = len(plan.steps) + 1
    last = {v: end if v in results else max(first, last_read.get(v, first)) for v, first in written.items()}
    view_of = {out: src for t, src, out in views
               if src in written and src not in results and last[src] == t and sizes[src] == sizes[out]}
    return [Lifetime(v, sizes[v], first, last[v], view_of.get(v)) for v, first in written.items()]


def _scratch(step: int) -> str:
    return f"#scratch{step}"


_NARROW = {"fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}


def _narrowed(node: Node, forms: list[TensorForm | None]) -> list[TensorForm | None]:
    """A tensor-core node annotated to compute in fp16/bf16 takes every float input in that
    type, even one the graph keeps wider (a model input, say): one cast beats a float32 GEMM."""
    dtype = _NARROW.get(node.precision.compute if node.precision else "")
    facts = facts_of(node)
    if dtype is None or facts is None or not facts.tensor_core:
        return forms
    return [f.with_dtype(dtype) if f is not None and f.dtype.is_float else f for f in forms]


def _logical(graph: Graph, name: str) -> TensorForm:
    t = graph.types[name]
    return TensorForm(t.dtype, tuple(int(d) for d in t.shape))


def _copy(nbytes: int) -> Copy:
    return Copy(Ref.input(0), Ref.output(0), nbytes)


def _conversion_program(src: TensorForm, dst: TensorForm) -> NodeProgram:
    """One or two kernels (cast, transpose); a middle value lives in scratch."""
    kernels = conversion(src, dst)
    if len(kernels) == 1:
        k = kernels[0]
        return NodeProgram([launch_of(k, kernel_args(k))], [dst], {k.name: k.source}, label="convert")
    cast, transpose = kernels
    middle = Ref.scratch("cast")
    steps = [launch_of(cast, (Ref.input(0), middle)), launch_of(transpose, (middle, Ref.output(0)))]
    return NodeProgram(steps, [dst], {cast.name: cast.source, transpose.name: transpose.source},
                       {"cast": dst.nbytes}, label="convert")
