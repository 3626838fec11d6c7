"""GetCapability: split an ONNX graph into the largest regions rtxrt runs and the rest.

Nodes are laid out in a topological order that keeps nodes of one kind together as long as
it can (Kahn's algorithm, always taking a ready node of the current kind while there is one,
and earlier nodes first). Each run of one kind in that order is a group: contracting a
contiguous run of a topological order cannot create a cycle, so no region both feeds and
reads from the same outside node. rtxrt groups are then split into their connected
components (still cycle-free: a path between two nodes of a run stays inside the run), and
components smaller than ``min_subgraph_size`` are handed to onnxruntime and the layout is
redone. Nodes no graph output depends on are dropped first, as onnxruntime does."""
from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import onnx

from .options import ProviderOptions

RTXRT = "rtxrt"
ONNXRUNTIME = "onnxruntime"
Kind = Literal["rtxrt", "onnxruntime"]


@dataclass
class Partition:
    index: int
    kind: Kind
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    model: onnx.ModelProto

    def __repr__(self) -> str:
        return (f"Partition({self.index}, {self.kind}, {len(self.nodes)} nodes, inputs={self.inputs}, "
                f"outputs={self.outputs})")


def supported_nodes(model: onnx.ModelProto, options: ProviderOptions | None = None) -> list[bool]:
    """For each top-level node: can rtxrt run it (its op, and every op of its subgraphs, is in
    rtxrt's registry with a reference kernel, and every value it touches is a tensor)."""
    non_tensor = _non_tensor_values(_inferred(model))
    return [_supported(node) and not any(v in non_tensor for v in (*node.input, *node.output))
            for node in model.graph.node]


def partition(model: onnx.ModelProto, options: ProviderOptions | None = None,
              unsupported: Collection[int] = ()) -> list[Partition]:
    """The model's partitions in the order they run; the nodes at indices ``unsupported`` are
    left to onnxruntime whatever their op."""
    options = options or ProviderOptions()
    graph = model.graph
    names = node_names(graph)
    reads = [_reads(node) for node in graph.node]
    live = _live(graph, reads)
    rtxrt = [ok and alive and i not in unsupported
             for i, (ok, alive) in enumerate(zip(supported_nodes(model, options), live))]
    while True:
        groups = _groups([i for i in range(len(graph.node)) if live[i]], reads, graph, rtxrt)
        small = [g for kind, g in groups if kind == RTXRT and len(g) < options.min_subgraph_size]
        if not small:
            break
        for group in small:
            for i in group:
                rtxrt[i] = False
    inferred = _inferred(model)
    return [_make_partition(index, kind, group, model, inferred, names, reads, groups)
            for index, (kind, group) in enumerate(groups)]


def onnxruntime_only(model: onnx.ModelProto) -> list[Partition]:
    """The partitioning when the provider claims nothing: the whole graph, onnxruntime's."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [vi.name for vi in graph.input if vi.name not in initializers]
    return [Partition(0, ONNXRUNTIME, node_names(graph), inputs, [vi.name for vi in graph.output], model)]


def external_data(model: onnx.ModelProto) -> dict[str, str]:
    """``{tensor name: file}`` for every tensor (initializers, Constant values, in subgraphs
    too) whose data is still in an external file rather than in the model."""
    found: dict[str, str] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            found[tensor.name] = next((e.value for e in tensor.external_data if e.key == "location"), "?")
    return found


def summary(partitions: list[Partition]) -> str:
    """A few lines a person reads: how many nodes each partition has, which ops, its I/O."""
    counts = Counter(p.kind for p in partitions)
    nodes: Counter[str] = Counter()
    for p in partitions:
        nodes[p.kind] += len(p.nodes)
    head = (f"{len(partitions)} partition(s): {counts[RTXRT]} rtxrt ({nodes[RTXRT]} nodes), "
            f"{counts[ONNXRUNTIME]} onnxruntime ({nodes[ONNXRUNTIME]} nodes)")
    lines = [head]
    for p in partitions:
        op_counts = sorted(Counter(node.op_type for node in p.model.graph.node).items())
        ops = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in op_counts)
        lines.append(f"  [{p.index}] {p.kind:<11} {len(p.nodes):>4} nodes: {ops}")
        lines.append(f"        inputs {p.inputs} -> outputs {p.outputs}")
    return "\n".join(lines)


def node_names(graph: onnx.GraphProto) -> list[str]:
    """Each node's name, ``{op_type}_{index}`` where it has none, made unique."""
    used: set[str] = set()
    names = []
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        while name in used:
            name += "_"
        used.add(name)
        names.append(name)
    return names


# --- what rtxrt supports ------------------------------------------------------------------------


def _supported(node: onnx.NodeProto) -> bool:
    from rtxrt.backends.reference.kernel import find_kernel
    from rtxrt.ir.ops import get_schema

    domain = "" if node.domain == "ai.onnx" else node.domain
    if get_schema(node.op_type, domain) is None or find_kernel(node.op_type, domain) is None:
        return False
    return all(_supported(inner) for sub in _subgraphs(node) for inner in sub.node)


def _non_tensor_values(model: onnx.ModelProto) -> set[str]:
    """Names of values typed as sequences, maps or optionals (rtxrt runs tensors only)."""
    graph = model.graph
    infos = [*graph.input, *graph.output, *graph.value_info]
    return {vi.name for vi in infos if vi.type.WhichOneof("value") not in (None, "tensor_type")}


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 -- onnx raises InferenceError, ValidationError or RuntimeError: keep what was declared
        return model


