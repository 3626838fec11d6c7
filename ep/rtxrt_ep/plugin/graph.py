"""An ``OrtGraph`` read back into an ONNX ``ModelProto``.

onnxruntime hands a plugin provider the graph only through its C API (``Graph_*``, ``Node_*``,
``ValueInfo_*``, ``OpAttr_*``); nothing serializes it. rtxrt's partitioner and compiler take
ONNX, so the provider rebuilds the model: nodes with their attributes, typed inputs, outputs
and intermediate values, initializers (their data only where ``weights`` is asked for), the
opsets and the IR version. ``nodes`` keeps each node's ``OrtNode*`` in the model's order, so
a decision about ``model.graph.node[i]`` can be handed back to onnxruntime."""
from __future__ import annotations

import ctypes as C
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .capi import (
    ATTR_FLOAT, ATTR_FLOATS, ATTR_GRAPH, ATTR_INT, ATTR_INTS, ATTR_STRING, ATTR_STRINGS, ATTR_TENSOR, ONNX_TYPE_TENSOR,
    Api,
)


# ONNXType -> the TypeProto field of a value rtxrt does not run (tensors only)
_NON_TENSOR = {2: "sequence_type", 3: "map_type", 5: "sparse_tensor_type", 6: "optional_type"}


@dataclass
class GraphModel:
    model: onnx.ModelProto
    nodes: list[int]  # OrtNode* of model.graph.node[i]
    has_subgraphs: list[bool]  # node i holds a graph attribute (If, Loop, Scan): not read here


def read_graph(api: Api, graph: int, *, weights: bool) -> GraphModel:
    """The model of ``graph``. Without ``weights``, initializers are declared as typed graph
    inputs (enough to partition, and no copy of the weights)."""
    reader = Reader(api)
    node_handles = [n for n in api.handles("Graph_GetNumNodes", "Graph_GetNodes", graph) if n]
    nodes, subgraphs = [], []
    for index, node in enumerate(node_handles):
        proto, has_subgraph = reader.node(node, index)
        nodes.append(proto)
        subgraphs.append(has_subgraph)
    inputs = [reader.value_info(v) for v in api.handles("Graph_GetNumInputs", "Graph_GetInputs", graph) if v]
    outputs = [reader.value_info(v) for v in api.handles("Graph_GetNumOutputs", "Graph_GetOutputs", graph) if v]
    initializer_handles = [v for v in api.handles("Graph_GetNumInitializers", "Graph_GetInitializers", graph) if v]
    declared = {vi.name for vi in inputs}
    if weights:
        initializers = [reader.initializer(v) for v in initializer_handles]
    else:
        initializers = []
        inputs += [vi for vi in map(reader.value_info, initializer_handles) if vi.name not in declared]
    known = {vi.name for vi in (*inputs, *outputs)} | {t.name for t in initializers}
    value_info = [vi for name, vi in reader.values.items() if name not in known]
    onnx_graph = helper.make_graph(nodes, api.string("Graph_GetName", graph) or "graph", inputs, outputs,
                                   initializer=initializers, value_info=value_info)
    model = helper.make_model(onnx_graph, opset_imports=_opsets(api, graph), ir_version=_ir_version(api, graph),
                              producer_name="rtxrt_ep")
    return GraphModel(model, node_handles, subgraphs)


