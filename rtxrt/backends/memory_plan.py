"""Static memory plan: one device arena for every intermediate value of a graph.

Each value the graph's nodes define (not graph inputs, which the caller owns, nor
initializers, which live in the weight arena) gets an offset in the arena. Values whose
lifetimes do not overlap share bytes. A value lives from the node that writes it to the last
node that reads it (a node reading it from inside a subgraph counts); graph outputs live to
the end. Nodes never write in place: a node's outputs never share bytes with its inputs.

Offsets come from the "greedy by size" heuristic (Pisarchyk & Lee 2020, as TensorRT and TVM
plan): the largest buffer first, each into the smallest gap left between already placed
buffers whose lifetimes overlap its own (best fit), or above them all where no gap fits.

With ``allow_views`` the output of a pure view op (Reshape, Squeeze, Unsqueeze, Flatten,
Identity) shares its source's buffer when the view is the source's last reader and both are
stored alike; the shared buffer then lives as long as any value in it.

Only the top-level graph is planned: the values inside subgraphs (an Elementwise body, an If
branch) belong to whatever runs those nodes.

``plan_memory`` plans a graph; ``plan_lifetimes`` plans values a caller describes directly
(size, first and last step, view of), as a backend with steps of its own does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .known_control_flow import inline_known_control_flow
from .reference.kernel import find_kernel
from ..errors import GraphError, InputError
from ..ir.dtypes import DType
from ..ir.graph import Graph, Model, Node, TensorType
from ..ir.infer import infer_types
from ..ir.ops import view_ops
from ..ir.ops.facts import NONDETERMINISTIC_OPS

ALIGNMENT = 256
_MAX_PLAN_VALUE = 1 << 18  # elements of a value worth computing at plan time (a 1 MiB float32 anchor grid)
_SUB_BYTE_BITS = {DType.UINT4: 4, DType.INT4: 4, DType.FLOAT4E2M1: 4, DType.UINT2: 2, DType.INT2: 2}


class PlanError(GraphError):
    """A memory plan would let a value be overwritten while it is still needed."""


@dataclass
class MemoryPlan:
    """Where every intermediate value lives in the arena.

    ``lifetimes[v]`` is (first, last) node index, inclusive, during which v's bytes must hold
    v (``len(nodes)`` stands for "after the last node": graph outputs). ``aliases`` maps a view
    to the value whose buffer it shares (the first value written into that buffer).
    """

    offsets: dict[str, int]
    sizes: dict[str, int]
    lifetimes: dict[str, tuple[int, int]]
    arena_bytes: int
    naive_bytes: int
    # Most bytes live at once (each buffer rounded up to the alignment): no plan of these
    # buffers fits in less, so arena_bytes / lower_bound_bytes measures the heuristic.
    lower_bound_bytes: int
    aliases: dict[str, str] = field(default_factory=dict)
    alignment: int = ALIGNMENT

    @property
    def reuse_ratio(self) -> float:
        """How many times smaller the arena is than giving every value its own buffer."""
        return self.naive_bytes / self.arena_bytes if self.arena_bytes else 1.0

    def describe(self) -> str:
        views = f" ({len(self.aliases)} views)" if self.aliases else ""
        return (
            f"memory plan: {len(self.offsets)} values{views}, arena {_mib(self.arena_bytes)} "
            f"(live peak {_mib(self.lower_bound_bytes)}), naive {_mib(self.naive_bytes)}, "
            f"reuse {self.reuse_ratio:.2f}x"
        )


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def specialize(model: Model, input_shapes: Mapping[str, Sequence[int]]) -> Model:
    """A copy of ``model`` (weights shared, not copied) whose values all have static shapes:
    the inputs' symbolic dims are bound from ``input_shapes`` and type inference reruns; an
    If whose condition is then known is replaced by the branch it takes, and a Loop whose trip
    count is then known is unrolled (known_control_flow.py)."""
    graph = model.graph
    data_inputs = [n for n in graph.inputs if n not in graph.initializers]
    unknown = sorted(set(input_shapes) - set(data_inputs))
    missing = [n for n in data_inputs if n not in input_shapes]
    if unknown or missing:
        raise InputError(f"input shapes: unknown input(s) {unknown}, missing {missing}; the model takes {data_inputs}")
    bindings: dict[str, int] = {}
    for name in data_inputs:
        shape = tuple(int(d) for d in input_shapes[name])
        declared = graph.types.get(name)
        if declared is None or declared.shape is None:
            continue
        if len(declared.shape) != len(shape):
            raise InputError(f"input {name!r}: shape {shape} does not fit {declared}")
        for dim, size in zip(declared.shape, shape):
            if isinstance(dim, int) and dim != size:
                raise InputError(f"input {name!r}: shape {shape} does not fit {declared}")
            if isinstance(dim, str) and bindings.setdefault(dim, size) != size:
                raise InputError(f"input {name!r}: dim {dim!r} is {size} here but {bindings[dim]} elsewhere")

    result = replace(model, graph=_own_tables(graph), opsets=dict(model.opsets), metadata=dict(model.metadata))
    for g in result.graph.graphs():
        for name, t in list(g.types.items()):
            if t.shape is None:
                continue
            t = TensorType(t.dtype, tuple(bindings.get(d, d) if isinstance(d, str) else d for d in t.shape))
            if t.is_static:
                g.types[name] = t
            else:  # recomputed from the inputs below
                del g.types[name]
    for name in data_inputs:
        dtype = graph.types[name].dtype if name in graph.types else None
        if dtype is None:
            raise InputError(f"input {name!r} has no declared element type")
        result.graph.types[name] = TensorType(dtype, tuple(int(d) for d in input_shapes[name]))
    _infer_with_shape_values(result)
    if any(n.op_type in ("If", "Loop", "Scan") for n in result.graph.nodes):
        while inline_known_control_flow(result, dict(result.graph.initializers) | plan_time_values(result)):
            _infer_with_shape_values(result)
    return result


def _own_tables(graph: Graph) -> Graph:
    """``graph`` with tables of its own (types, initializers, storage) for inference to fill
    in: nodes and arrays are shared, except nodes holding subgraphs, whose graphs get tables
    of their own the same way. (Nothing that plans a specialized model changes a node.)"""
    nodes = [node if not any(True for _ in node.subgraphs())
             else replace(node, attrs={k: _own_attr(v) for k, v in node.attrs.items()}) for node in graph.nodes]
    return replace(graph, nodes=nodes, inputs=list(graph.inputs), outputs=list(graph.outputs),
                   types=dict(graph.types), initializers=dict(graph.initializers), storage=dict(graph.storage),
                   stripped=dict(graph.stripped))


def _own_attr(value: Any) -> Any:
    if isinstance(value, Graph):
        return _own_tables(value)
    return [_own_attr(v) for v in value] if isinstance(value, list) else value


def _infer_with_shape_values(model: Model) -> None:
    """Infer types; where a shape depends on values computed from shapes (Shape -> Gather ->
    Range -> Slice, as exporters write), evaluate those small integer values with the
    reference kernels, lend them to inference as constants and infer again, until nothing
    new is learned. The graph itself is left as it was."""
    graph = model.graph
    lent: set[str] = set()
    memo: dict = {}  # a node whose inputs the lent values left as they were is not inferred again
    changed: set[str] | None = None  # the first pass infers every node, later ones what the lent values reach
    try:
        while True:
            infer_types(model, memo=memo, changed=changed)
            known = _shape_values(model)
            if not known:
                break
            graph.initializers.update(known)
            lent.update(known)
            changed = set(known)
    finally:
        for name in lent:
            del graph.initializers[name]


def plan_time_values(model: Model, largest: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Every value of a specialized model that follows from its static shapes and
    initializers alone (shape arithmetic, position ranges, masks of shapes): a backend
    computes these once when it plans, not on every run. ``largest``: a value's most elements
    over a shape profile, where one is planned generically; a value is then computed at plan
    time at every shape of the profile or at none (BERT's position embeddings grow past the
    limit at long sequences: a node planned as a kernel only there would need a compile)."""
    graph = model.graph
    found: dict[str, np.ndarray] = {}
    try:
        while new := _shape_values(model, largest):
            graph.initializers.update(new)
            found.update(new)
    finally:
        for name in found:
            del graph.initializers[name]
    return found


