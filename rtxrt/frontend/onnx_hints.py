"""ONNX's own shape inference, as hints for rtxrt's: the types of a model's intermediate
values where rtxrt's rules cannot tell. rtxrt's rules decide; ONNX gets some shapes wrong
(e.g. of ConvTranspose with output_shape), so hints are never treated as declared.

Inference must cost little next to the weights: it runs on a copy of the graph without their
data, and its data propagation never sees a long 1-D value (ONNX represents the value of any
1-D tensor of known length n as n symbolic dims, for every op that propagates data)."""
from __future__ import annotations

import math

import onnx
from onnx import AttributeProto, helper
from onnx.external_data_helper import uses_external_data

from ..ir.graph import TensorType
from ..ir.onnx_codec import type_from_proto

# Tensors up to this many elements keep their values (inference reads shape tensors);
# larger ones keep only their type.
_KEPT_ELEMENTS = 1024
# No shape is longer than this: a longer 1-D value is data, never a shape.
_LONGEST_SHAPE_VECTOR = 1024
_CUT = "rtxrt::long::"
# Attribute kinds that may hold large tensors.
_HEAVY = frozenset({AttributeProto.TENSOR, AttributeProto.SPARSE_TENSOR, AttributeProto.TENSORS,
                    AttributeProto.GRAPH, AttributeProto.GRAPHS})


def onnx_inferred_types(proto: onnx.ModelProto) -> dict[str, TensorType]:
    """ONNX's inference of the top graph's value types; empty where ONNX fails."""
    light = _light_model(proto)
    try:
        plain = onnx.shape_inference.infer_shapes(light).graph  # cheap: finds the long vectors
        _cut(light.graph, _long_vectors(plain))
        propagated = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
    except Exception:
        return {}
    hints = _hints(plain)
    for name, hint in _hints(propagated).items():
        hints[name] = _merged(hints.get(name), hint)
    return hints


def _hints(graph: onnx.GraphProto) -> dict[str, TensorType]:
    hints = {}
    for vi in graph.value_info:
        t = type_from_proto(vi.type)
        if t is not None and t.shape is not None:
            t = TensorType(t.dtype, tuple(None if _invented(d) else d for d in t.shape))
        if t is not None and not vi.name.startswith(_CUT):
            hints[vi.name] = t
    return hints


def _invented(dim) -> bool:
    """ONNX names dims it cannot relate "unk__N": those say nothing."""
    return isinstance(dim, str) and dim.startswith("unk__")


def _merged(plain: TensorType | None, propagated: TensorType) -> TensorType:
    """The dims data propagation found, else those of the uncut graph."""
    if (plain is None or plain.shape is None or propagated.dtype != plain.dtype
            or (propagated.shape is not None and len(propagated.shape) != len(plain.shape))):
        return propagated
    if propagated.shape is None:
        return plain
    return TensorType(plain.dtype, tuple(p if p is not None else q for p, q in zip(propagated.shape, plain.shape)))


def _long_vectors(graph: onnx.GraphProto) -> dict[str, int]:
    """Element type of each 1-D value longer than any shape."""
    long = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and len(tt.shape.dim) == 1:
            if tt.shape.dim[0].dim_value > _LONGEST_SHAPE_VECTOR:
                long[vi.name] = tt.elem_type
    return long


def _cut(graph: onnx.GraphProto, long: dict[str, int]) -> None:
    """Nodes read each long value from an input of unknown length instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in long:
                node.input[i] = _CUT + name
    graph.input.extend(helper.make_tensor_value_info(_CUT + name, elem, [None]) for name, elem in long.items())


def _light_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto(ir_version=proto.ir_version, graph=_light_graph(proto.graph))
    model.opset_import.extend(proto.opset_import)
    model.functions.extend(proto.functions)
    return model


def _light_graph(graph: onnx.GraphProto) -> onnx.GraphProto:
    """The graph with data-less stand-ins for large tensors, and unknown dims for the -1s
    that old exporters write (other negative sizes are refused at import)."""
    light = onnx.GraphProto(name=graph.name)
    light.node.extend(_light_node(n) for n in graph.node)
    for field in ("input", "output", "value_info"):
        getattr(light, field).extend(_negative_dims_unknown(vi) for vi in getattr(graph, field))
    light.initializer.extend(_light_tensor(t) for t in graph.initializer)
    light.sparse_initializer.extend(_light_sparse(t) for t in graph.sparse_initializer)
    return light


def _light_node(node: onnx.NodeProto) -> onnx.NodeProto:
    if not any(a.type in _HEAVY for a in node.attribute):
        return node
    light = onnx.NodeProto(name=node.name, op_type=node.op_type, domain=node.domain, overload=node.overload,
                           input=node.input, output=node.output)
    light.attribute.extend(_light_attribute(a) for a in node.attribute)
    return light


def _light_attribute(attr: AttributeProto) -> AttributeProto:
    if attr.type not in _HEAVY:
        return attr
    light = AttributeProto(name=attr.name, type=attr.type, ref_attr_name=attr.ref_attr_name)
    if attr.type == AttributeProto.TENSOR:
        light.t.CopyFrom(_light_tensor(attr.t))
    elif attr.type == AttributeProto.SPARSE_TENSOR:
        light.sparse_tensor.CopyFrom(_light_sparse(attr.sparse_tensor))
    elif attr.type == AttributeProto.TENSORS:
        light.tensors.extend(_light_tensor(t) for t in attr.tensors)
    elif attr.type == AttributeProto.GRAPH:
        light.g.CopyFrom(_light_graph(attr.g))
    else:
        light.graphs.extend(_light_graph(g) for g in attr.graphs)
    return light


def _light_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """Small tensors as they are; a large one as an external tensor inference never reads."""
    if uses_external_data(tensor) or math.prod(tensor.dims) <= _KEPT_ELEMENTS:
        return tensor
    stand_in = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                data_location=onnx.TensorProto.EXTERNAL)
    stand_in.external_data.add(key="location", value="(left out for shape inference)")
    return stand_in


def _light_sparse(tensor: onnx.SparseTensorProto) -> onnx.SparseTensorProto:
    return onnx.SparseTensorProto(dims=tensor.dims, values=_light_tensor(tensor.values),
                                  indices=_light_tensor(tensor.indices))


def _negative_dims_unknown(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """``vi`` with each negative dim made unknown (a copy only where there is one)."""
    dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
    if not any(d.HasField("dim_value") and d.dim_value < 0 for d in dims):
        return vi
    light = onnx.ValueInfoProto()
    light.CopyFrom(vi)
    for d in light.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value < 0:
            d.Clear()
    return light
