"""annotate_precision: the precision each node computes in and the type each float32 value is
stored in on the device, from ``--precision`` and ``--keep-fp32`` (the pipeline's last pass).

The per-op rules are data: each op's precision class in its schema (rtxrt.ir.ops), what each
mode makes of a class in rtxrt.aot.precision_policy; this pass walks the graph once
backwards (values that feed index math stay exact) and once forwards (what each node computes
in, which results stay fp32), then decides each value's storage. Only float32 values are
narrowed; integer, bool and other float types keep their logical type. Graph inputs and
outputs stay float32: that is what the caller binds, and the backend converts at the
boundary. Layouts chosen by choose_layout (which runs before) are kept.

A node computes in fp32 and its float32 outputs are stored fp32 when:
- ``--keep-fp32`` names it, its op type, or an op it was fused from (pinned);
- it computes a parameter (size, scale, coordinate) or a value cast to an integer type
  (index math: an fp16 size would change shapes);
- its class is STATS, WIDE or OPAQUE (sensitive; STATS results are stored narrow);
- it is PLAIN and reads a value kept fp32 for its range: a WIDE result, or a PLAIN or STATS
  result computed from one (the exp/log/pow chain goes on in fp32 up to a GEMM).
Weights (initializers, Constant outputs) are narrowed only when every reader computes narrow.
In fp32 mode the graph is left without annotations: no annotation means "as the logical types
say", which is fp32.

Backends narrow with saturation: a float32 beyond the narrow type's range becomes its largest
finite value, not inf, so a -3.4e38 attention mask stays a mask (-65504 in fp16).
"""
from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import replace

from ...errors import InputError
from ...ir.dtypes import DType
from ...ir.graph import Graph, Model, Node, NodePrecision, Storage
from ...ir.rewrite import GraphIndex
from ..options import AotOptions
from ..pass_result import PassResult
from ...ir.ops import Precision
from ..precision_policy import MODES, Mode, answers_to, exact_inputs, known_ops, op_class

_FP32 = NodePrecision("fp32", "fp32")


def annotate_precision(model: Model, options: AotOptions) -> PassResult:
    result = PassResult()
    mode = MODES[options.precision]
    if mode.gemm == "fp32" and mode.storage is None:
        return result
    graph = model.graph
    index = GraphIndex(graph)
    pinned = _pinned(graph, options.keep_fp32, result)
    exact = _exact_values(graph)
    wide: set[str] = set()  # float32 values kept fp32 for their range
    narrow_nodes: set[int] = set()
    for node in graph.nodes:
        cls = op_class(node)
        if cls is Precision.NONE or not any(_is_f32(graph, n) for n in (*node.inputs, *node.outputs)):
            continue
        reads_wide = any(n in wide for n in node.inputs)
        index_math = any(n in exact for n in node.outputs) or _casts_to_non_float(graph, node)
        node.precision, reason = _decide(cls, mode, id(node) in pinned, index_math, reads_wide)
        result.add(reason)
        if node.precision.compute != "fp32":
            narrow_nodes.add(id(node))
        if cls in (Precision.WIDE, Precision.OPAQUE) or (cls is not Precision.GEMM and reads_wide):
            wide.update(n for n in node.outputs if _is_f32(graph, n))
    if mode.storage is not None:
        kept = exact | wide | _opaque_reads(graph, index)
        kept |= {n for node in graph.nodes if id(node) in pinned for n in node.outputs}
        _narrow_storage(graph, index, mode.storage, kept, narrow_nodes, result)
    return result


def _decide(cls: Precision, mode: Mode, pinned: bool, index_math: bool,
            reads_wide: bool) -> tuple[NodePrecision, str]:
    """The node's precision and the reason, as the report counts it."""
    if pinned:
        return _FP32, "pinned fp32 by --keep-fp32"
    if index_math and mode.storage is not None:
        return _FP32, "kept fp32 (index math)"
    if cls is Precision.GEMM:
        return NodePrecision(mode.gemm), f"{mode.gemm} compute"
    if mode.plain == "fp32":
        return _FP32, "fp32 compute"
    if cls is not Precision.PLAIN:
        return _FP32, "kept fp32 (sensitive)"
    if reads_wide:
        return _FP32, "kept fp32 (reads a wide fp32 result)"
    return NodePrecision(mode.plain), f"{mode.plain} compute"


