"""choose_layout: channels-last (NHWC) storage for regions of 2-D convolutions.

Tensor-core convolution kernels (implicit GEMM) read the channels of a pixel as the contiguous
reduction axis, so they want NHWC; an NCHW convolution pays a transpose inside. The pass
marks whole regions NHWC and leaves the rest of the graph in the logical (NCHW) layout:

- A node that can run channels-last (``_runs_nhwc``): a 2-D Conv, ConvTranspose or
  rtxrt::FusedConv with constant weights (the anchors), and, on 4-D tensors, pools,
  BatchNormalization, InstanceNormalization, GroupNormalization, LRN, elementwise ops and
  rtxrt::Elementwise chains, Concat and Split on the channel axis, Resize of the spatial axes,
  Softmax/LogSoftmax over channels. A node that writes a graph output never runs NHWC:
  outputs keep the logical layout.
- A region is a maximal set of such nodes joined by 4-D activations (values computed at run
  time; weights do not join). Everything else (Reshape, Flatten, Transpose, Gather, MatMul,
  a Softmax over another axis, ...) reads and writes the logical layout.
- A conversion (a transpose the backend inserts) is a 4-D activation crossing a region's
  border: written outside and read inside, or written inside and read outside. One per
  value, however many readers it has. A value whose channels or pixels number 1 (N,C,1,1
  after global pooling) has the same bytes in both layouts: its conversion is free.
- Cost rule: a region becomes NHWC when it holds more anchors than costly conversions, so a
  lone conv between two Reshapes (1 conv, 2 conversions) stays NCHW, and ResNet-50 (53 convs,
  the input's conversion plus a free one after global pooling) goes NHWC whole.

Annotations: each 4-D activation a chosen region writes gets ``Storage(layout="NHWC")`` with
its logical dtype (precision may narrow the dtype later; it keeps the layout). A 4-D weight
whose readers all run NHWC is marked NHWC too: for a conv weight (O, I, kH, kW) that is OHWI
(ConvTranspose: (I, kH, kW, O)), the filter layout NHWC implicit-GEMM kernels use; the backend
permutes weights once at load time, so they never count as conversions.
"""
from __future__ import annotations

from dataclasses import replace

from ...ir.graph import Graph, Model, Node, Storage, TensorType
from ...ir.rewrite import GraphIndex
from ..options import AotOptions
from ..pass_result import PassResult
from ...ir.ops import Layout, facts_of
from ...ir.ops.registry import attribute_default
from ...op_table import op_key

NHWC = "NHWC"
MULTI_OUTPUT = frozenset({"rtxrt::Elementwise"})  # a fused chain may write several results


def choose_layout(model: Model, options: AotOptions) -> PassResult:
    result = PassResult()
    graph = model.graph
    index = GraphIndex(graph)
    members = [n for n in graph.nodes if _runs_nhwc(n, graph, index, model.opset)]
    chosen: set[int] = set()
    for region in _regions(members, graph, index):
        ids = {id(n) for n in region}
        crossing = _crossings(region, ids, graph, index)
        anchors = sum(_layout(n) is Layout.ANCHOR for n in region)
        costly = sum(not _same_bytes(graph, v) for v in crossing)
        if anchors > costly:
            chosen |= ids
            result.add("NHWC regions")
            result.add("layout conversions", len(crossing))
        elif anchors:
            result.add("convs left NCHW (conversions would cost more)", anchors)
    for node in graph.nodes:
        if id(node) in chosen:
            for name in node.outputs:
                if _is_activation(graph, index, name):
                    _set_layout(graph, name)
                    result.add("NHWC values")
    for name in sorted(set(graph.initializers) | {n.outputs[0] for n in graph.nodes if n.op_type == "Constant"}):
        readers = index.consumers.get(name, [])
        if (_rank(graph, name) == 4 and name not in graph.inputs and name not in graph.outputs
                and readers and all(id(r) in chosen for r in readers)):
            _set_layout(graph, name)
            result.add("NHWC weights")
    return result