# --- graph structure ----------------------------------------------------------------------------


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers, tensor attributes (subgraphs' too), and the
    values and indices of sparse ones."""
    sparse = list(graph.sparse_initializer)
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                sparse.append(attr.sparse_tensor)
            sparse += attr.sparse_tensors
        for sub in _subgraphs(node):
            yield from _tensors(sub)
    for tensor in sparse:
        yield from (tensor.values, tensor.indices)


def _reads(node: onnx.NodeProto) -> list[str]:
    """Every value a node reads: its inputs and the outer values its subgraphs use."""
    names = [n for n in node.input if n]
    for sub in _subgraphs(node):
        names += [n for n in _outer_reads(sub) if n not in names]
    return names


def _outer_reads(graph: onnx.GraphProto) -> list[str]:
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    outer: list[str] = []
    for node in graph.node:
        outer += [n for n in _reads(node) if n not in defined and n not in outer]
        defined.update(node.output)
    outer += [vi.name for vi in graph.output if vi.name not in defined and vi.name not in outer]
    return outer


def _live(graph: onnx.GraphProto, reads: list[list[str]]) -> list[bool]:
    needed = {vi.name for vi in graph.output}
    live = [False] * len(graph.node)
    for i in reversed(range(len(graph.node))):
        if any(o in needed for o in graph.node[i].output):
            live[i] = True
            needed.update(reads[i])
    return live


def _groups(order: list[int], reads: list[list[str]], graph: onnx.GraphProto,
            rtxrt: list[bool]) -> list[tuple[Kind, list[int]]]:
    producer = {o: i for i in order for o in graph.node[i].output if o}
    deps = {i: {producer[n] for n in reads[i] if n in producer} for i in order}
    users: dict[int, list[int]] = {i: [] for i in order}
    for i, ds in deps.items():
        for d in ds:
            users[d].append(i)
    waiting = {i: len(ds) for i, ds in deps.items()}
    ready: dict[bool, list[int]] = {True: [], False: []}
    for i in order:
        if not waiting[i]:
            heapq.heappush(ready[rtxrt[i]], i)
    runs: list[tuple[bool, list[int]]] = []
    while ready[True] or ready[False]:
        if runs and ready[runs[-1][0]]:
            current = runs[-1][0]  # keep the run going while it can
        elif ready[True] and ready[False]:
            current = ready[True][0] < ready[False][0]
        else:
            current = bool(ready[True])
        if not runs or runs[-1][0] != current:
            runs.append((current, []))
        i = heapq.heappop(ready[current])
        runs[-1][1].append(i)
        for user in users[i]:
            waiting[user] -= 1
            if not waiting[user]:
                heapq.heappush(ready[rtxrt[user]], user)
    groups: list[tuple[Kind, list[int]]] = []
    for is_rtxrt, run in runs:
        if is_rtxrt:
            groups += [(RTXRT, component) for component in _components(run, deps)]
        else:
            groups.append((ONNXRUNTIME, run))
    return groups


def _components(run: list[int], deps: dict[int, set[int]]) -> list[list[int]]:
    """The connected components of a run, each in the run's order."""
    parent = {i: i for i in run}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in run:
        for d in deps[i]:
            if d in parent:
                parent[root(i)] = root(d)
    members: dict[int, list[int]] = {}
    for i in run:
        members.setdefault(root(i), []).append(i)
    return sorted(members.values(), key=lambda m: m[0])


# --- partition models ---------------------------------------------------------------------------


def _make_partition(index: int, kind: Kind, group: list[int], model: onnx.ModelProto, inferred: onnx.ModelProto,
                    names: list[str], reads: list[list[str]], groups: list[tuple[Kind, list[int]]]) -> Partition:
    graph = model.graph
    members = set(group)
    produced = [o for i in group for o in graph.node[i].output if o]
    inputs = _unique(n for i in group for n in reads[i] if n not in produced)
    read_elsewhere = {n for _, other in groups for i in other if i not in members for n in reads[i]}
    graph_outputs = {vi.name for vi in graph.output}
    outputs = [o for o in produced if o in read_elsewhere or o in graph_outputs]
    initializers = {t.name: t for t in graph.initializer}
    types = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    for vi in [*graph.input, *graph.output]:
        types.setdefault(vi.name, vi)

    def info(name: str) -> onnx.ValueInfoProto:
        return types.get(name) or onnx.helper.make_empty_tensor_value_info(name)

    runtime_inputs = [n for n in inputs if n not in initializers]
    internal = [n for n in produced if n not in outputs and n in types]
    sub = onnx.helper.make_graph(
        [graph.node[i] for i in group], f"{graph.name or 'graph'}_{kind}_{index}",
        [info(n) for n in runtime_inputs], [info(n) for n in outputs],
        initializer=[initializers[n] for n in inputs if n in initializers],
        value_info=[types[n] for n in internal],
    )
    part = onnx.helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                                  producer_name="rtxrt_ep")
    part.functions.extend(model.functions)
    return Partition(index, kind, [names[i] for i in group], runtime_inputs, outputs, part)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def value_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Typed value infos (ONNX shape inference, then the declared ones) by name."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception:  # noqa: BLE001 -- onnx raises InferenceError, ValidationError or RuntimeError
        inferred = model.graph
    types = {}
    for vi in [*model.graph.input, *model.graph.output, *inferred.value_info, *inferred.output]:
        if vi.type.tensor_type.elem_type or vi.name not in types:
            types[vi.name] = vi
    return types


def complete_input_types(model: onnx.ModelProto, types: dict[str, onnx.ValueInfoProto]) -> onnx.ModelProto:
    """Type the inputs ONNX's shape inference left untyped (e.g. outputs of com.microsoft ops)
    from what the partitions before reported."""
    for index, vi in enumerate(model.graph.input):
        known = types.get(vi.name)
        if not vi.type.tensor_type.elem_type and vi.type.WhichOneof("value") in (None, "tensor_type") and known:
            model.graph.input[index].CopyFrom(known)
    return model