def _pinned(graph: Graph, keep: tuple[str, ...], result: PassResult) -> set[int]:
    """Nodes ``--keep-fp32`` names; an entry that names nothing is reported, not ignored."""
    wanted = set(keep)
    pinned: set[int] = set()
    matched: set[str] = set()
    for node in graph.nodes:
        names = answers_to(node) & wanted
        if names:
            pinned.add(id(node))
            matched |= names
    for entry in sorted(wanted - matched):
        result.add(f"--keep-fp32 {entry}: no such node or op")
    return pinned


def check_keep_fp32(graph: Graph, keep: tuple[str, ...]) -> None:
    """Refuse a ``--keep-fp32`` entry that is neither the name or op type of a node of
    ``graph`` (the model as imported: a fused node keeps the name of the node it grew from)
    nor an op type at all, suggesting close matches: a typo must not pin nothing silently."""
    known = {name for node in graph.nodes for name in answers_to(node)}
    ops = known_ops()
    for entry in keep:
        if entry not in known and entry not in ops:
            close = _close_matches(entry, sorted(known | ops))
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise InputError(f"--keep-fp32 {entry!r}: the model has no node of that name and no op of that type{hint}")


def _close_matches(entry: str, names: list[str]) -> list[str]:
    """Up to three names like ``entry``, those differing only in case first ("relu" -> "Relu")."""
    same_case = [name for name in names if name.lower() == entry.lower()]
    similar = difflib.get_close_matches(entry, names, n=3)
    return list(dict.fromkeys(same_case + similar))[:3]


def _exact_values(graph: Graph) -> set[str]:
    """Float32 values that must keep float32 because they are parameters (their ops' exact inputs) or
    cast to a non-float type, and everything computed into them back to the nearest GEMM."""
    exact: set[str] = set()
    for node in reversed(graph.nodes):  # readers come after producers: one sweep suffices
        if op_class(node) is not Precision.GEMM and any(n in exact for n in node.outputs):
            exact.update(n for n in node.inputs if _is_f32(graph, n))
        positions = exact_inputs(node)
        if _casts_to_non_float(graph, node):
            positions = (0,)
        exact.update(n for i, n in enumerate(node.inputs) if i in positions and _is_f32(graph, n))
    return exact


def _casts_to_non_float(graph: Graph, node: Node) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Cast":
        return not DType(node.attr("to")).is_float
    if node.op_type == "CastLike" and len(node.inputs) > 1 and node.inputs[1] in graph.types:
        return not graph.types[node.inputs[1]].dtype.is_float
    return False


def _opaque_reads(graph: Graph, index: GraphIndex) -> set[str]:
    """Float32 values OPAQUE nodes (control flow, quantization) read, subgraphs included:
    they read them as their logical type."""
    return {name for name, readers in index.consumers.items()
            if _is_f32(graph, name) and any(op_class(r) is Precision.OPAQUE for r in readers)}


def _narrow_storage(graph: Graph, index: GraphIndex, dtype: DType, kept: set[str],
                    narrow_nodes: set[int], result: PassResult) -> None:
    """Store float32 values in ``dtype``: activations unless kept or at the graph's boundary,
    weights when every reader computes narrow."""
    boundary = set(graph.inputs) | set(graph.outputs)
    weights = set(graph.initializers) | {n.outputs[0] for n in graph.nodes if n.op_type == "Constant" and n.outputs}
    counts: Counter = Counter()
    for node in graph.nodes:
        for name in node.outputs:
            if name and name not in weights and name not in kept and name not in boundary and _is_f32(graph, name):
                _set_dtype(graph, name, dtype)
                counts["activations"] += 1
    for name in sorted(weights):
        readers = index.consumers.get(name, [])
        if (name not in kept and name not in boundary and _is_f32(graph, name) and readers
                and all(id(r) in narrow_nodes for r in readers)):
            _set_dtype(graph, name, dtype)
            counts["weights"] += 1
    for what, count in counts.items():
        result.add(f"{dtype.short} storage: {what}", count)


def _set_dtype(graph: Graph, name: str, dtype: DType) -> None:
    old = graph.storage.get(name)
    graph.storage[name] = replace(old, dtype=dtype) if old else Storage(dtype)


def _is_f32(graph: Graph, name: str) -> bool:
    if not name:
        return False
    t = graph.types.get(name)
    if t is not None:
        return t.dtype == DType.FLOAT32
    array = graph.initializers.get(name)
    return array is not None and array.dtype == DType.FLOAT32.numpy