def _shape_values(model: Model, largest: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Values (of any type, at most _MAX_PLAN_VALUE elements each) that follow from the static
    shapes and the initializers (lent ones included), not known yet: shape arithmetic, and
    what is built from it (position ids, masks, a detector's anchor grid from ``Range`` over
    feature-map sizes)."""
    graph = model.graph
    known: dict[str, np.ndarray] = dict(graph.initializers)
    new: dict[str, np.ndarray] = {}
    largest = largest or {}

    def too_big(name: str, size: int) -> bool:
        return max(size, largest.get(name, 0)) > _MAX_PLAN_VALUE

    for node in graph.nodes:
        if not ((node.op_type in ("Shape", "Size") and not node.domain) or all(n in known for n in node.inputs if n)):
            continue  # (most nodes read a graph input: the cheapest test first, and the only one of inputs)
        named = [o for o in node.outputs if o]  # (an omitted optional output has no name)
        outs = [graph.types.get(o) for o in named]
        if not outs or any(o in known for o in named) or any(True for _ in node.subgraphs()):
            continue
        if any(t is None or t.dtype == DType.STRING for t in outs):
            continue
        if node.op_type in ("Shape", "Size") and not node.domain:
            values = _of_shape(node, graph.types.get(node.inputs[0]))
        elif node.op_type in NONDETERMINISTIC_OPS or any(t.is_static and too_big(o, math.prod(t.shape))
                                                         for o, t in zip(named, outs)):
            values = None
        else:
            values = _evaluate(node, model.opset, [known[n] if n else None for n in node.inputs])
        for name, value, t in zip(named, values or (), outs):
            value = np.asarray(value, dtype=t.dtype.numpy)
            if not too_big(name, value.size):
                known[name] = new[name] = value
    return new


def _of_shape(node: Node, t: TensorType | None) -> list[np.ndarray] | None:
    """Shape (with its start and end, opset 15) or Size of a value whose shape is static."""
    if t is None or not t.is_static:
        return None
    if node.op_type == "Size":
        return [np.array(math.prod(t.shape), dtype=np.int64)]
    rank = len(t.shape)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
    start, end = (min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))
    return [np.array(t.shape[start:end], dtype=np.int64)]


def _evaluate(node: Node, opset: int, inputs: list[np.ndarray | None]) -> list[np.ndarray] | None:
    kernel = find_kernel(node.op_type, node.domain)
    if kernel is None:
        return None
    try:
        values = kernel(node, opset, None).run(*inputs)
    except Exception:  # left to run time, where the error names the node
        return None
    return list(values) if isinstance(values, (tuple, list)) else [values]


def value_nbytes(graph: Graph) -> dict[str, int]:
    """Bytes of every value the plan places, in its storage type (``graph.storage``) where it
    has one, else its logical type. Shapes must be static (see ``specialize``)."""
    sizes: dict[str, int] = {}
    for name in planned_values(graph):
        t = graph.types.get(name)
        if t is None or not t.is_static:
            raise GraphError(f"value {name!r} has no static shape ({t}); specialize the model to input shapes first")
        storage = graph.storage.get(name)
        sizes[name] = tensor_nbytes(storage.dtype if storage else t.dtype, t.shape, name)
    return sizes


def tensor_nbytes(dtype: DType, shape: Sequence[int], name: str = "") -> int:
    if dtype == DType.STRING:
        raise GraphError(f"value {name!r} holds strings, which have no device storage")
    count = 1
    for d in shape:
        count *= int(d)
    bits = _SUB_BYTE_BITS.get(dtype)
    return (count * bits + 7) // 8 if bits else count * dtype.itemsize


# --------------------------------------------------------------------------------------------
# Liveness
# --------------------------------------------------------------------------------------------


def planned_values(graph: Graph) -> list[str]:
    """Values the plan places, in the order nodes define them."""
    external = set(graph.inputs) | set(graph.initializers)
    return [o for node in graph.nodes for o in node.outputs if o and o not in external]


def read_steps(graph: Graph) -> dict[str, list[int]]:
    """Node indices at which each value is read, directly or from inside a subgraph."""
    reads: dict[str, list[int]] = {}
    for step, node in enumerate(graph.nodes):
        for name in node_reads(node):
            reads.setdefault(name, []).append(step)
    return reads


def node_reads(node: Node) -> set[str]:
    """What a node reads from its graph: its inputs and its subgraphs' outer-scope values."""
    names = {n for n in node.inputs if n}
    for sub in node.subgraphs():
        names |= sub.outer_reads()
    return names


def lifetimes(graph: Graph) -> dict[str, tuple[int, int]]:
    """(first, last) node index, inclusive, during which each planned value must be kept."""
    reads = read_steps(graph)
    end = len(graph.nodes)
    outputs = set(graph.outputs)
    spans: dict[str, tuple[int, int]] = {}
    for step, node in enumerate(graph.nodes):
        for name in node.outputs:
            if name and name not in spans:
                last = end if name in outputs else max(reads.get(name, ()), default=step)
                spans[name] = (step, max(step, last))
    return {name: spans[name] for name in planned_values(graph)}


def find_views(graph: Graph, sizes: Mapping[str, int]) -> dict[str, str]:
    """View outputs that may share their source's buffer: view -> root (first value written
    into the buffer). A view qualifies when its source is planned, is not a graph output,
    has no reader after the view, and is stored like the view (same bytes, dtype, layout)."""
    spans = lifetimes(graph)
    aliases: dict[str, str] = {}
    outputs = set(graph.outputs)
    for step, node in enumerate(graph.nodes):
        if node.domain or node.op_type not in view_ops() or not node.inputs or not node.outputs[0]:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if src not in spans or src in outputs or spans[src][1] != step:
            continue
        if sizes.get(src) != sizes.get(out) or _stored_as(graph, src) != _stored_as(graph, out):
            continue
        aliases[out] = aliases.get(src, src)
    return aliases


def _stored_as(graph: Graph, name: str) -> tuple:
    storage = graph.storage.get(name)
    if storage is not None:
        return storage.dtype, storage.layout, storage.scale, storage.zero_point
    t = graph.types.get(name)
    return (t.dtype if t else None), "", "", ""


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lifetime:
    """One value to place: ``size`` bytes, written at step ``first`` and needed through step
    ``last`` (inclusive). ``view_of``: a value whose buffer this one shares (a view of the same
    bytes, written as that value dies); the buffer then lives as long as any value in it."""

    value: str
    size: int
    first: int
    last: int
    view_of: str | None = None


@dataclass
class _Buffer:
    root: str
    size: int
    first: int
    last: int
    offset: int = 0


def plan_lifetimes(values: Sequence[Lifetime], *, alignment: int = ALIGNMENT, check: bool = False) -> MemoryPlan:
    """Plan an arena for ``values``: values alive at the same step never share bytes, dead
    values' bytes are reused, and views share their source's buffer. ``check`` validates the
    result with ``check_lifetimes``."""
    spans = {v.value: (v.first, v.last) for v in values}
    sizes = {v.value: int(v.size) for v in values}
    aliases = _view_roots(values)
    buffers = _buffers(values, aliases)
    placed: list[_Buffer] = []
    for buf in sorted(buffers.values(), key=lambda b: (-b.size, b.first, b.first - b.last, b.root)):
        if buf.size:
            buf.offset = _best_fit(buf, placed, alignment)
            placed.append(buf)

    plan = MemoryPlan(
        offsets={v.value: buffers[aliases.get(v.value, v.value)].offset for v in values},
        sizes=sizes,
        lifetimes=spans,
        arena_bytes=_align(max((b.offset + b.size for b in placed), default=0), alignment),
        naive_bytes=sum(_align(s, alignment) for s in sizes.values()),
        lower_bound_bytes=_live_peak(list(buffers.values()), alignment),
        aliases=aliases,
        alignment=alignment,
    )
    if check:
        check_lifetimes(plan, values)
    return plan


def fit_in(reference: MemoryPlan, values: Sequence[Lifetime]) -> MemoryPlan | None:
    """``values`` placed where ``reference`` placed its values, matched in order (a plan's
    values are listed in step order; their names may spell their shapes), where each has the
    same lifetime and view as its match and is no larger: values alive at once got disjoint
    bytes there, and a smaller one stays inside its place. A generic engine plans each new
    shape so, in the plan of its profile's largest shapes, instead of planning the arena
    again. None where they differ (other steps, or a value larger than its match)."""
    names = list(reference.lifetimes)  # (plan_lifetimes keeps the order of its values)
    if len(values) != len(names):
        return None
    for v, name in zip(values, names):
        if v.size > reference.sizes[name] or reference.lifetimes[name] != (v.first, v.last):
            return None
    renamed = {name: v.value for v, name in zip(values, names)}
    aliases = _view_roots(values)
    if aliases != {renamed[view]: renamed[root] for view, root in reference.aliases.items()}:
        return None
    sizes = {v.value: int(v.size) for v in values}
    return MemoryPlan(offsets={v.value: reference.offsets[name] for v, name in zip(values, names)}, sizes=sizes,
                      lifetimes={v.value: (v.first, v.last) for v in values}, arena_bytes=reference.arena_bytes,
                      naive_bytes=sum(_align(n, reference.alignment) for n in sizes.values()),
                      lower_bound_bytes=_live_peak(list(_buffers(values, aliases).values()), reference.alignment),
                      aliases=aliases, alignment=reference.alignment)


def _buffers(values: Sequence[Lifetime], aliases: Mapping[str, str]) -> dict[str, _Buffer]:
    """Root value -> its buffer: the largest of the values sharing it, alive from the first's
    first step to the last's last."""
    buffers: dict[str, _Buffer] = {}
    for v in values:
        root = aliases.get(v.value, v.value)
        buf = buffers.setdefault(root, _Buffer(root, v.size, v.first, v.last))
        buf.size, buf.first, buf.last = max(buf.size, v.size), min(buf.first, v.first), max(buf.last, v.last)
    return buffers


def _view_roots(values: Sequence[Lifetime]) -> dict[str, str]:
    """View -> root (the first value written into the buffer it shares)."""
    source = {v.value: v.view_of for v in values if v.view_of is not None}
    roots = {}
    for view in source:
        root = view
        while root in source:
            root = source[root]
            if root == view:
                raise GraphError(f"value {view!r} is a view of itself")
        roots[view] = root
    return roots


def plan_memory(
    graph: Graph,
    nbytes: Mapping[str, int] | None = None,
    *,
    allow_views: bool = False,
    alignment: int = ALIGNMENT,
    check: bool = False,
) -> MemoryPlan:
    """Plan the arena of ``graph``'s intermediate values (see ``plan_lifetimes``).

    ``nbytes`` gives each planned value's size; without it sizes come from the graph's static
    types and storage (``value_nbytes``). ``check`` validates the result with ``check_plan``.
    """
    sizes = {name: int(n) for name, n in (nbytes if nbytes is not None else value_nbytes(graph)).items()}
    planned = planned_values(graph)
    missing = [v for v in planned if v not in sizes]
    if missing:
        raise GraphError(f"no size given for {len(missing)} value(s), first {missing[0]!r}")
    spans = lifetimes(graph)
    aliases = find_views(graph, sizes) if allow_views else {}
    plan = plan_lifetimes([Lifetime(v, sizes[v], *spans[v], aliases.get(v)) for v in planned], alignment=alignment)
    if check:
        check_plan(plan, graph)
    return plan


def plan_model(
    model: Model, input_shapes: Mapping[str, Sequence[int]], *, allow_views: bool = False, check: bool = False
) -> MemoryPlan:
    """The plan of ``model``'s main graph at these concrete input shapes."""
    return plan_memory(specialize(model, input_shapes).graph, allow_views=allow_views, check=check)


def _best_fit(buf: _Buffer, placed: list[_Buffer], alignment: int) -> int:
    """The smallest gap among the placed buffers alive with ``buf`` that holds it, else the
    lowest offset above them all."""
    cursor, best, best_gap = 0, None, None
    for other in sorted((p for p in placed if p.first <= buf.last and buf.first <= p.last), key=lambda p: p.offset):
        gap = other.offset - cursor
        if gap >= buf.size and (best_gap is None or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, _align(other.offset + other.size, alignment))
    return cursor if best is None else best


def _live_peak(buffers: list[_Buffer], alignment: int) -> int:
    delta = [0] * (max((b.last for b in buffers), default=0) + 2)
    for b in buffers:
        delta[b.first] += _align(b.size, alignment)
        delta[b.last + 1] -= _align(b.size, alignment)
    peak = live = 0
    for d in delta:
        live += d
        peak = max(peak, live)
    return peak


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def check_lifetimes(plan: MemoryPlan, values: Sequence[Lifetime]) -> None:
    """Raise PlanError unless the plan is safe for ``values``: every value placed, aligned and
    inside the arena, each view within its root's buffer, and no two buffers alive at the same
    step sharing a byte."""
    for v in values:
        off = plan.offsets.get(v.value)
        if off is None:
            raise PlanError(f"value {v.value!r} has no place in the plan")
        if off % plan.alignment or off < 0 or off + v.size > plan.arena_bytes:
            raise PlanError(f"value {v.value!r} at [{off}, {off + v.size}) is unaligned or outside the "
                            f"{plan.arena_bytes}-byte arena")
    spans: dict[str, tuple[int, int, int]] = {}  # root -> (first, last, size)
    for v in values:
        root = plan.aliases.get(v.value, v.value)
        if root != v.value and (plan.offsets[root] != plan.offsets[v.value] or v.size > plan.sizes[root]):
            raise PlanError(f"view {v.value!r} does not lie within {root!r}'s buffer")
        first, last, size = spans.get(root, (v.first, v.last, v.size))
        spans[root] = (min(first, v.first), max(last, v.last), max(size, v.size))
    alive: list[str] = []  # roots placed so far, by first step
    for root in sorted(spans, key=lambda r: spans[r][0]):
        first, _, size = spans[root]
        alive = [a for a in alive if spans[a][1] >= first]
        lo, hi = plan.offsets[root], plan.offsets[root] + size
        for other in alive:
            olo, ohi = plan.offsets[other], plan.offsets[other] + spans[other][2]
            if lo < hi and olo < ohi and lo < ohi and olo < hi:
                raise PlanError(f"{root!r} at [{lo}, {hi}) (steps {first}-{spans[root][1]}) overlaps {other!r} "
                                f"at [{olo}, {ohi}) (steps {spans[other][0]}-{spans[other][1]})")
        alive.append(root)


def check_plan(plan: MemoryPlan, graph: Graph) -> None:
    """Raise PlanError unless the plan is safe for ``graph``: run the nodes in order and,
    whenever one writes a buffer, require that no other value still needed later (read by
    this or a later node, or a graph output) occupies any of its bytes. Also checks that every
    value is placed, aligned and inside the arena, and that each alias is a real view."""
    reads = read_steps(graph)
    outputs = set(graph.outputs)
    end = len(graph.nodes)
    producers = {o: (step, node) for step, node in enumerate(graph.nodes) for o in node.outputs if o}
    planned = planned_values(graph)
    for name in planned:
        if name not in plan.offsets:
            raise PlanError(f"value {name!r} has no place in the plan")
        off, size = plan.offsets[name], plan.sizes[name]
        if off % plan.alignment or off < 0 or off + size > plan.arena_bytes:
            raise PlanError(f"value {name!r} at [{off}, {off + size}) is unaligned or outside the {plan.arena_bytes}-byte arena")
    root = {v: plan.aliases.get(v, v) for v in planned}
    for view, src_root in plan.aliases.items():
        _, node = producers[view]
        if node.domain or node.op_type not in view_ops() or root.get(node.inputs[0]) != src_root:
            raise PlanError(f"{node.label} output {view!r} shares {src_root!r}'s buffer but is not a view of it")
        if plan.offsets[view] != plan.offsets[src_root] or plan.sizes[view] > plan.sizes[src_root]:
            raise PlanError(f"view {view!r} does not lie within {src_root!r}'s buffer")

    needed_until: dict[str, int] = {}  # root -> last step any value in its buffer is needed
    for v in planned:
        last = end if v in outputs else max(reads.get(v, ()), default=producers[v][0])
        needed_until[root[v]] = max(needed_until.get(root[v], -1), last)
    written: list[str] = []  # roots written so far and still needed
    for step, node in enumerate(graph.nodes):
        written = [w for w in written if needed_until[w] >= step]
        new = [o for o in node.outputs if o in root and root[o] == o]
        for out in new:
            lo, hi = plan.offsets[out], plan.offsets[out] + plan.sizes[out]
            for other in written + [o for o in new if o != out]:
                if plan.sizes[other] == 0 or hi == lo:
                    continue
                olo, ohi = plan.offsets[other], plan.offsets[other] + plan.sizes[other]
                if lo < ohi and olo < hi:
                    raise PlanError(
                        f"{node.label} writes {out!r} at [{lo}, {hi}) over {other!r} at [{olo}, {ohi}), "
                        f"which is needed until node {needed_until[other]}"
                    )
        written.extend(new)


__all__ = [
    "ALIGNMENT",
    "Lifetime",
    "MemoryPlan",
    "PlanError",
    "check_lifetimes",
    "check_plan",
    "find_views",
    "lifetimes",
    "node_reads",
    "plan_lifetimes",
    "plan_memory",
    "plan_model",
    "plan_time_values",
    "planned_values",
    "read_steps",
    "specialize",
    "tensor_nbytes",
    "value_nbytes",
]
