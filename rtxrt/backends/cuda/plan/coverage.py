"""Which nodes of a model would run on the GPU, planned for an arch without a GPU: the
report ``rtxrt inspect --plan`` prints. It plans as the runtime does (plan-time values, every
lowering tried in every form, a model cut at its data-dependent nodes), so a node it lists
on the host is one the runtime would run there, with the reason the lowering gave."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ....ir.graph import Model
from ....op_table import op_key
from ...data_dependent import branch_model, is_runtime_if, split_model
from ...memory_plan import specialize
from ...parameter_inputs import parameter_inputs, with_values
from .builder import DataDependentShape, Plan, build_plan

DEFAULT_SM_COUNT = 46  # any count plans the same nodes; this one is an RTX 3080's
# What the reasons of host nodes that lacked parameters' values say.
_NEEDS_VALUES = ("must be known when the plan is made", "the model is cut here")
DATA_DEPENDENT_SIZE = 1  # what a dim that depends on values (NonZero's count) is planned at


@dataclass
class HostNode:
    node: str
    op: str
    why: str


@dataclass
class Segment:
    """Nodes that run one after another on one side: "gpu", "host", or "branch" (an If whose
    condition the host reads, then runs the branch taken on the GPU)."""

    kind: str
    nodes: list[str] = field(default_factory=list)


@dataclass
class Coverage:
    arch: str
    shapes: dict[str, list[int]]
    nodes: int  # the model's nodes (after the AOT passes)
    gpu_nodes: int
    plan_time_nodes: int  # computed once at plan time (shape arithmetic, anchor grids)
    host_nodes: list[HostNode]
    segments: list[Segment]
    # Inputs the runtime reads on the host and plans the model per value of (axes, scales
    # given as inputs: backends/parameter_inputs.py); planned at ``values`` where given.
    parameter_inputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_coverage(model: Model, shapes: Mapping[str, Sequence[int]], arch: str,
                  sm_count: int = DEFAULT_SM_COUNT, values: Mapping[str, Any] | None = None) -> Coverage:
    """Plan ``model`` at ``shapes`` for ``arch`` and say where each node runs. ``values``:
    input values, of which those the plan needs as parameters are planned with (as the
    runtime does); without them such nodes are listed on the host, with a note."""
    shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    try:
        plan = build_plan(model, shapes, arch=arch, sm_count=sm_count, tune=False)
        needs = plan.needs_values
    except DataDependentShape as exc:
        plan, needs = None, exc.needs_values
    parameters = parameter_inputs(model, needs) if needs else []
    if parameters and values is not None and all(n in values for n in parameters):
        frozen = with_values(model, {n: values[n] for n in parameters})
        report = plan_coverage(frozen, {n: s for n, s in shapes.items() if n not in parameters}, arch, sm_count,
                               {n: v for n, v in values.items() if n not in parameters})
        return replace(report, shapes=shapes, nodes=len(model.graph.nodes), parameter_inputs=parameters)
    report = _split_coverage(model, shapes, arch, sm_count) if plan is None else _of_plan(model, plan, arch, shapes)
    if parameters:
        note = f" (the runtime plans per value of input(s) {', '.join(map(repr, parameters))}: on the GPU then)"
        report.host_nodes = [replace(h, why=h.why + note) if any(p in h.why for p in _NEEDS_VALUES) else h
                             for h in report.host_nodes]
        report.parameter_inputs = parameters
    return report


def _of_plan(model: Model, plan: Plan, arch: str, shapes: Mapping[str, Sequence[int]]) -> Coverage:
    segments: list[Segment] = []
    host: list[HostNode] = []
    gpu = 0
    for step in plan.steps:
        if step.node is None:
            continue  # a conversion the planner inserted
        kind = "host" if step.why_host else "gpu"
        if kind == "host":
            host.append(HostNode(step.node.label, op_key(step.node.op_type, step.node.domain), step.why_host))
        else:
            gpu += 1
        if not segments or segments[-1].kind != kind:
            segments.append(Segment(kind))
        segments[-1].nodes.append(step.node.label)
    nodes = len(model.graph.nodes)
    return Coverage(arch, {k: list(v) for k, v in shapes.items()}, nodes, gpu, nodes - gpu - len(host), host, segments)


def _split_coverage(model: Model, shapes: dict[str, tuple[int, ...]], arch: str, sm_count: int) -> Coverage:
    """A model cut at its data-dependent nodes: the parts' coverage in turn, the cut on the host."""
    split = split_model(model, shapes)
    types = specialize(model, shapes).graph.types
    parts = []
    if split.before is not None:
        parts.append(plan_coverage(split.before, {n: shapes[n] for n in split.before.graph.inputs if n in shapes},
                                   arch, sm_count))
    nodes = split.cut.graph.nodes
    if len(nodes) == 1 and is_runtime_if(nodes[0]):  # the host reads its condition; a branch runs
        branches = [plan_coverage(b, _shapes_of(b, types), arch, sm_count)
                    for b in (branch_model(split.cut, nodes[0], taken) for taken in (True, False)) if b.graph.nodes]
        parts.append(Coverage(arch, {}, 1 + sum(b.nodes for b in branches), sum(b.gpu_nodes for b in branches),
                              sum(b.plan_time_nodes for b in branches), [h for b in branches for h in b.host_nodes],
                              [Segment("branch", [nodes[0].label])]))
    else:
        why = "its output's shape depends on the input values: the model is cut here, the rest planned at its shapes"
        cut = [HostNode(n.label, op_key(n.op_type, n.domain), why) for n in nodes]
        parts.append(Coverage(arch, {}, len(cut), 0, 0, cut, [Segment("host", [h.node for h in cut])]))
    if split.after is not None:
        parts.append(plan_coverage(split.after, _shapes_of(split.after, types), arch, sm_count))
    segments: list[Segment] = []
    for part in parts:
        for segment in part.segments:
            if segments and segments[-1].kind == segment.kind:
                segments[-1].nodes += segment.nodes
            else:
                segments.append(Segment(segment.kind, list(segment.nodes)))
    return Coverage(arch, {k: list(v) for k, v in shapes.items()}, sum(p.nodes for p in parts),
                    sum(p.gpu_nodes for p in parts), sum(p.plan_time_nodes for p in parts),
                    [h for p in parts for h in p.host_nodes], segments)


def _shapes_of(part: Model, types: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """A part's input shapes as the whole model's plan knows them (dims that depend on
    values: DATA_DEPENDENT_SIZE)."""
    shapes = {}
    for name in part.graph.inputs:
        t = types.get(name) or part.graph.types.get(name)
        dims = t.shape if t is not None and t.shape is not None else ()
        shapes[name] = tuple(d if isinstance(d, int) else DATA_DEPENDENT_SIZE for d in dims)
    return shapes