def _layout(node: Node) -> Layout:
    facts = facts_of(node)
    return Layout.LOGICAL if facts is None else facts.layout


def _runs_nhwc(node: Node, graph: Graph, index: GraphIndex, opset: int) -> bool:
    """Whether ``node`` has a channels-last kernel for the tensors it has here (its operator's
    layout fact, and the condition that fact names)."""
    outputs = [o for o in node.outputs if o]
    if not outputs or any(o in index.outputs or _rank(graph, o) != 4 for o in outputs):
        return False
    if len(outputs) > 1 and op_key(node.op_type, node.domain) not in MULTI_OUTPUT and node.op_type != "Split":
        return False  # MaxPool's Indices, BatchNormalization's training outputs: NCHW offsets
    layout = _layout(node)
    if layout is Layout.ANCHOR:
        return _rank(graph, node.inputs[0]) == 4 and index.constant(node.inputs[1]) is not None
    if layout is Layout.CHANNEL_AXIS:
        axis = node.attrs.get("axis", attribute_default(node, "axis", opset))
        return axis in (1, -3)
    if layout is Layout.PIXELS:
        return _resizes_only_pixels(node, graph, index)
    return layout in (Layout.ANY, Layout.SPATIAL)


def _resizes_only_pixels(node: Node, graph: Graph, index: GraphIndex) -> bool:
    """A Resize whose constant scales or sizes keep N and C."""
    scales = index.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    sizes = index.constant(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if node.attr("axes") is not None:
        return False
    if scales is not None and scales.size == 4:
        return bool(scales[0] == 1 and scales[1] == 1)
    in_shape = graph.types[node.inputs[0]].shape if node.inputs[0] in graph.types else None
    if sizes is not None and sizes.size == 4 and in_shape is not None:
        return [int(s) for s in sizes[:2]] == list(in_shape[:2])
    return False


def _regions(members: list[Node], graph: Graph, index: GraphIndex) -> list[list[Node]]:
    """Members joined by the 4-D activations one writes and another reads (union-find)."""
    parent = {id(n): id(n) for n in members}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for node in members:
        for name in node.inputs:
            producer = index.producer.get(name)
            if producer is not None and id(producer) in parent and _is_activation(graph, index, name):
                parent[root(id(node))] = root(id(producer))
    regions: dict[int, list[Node]] = {}
    for node in members:
        regions.setdefault(root(id(node)), []).append(node)
    return list(regions.values())


def _crossings(region: list[Node], ids: set[int], graph: Graph, index: GraphIndex) -> set[str]:
    """The 4-D activations that cross the region's border, either way."""
    crossing: set[str] = set()
    for node in region:
        for name in node.inputs:
            producer = index.producer.get(name)
            if _is_activation(graph, index, name) and (producer is None or id(producer) not in ids):
                crossing.add(name)
        for name in node.outputs:
            if _is_activation(graph, index, name) and any(id(r) not in ids for r in index.consumers.get(name, [])):
                crossing.add(name)
    return crossing


def _is_activation(graph: Graph, index: GraphIndex, name: str) -> bool:
    """A 4-D value computed at run time (weights are laid out at load time)."""
    return bool(name) and _rank(graph, name) == 4 and index.constant(name) is None


def _rank(graph: Graph, name: str) -> int | None:
    t = graph.types.get(name)
    if t is not None:
        return t.rank
    array = graph.initializers.get(name)
    return None if array is None else array.ndim


def _same_bytes(graph: Graph, name: str) -> bool:
    """NCHW and NHWC coincide when C == 1 or H * W == 1."""
    shape = graph.types[name].shape
    _, c, h, w = shape
    return c == 1 or (h == 1 and w == 1)


def _set_layout(graph: Graph, name: str) -> None:
    old = graph.storage.get(name)
    t = graph.types.get(name) or TensorType.of(graph.initializers[name])
    graph.storage[name] = replace(old, layout=NHWC) if old else Storage(t.dtype, NHWC)
