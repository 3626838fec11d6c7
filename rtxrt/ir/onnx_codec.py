"""Correspondence between IR values and ONNX protobuf values (types, tensors, attributes).

The IR is defined in ONNX's terms (op names, dtype codes), so the frontend, the ONNX exporter
and the single-node inference fallback share these conversions.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper
from onnx.external_data_helper import uses_external_data

from .dtypes import DType
from .graph import Graph, TensorType

TensorFromProto = Callable[[onnx.TensorProto], np.ndarray]

# Element types narrower than a byte: raw data packs them; int32_data holds one packed byte
# per entry (the 6-bit types one element per entry).
_PACKED_BITS = {getattr(onnx.TensorProto, name): bits for name, bits in (
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6),
) if hasattr(onnx.TensorProto, name)}
_COMPLEX = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)


def tensor_to_numpy(proto: onnx.TensorProto, external: bytes | np.ndarray | None = None) -> np.ndarray:
    """The array a tensor holds, checked against its dims (ValueError when they disagree).
    ``external`` is the data of a tensor kept in another file: the caller reads it, having
    decided which files a model may name; an unread external tensor is refused."""
    dims = _dims(proto)
    if external is not None:
        return _from_raw(proto.data_type, dims, external)
    if uses_external_data(proto):  # onnx would read it relative to the current directory
        raise ValueError("its data is in an external file that was not read")
    if proto.HasField("raw_data"):
        return _from_raw(proto.data_type, dims, proto.raw_data)
    _check_values(proto, dims)
    array = numpy_helper.to_array(proto)
    if proto.data_type == onnx.TensorProto.STRING:
        array = np.vectorize(_decode, otypes=[object])(array) if array.size else array.astype(object)
    return array


def sparse_to_numpy(proto: onnx.SparseTensorProto, dense: TensorFromProto = tensor_to_numpy) -> np.ndarray:
    """The dense array of a sparse tensor: zeros except at ``indices``, which are either
    [NNZ] positions in the flattened tensor or [NNZ, rank] coordinates. ``dense`` reads
    the values and indices tensors."""
    shape = _dims(proto)
    values = dense(proto.values)
    indices = dense(proto.indices)
    _check_sparse(shape, values, indices)
    array = np.zeros(shape, dtype=values.dtype)
    if indices.ndim == 1:
        array.reshape(-1)[indices] = values
    else:
        array[tuple(indices.T)] = values
    return array


def _dims(proto: onnx.TensorProto | onnx.SparseTensorProto) -> tuple[int, ...]:
    dims = tuple(int(d) for d in proto.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"its dims {list(dims)} include a negative size")
    return dims


def _from_raw(data_type: int, dims: tuple[int, ...], raw: bytes | np.ndarray) -> np.ndarray:
    """Decode raw little-endian bytes, which must be exactly what the dims need."""
    if data_type == onnx.TensorProto.STRING:
        raise ValueError("a string tensor cannot keep its data as raw bytes")
    dtype = _np_dtype(data_type)
    count = math.prod(dims)
    need = -(-count * _PACKED_BITS.get(data_type, 8 * dtype.itemsize) // 8)
    if len(raw) != need:
        raise ValueError(f"its dims {list(dims)} call for {count} element(s) ({need} bytes), "
                         f"but its data has {len(raw)} bytes")
    if data_type in _PACKED_BITS:  # numpy_helper knows how to unpack these
        inline = onnx.TensorProto(data_type=data_type, dims=dims, raw_data=bytes(raw))
        return numpy_helper.to_array(inline)
    array = np.frombuffer(raw, dtype=dtype)
    if sys.byteorder == "big":
        array = array.byteswap()
    return array.reshape(dims)


def _check_values(proto: onnx.TensorProto, dims: tuple[int, ...]) -> None:
    """The typed field (float_data, int32_data, ...) must hold what the dims need."""
    _np_dtype(proto.data_type)
    count = math.prod(dims)
    bits = _PACKED_BITS.get(proto.data_type)
    if proto.data_type in _COMPLEX:
        need = 2 * count  # real and imaginary parts
    elif bits in (2, 4):
        need = -(-count * bits // 8)  # one packed byte per entry
    else:
        need = count
    field = helper.tensor_dtype_to_field(proto.data_type)
    held = len(getattr(proto, field))
    if held != need:
        raise ValueError(f"its dims {list(dims)} call for {count} element(s) ({need} {field} values), "
                         f"but it holds {held}")


def _check_sparse(shape: tuple[int, ...], values: np.ndarray, indices: np.ndarray) -> None:
    nnz = values.shape[0] if values.ndim == 1 else -1
    if nnz < 0 or indices.shape not in ((nnz,), (nnz, len(shape))):
        raise ValueError(f"its {values.shape} values and {indices.shape} indices do not match: "
                         f"expected [NNZ] values with [NNZ] or [NNZ, {len(shape)}] indices")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"its indices are {indices.dtype}, not integers")
    bounds = np.array([math.prod(shape)]) if indices.ndim == 1 else np.array(shape)
    if indices.size and ((indices < 0).any() or (indices >= bounds).any()):
        raise ValueError(f"an index lies outside its dims {list(shape)}")


def _np_dtype(data_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except KeyError:
        raise ValueError(f"unknown element type {data_type}") from None


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


def attr_from_proto(attr: AttributeProto, graph_from_proto: Callable[[onnx.GraphProto], Graph],
                    tensor_from_proto: TensorFromProto = tensor_to_numpy) -> Any:
    """The IR value of an attribute; ``tensor_from_proto`` reads its tensors (the frontend's
    reader resolves external data)."""
    kind = attr.type
    if kind == AttributeProto.FLOAT:
        return float(attr.f)
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.STRING:
        return _decode(attr.s)
    if kind == AttributeProto.TENSOR:
        return tensor_from_proto(attr.t)
    if kind == AttributeProto.SPARSE_TENSOR:
        return sparse_to_numpy(attr.sparse_tensor, tensor_from_proto)
    if kind == AttributeProto.GRAPH:
        return graph_from_proto(attr.g)
    if kind == AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if kind == AttributeProto.STRINGS:
        return [_decode(s) for s in attr.strings]
    if kind == AttributeProto.TENSORS:
        return [tensor_from_proto(t) for t in attr.tensors]
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
