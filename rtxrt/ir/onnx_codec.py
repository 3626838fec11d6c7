"""Correspondence between IR values and ONNX protobuf values (types, tensors, attributes).

The IR is defined in ONNX's terms (op names, dtype codes), so the frontend, the ONNX exporter
and the single-node inference fallback share these conversions.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from .dtypes import DType
from .graph import Graph, TensorType


def tensor_to_numpy(proto: onnx.TensorProto, base_dir: str | None = None) -> np.ndarray:
    array = numpy_helper.to_array(proto, base_dir or "")
    if proto.data_type == onnx.TensorProto.STRING:
        array = np.vectorize(_decode, otypes=[object])(array) if array.size else array.astype(object)
    return array


def sparse_to_numpy(proto: onnx.SparseTensorProto, base_dir: str | None = None) -> np.ndarray:
    """The dense array of a sparse tensor: zeros except at ``indices``, which are either
    [NNZ] positions in the flattened tensor or [NNZ, rank] coordinates."""
    values = tensor_to_numpy(proto.values, base_dir)
    indices = tensor_to_numpy(proto.indices, base_dir)
    dense = np.zeros(tuple(proto.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def numpy_to_tensor(array: np.ndarray, name: str = "") -> onnx.TensorProto:
    if array.dtype == object:
        return helper.make_tensor(
            name, onnx.TensorProto.STRING, array.shape, [_encode(s) for s in array.reshape(-1)]
        )
    return numpy_helper.from_array(np.asarray(array), name)


def type_from_proto(type_proto: onnx.TypeProto) -> TensorType | None:
    """TensorType of a tensor TypeProto; None for sequences, maps and optionals."""
    if type_proto.WhichOneof("value") != "tensor_type":
        return None
    tt = type_proto.tensor_type
    if tt.elem_type == 0:
        return None
    dtype = DType(tt.elem_type)
    if not tt.HasField("shape"):
        return TensorType(dtype, None)
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorType(dtype, tuple(dims))


def type_to_value_info(name: str, t: TensorType | None) -> onnx.ValueInfoProto:
    if t is None:
        return helper.make_empty_tensor_value_info(name)
    shape = None if t.shape is None else list(t.shape)
    return helper.make_tensor_value_info(name, int(t.dtype), shape)


def attr_from_proto(attr: AttributeProto, graph_from_proto: Callable[[onnx.GraphProto], Graph]) -> Any:
    kind = attr.type
    if kind == AttributeProto.FLOAT:
        return float(attr.f)
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.STRING:
        return _decode(attr.s)
    if kind == AttributeProto.TENSOR:
        return tensor_to_numpy(attr.t)
    if kind == AttributeProto.SPARSE_TENSOR:
        return sparse_to_numpy(attr.sparse_tensor)
    if kind == AttributeProto.GRAPH:
        return graph_from_proto(attr.g)
    if kind == AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if kind == AttributeProto.STRINGS:
        return [_decode(s) for s in attr.strings]
    if kind == AttributeProto.TENSORS:
        return [tensor_to_numpy(t) for t in attr.tensors]
    if kind == AttributeProto.GRAPHS:
        return [graph_from_proto(g) for g in attr.graphs]
    if kind == AttributeProto.TYPE_PROTO:
        return type_from_proto(attr.tp)
    raise ValueError(f"attribute {attr.name!r} has unsupported kind {kind}")


def attr_to_proto(name: str, value: Any, graph_to_proto: Callable[[Graph], onnx.GraphProto]) -> AttributeProto:
    if isinstance(value, Graph):
        return helper.make_attribute(name, graph_to_proto(value))
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_to_tensor(value))
    if isinstance(value, TensorType):
        return helper.make_attribute(name, helper.make_tensor_type_proto(int(value.dtype), value.shape))
    if isinstance(value, list) and value and isinstance(value[0], Graph):
        return helper.make_attribute(name, [graph_to_proto(g) for g in value])
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return helper.make_attribute(name, [numpy_to_tensor(t) for t in value])
    if isinstance(value, list) and not value:
        return helper.make_attribute(name, [], attr_type=AttributeProto.INTS)
    return helper.make_attribute(name, value)


def _decode(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw


def _encode(text: str | bytes) -> bytes:
    return text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else text