class Reader:
    def __init__(self, api: Api):
        self.api = api
        self.values: dict[str, onnx.ValueInfoProto] = {}  # every typed value met, by name

    def node(self, node: int, index: int) -> tuple[onnx.NodeProto, bool]:
        api = self.api
        inputs = [self.name(v) for v in api.handles("Node_GetNumInputs", "Node_GetInputs", node)]
        outputs = [self.name(v) for v in api.handles("Node_GetNumOutputs", "Node_GetOutputs", node)]
        attributes, has_subgraph = [], False
        for attr in api.handles("Node_GetNumAttributes", "Node_GetAttributes", node):
            kind = C.c_int()
            api.check(api.OpAttr_GetType(attr, C.byref(kind)))
            if kind.value == ATTR_GRAPH:
                has_subgraph = True
                continue
            attributes.append(self.attribute(attr, kind.value))
        proto = helper.make_node(api.string("Node_GetOperatorType", node), inputs, outputs,
                                 name=api.string("Node_GetName", node) or f"node_{index}",
                                 domain=api.string("Node_GetDomain", node))
        proto.attribute.extend(attributes)
        return proto, has_subgraph

    def name(self, value_info: int | None) -> str:
        """The value's name ("" for an absent optional input); its type is remembered."""
        if not value_info:
            return ""
        info = self.value_info(value_info)
        return info.name

    def value_info(self, value_info: int) -> onnx.ValueInfoProto:
        api = self.api
        name = api.string("GetValueInfoName", value_info)
        if name in self.values:
            return self.values[name]
        type_info = C.c_void_p()
        api.check(api.GetValueInfoTypeInfo(value_info, C.byref(type_info)))
        info = helper.make_empty_tensor_value_info(name)
        if type_info:
            kind = C.c_int()
            api.check(api.GetOnnxTypeFromTypeInfo(type_info, C.byref(kind)))
            if kind.value == ONNX_TYPE_TENSOR:
                tensor_info = C.c_void_p()
                api.check(api.CastTypeInfoToTensorInfo(type_info, C.byref(tensor_info)))
                info = helper.make_tensor_value_info(name, *self.tensor_type(tensor_info))
            else:  # marked as what it is, so that the partitioner leaves it to onnxruntime
                getattr(info.type, _NON_TENSOR.get(kind.value, "opaque_type")).SetInParent()
        self.values[name] = info
        return info

    def tensor_type(self, tensor_info: int) -> tuple[int, list[int | str] | None]:
        """Element type and shape (None where onnxruntime knows no shape: not a scalar's [])."""
        api = self.api
        elem, rank = C.c_int(), C.c_size_t()
        api.check(api.GetTensorElementType(tensor_info, C.byref(elem)))
        if not api.TensorTypeAndShape_HasShape(tensor_info):
            return elem.value, None
        api.check(api.GetDimensionsCount(tensor_info, C.byref(rank)))
        dims = (C.c_int64 * rank.value)()
        symbols = (C.c_char_p * rank.value)()
        api.check(api.GetDimensions(tensor_info, dims, rank.value))
        api.check(api.GetSymbolicDimensions(tensor_info, symbols, rank.value))
        shape = [d if d >= 0 else (s.decode() if s else None) for d, s in zip(dims, symbols)]
        return elem.value, shape

    def attribute(self, attr: int, kind: int) -> onnx.AttributeProto:
        api = self.api
        name = api.string("OpAttr_GetName", attr)
        if kind == ATTR_TENSOR:
            value = C.c_void_p()
            api.check(api.OpAttr_GetTensorAttributeAsOrtValue(attr, C.byref(value)))
            try:
                return helper.make_attribute(name, onnx.numpy_helper.from_array(tensor_array(api, value)))
            finally:
                api.ReleaseValue(value)
        size = C.c_size_t()
        status = api.ReadOpAttr(attr, kind, None, 0, C.byref(size))  # fails (buffer too small) but tells the size
        if status:
            api.ReleaseStatus(status)
        buffer = (C.c_char * size.value)()
        api.check(api.ReadOpAttr(attr, kind, buffer, size.value, C.byref(size)))
        raw = bytes(buffer)[:size.value]
        values = {
            ATTR_INT: lambda: int(np.frombuffer(raw, np.int64)[0]),
            ATTR_INTS: lambda: [int(v) for v in np.frombuffer(raw, np.int64)],
            ATTR_FLOAT: lambda: float(np.frombuffer(raw, np.float32)[0]),
            ATTR_FLOATS: lambda: [float(v) for v in np.frombuffer(raw, np.float32)],
            ATTR_STRING: lambda: raw,  # the size is the string's own: binary (an embedded .rtxir) stays whole
            ATTR_STRINGS: lambda: raw.split(b"\0")[:-1],
        }
        if kind not in values:
            raise ValueError(f"attribute {name!r} has a type ({kind}) rtxrt_ep cannot read")
        if kind in (ATTR_INTS, ATTR_FLOATS, ATTR_STRINGS):
            attribute = helper.make_attribute(name, values[kind](),
                                              attr_type={ATTR_INTS: onnx.AttributeProto.INTS,
                                                         ATTR_FLOATS: onnx.AttributeProto.FLOATS,
                                                         ATTR_STRINGS: onnx.AttributeProto.STRINGS}[kind])
            return attribute
        return helper.make_attribute(name, values[kind]())

    def initializer(self, value_info: int) -> onnx.TensorProto:
        api = self.api
        name = self.name(value_info)
        value = C.c_void_p()
        api.check(api.ValueInfo_GetInitializerValue(value_info, C.byref(value)))
        return onnx.numpy_helper.from_array(tensor_array(api, value), name)


def tensor_array(api: Api, value: int) -> np.ndarray:
    """A copy of a CPU tensor OrtValue as a numpy array."""
    info = C.c_void_p()
    api.check(api.GetTensorTypeAndShape(value, C.byref(info)))
    try:
        elem, shape = Reader(api).tensor_type(info.value)
    finally:
        api.ReleaseTensorTypeAndShapeInfo(info)
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    if dtype == np.dtype(object):
        raise ValueError("string tensors are not read by rtxrt_ep")
    nbytes = C.c_size_t()
    api.check(api.GetTensorSizeInBytes(value, C.byref(nbytes)))
    data = C.c_void_p()
    api.check(api.GetTensorData(value, C.byref(data)))
    raw = C.string_at(data, nbytes.value) if nbytes.value else b""
    return np.frombuffer(raw, dtype=dtype).reshape([int(d) for d in shape]).copy()


def _opsets(api: Api, graph: int) -> list[onnx.OperatorSetIdProto]:
    count = C.c_size_t()
    api.check(api.Graph_GetNumOperatorSets(graph, C.byref(count)))
    domains, versions = (C.c_char_p * count.value)(), (C.c_int64 * count.value)()
    api.check(api.Graph_GetOperatorSets(graph, domains, versions, count.value))
    return [helper.make_opsetid((d or b"").decode(), int(v)) for d, v in zip(domains, versions)]


def _ir_version(api: Api, graph: int) -> int:
    version = C.c_int64()
    api.check(api.Graph_GetOnnxIRVersion(graph, C.byref(version)))
    return int(version.value)
