"""ONNX → IR: load (with external data), upgrade old opsets, inline local functions, run
ONNX shape inference, convert to IR, check that every operator is supported."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import version_converter

from ..errors import ModelError, UnsupportedOpError
from ..ir.checker import check_model
from ..ir.graph import Graph, Model, Node, TensorType
from ..ir.infer import infer_types
from ..ir.onnx_codec import attr_from_proto, sparse_to_numpy, tensor_to_numpy, type_from_proto
from ..ir.ops import get_schema
from .legacy import restore_legacy_resize_defaults, rewrite_coerced_hardmax

MIN_OPSET = 13
OnnxSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_onnx(source: OnnxSource) -> Model:
    """Import an ONNX model (path, serialized bytes or ModelProto) into a checked, typed IR."""
    proto, label, base_dir = _load_proto(source)
    proto = _upgrade(proto, label)
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    hints = _onnx_inferred_types(proto)
    graph = _convert_graph(proto.graph, base_dir, top_level=True)
    model = Model(
        graph=graph,
        opsets={(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in proto.opset_import},
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p),
        metadata={p.key: p.value for p in proto.metadata_props},
    )
    unsupported = [(n.domain, n.op_type, n.name) for n in graph.walk() if get_schema(n.op_type, n.domain) is None]
    if unsupported:
        raise UnsupportedOpError(unsupported)
    infer_types(model, hints)
    check_model(model)
    return model


def _load_proto(source: OnnxSource) -> tuple[onnx.ModelProto, str, str | None]:
    if isinstance(source, onnx.ModelProto):
        return source, "model", None
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_from_string(bytes(source)), "model", None
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"not a valid ONNX model: {exc}") from None
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=True)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from None
    if not proto.HasField("graph"):
        raise ModelError(f"{path}: not a valid ONNX model (no graph)")
    return proto, str(path), str(path.parent)


def _upgrade(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None:
        raise ModelError(f"{label}: declares no version of the default ONNX operator set")
    if version > onnx.defs.onnx_opset_version():
        raise ModelError(
            f"{label}: uses opset {version}, newer than the {onnx.defs.onnx_opset_version()} "
            f"this installation of onnx knows"
        )
    if version >= MIN_OPSET:
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # never change the caller's model
    rewrite_coerced_hardmax(proto)
    try:
        upgraded = version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError/ConvertError/IndexError
        raise ModelError(f"{label}: cannot upgrade opset {version} to {MIN_OPSET}: {exc}") from None
    if version < 11:
        restore_legacy_resize_defaults(upgraded)
    return upgraded


def _onnx_inferred_types(proto: onnx.ModelProto) -> dict[str, TensorType]:
    """ONNX's own inference of the top graph's intermediate types. rtxrt's rules decide;
    these only fill in what the rules cannot tell (ONNX gets some shapes wrong, e.g. of
    ConvTranspose with output_shape, so they are never treated as declared)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_large_weights(proto), data_prop=True)
    except Exception:
        return {}
    hints = {}
    for vi in inferred.graph.value_info:
        t = type_from_proto(vi.type)
        if t is not None and t.shape is not None:
            # ONNX names dims it cannot relate "unk__N"; those say nothing.
            t = TensorType(t.dtype, tuple(None if _invented(d) else d for d in t.shape))
        if t is not None:
            hints[vi.name] = t
    return hints


def _without_large_weights(proto: onnx.ModelProto, limit: int = 1024) -> onnx.ModelProto:
    """A copy for shape inference in which large initializers are typed inputs: inference
    needs their types, and the values only of small ones (shape tensors); copying and
    serializing the weights was most of the import time."""
    graph = proto.graph
    light = onnx.GraphProto(name=graph.name)
    light.node.extend(graph.node)
    light.input.extend(graph.input)
    light.output.extend(graph.output)
    light.value_info.extend(graph.value_info)
    declared = {vi.name for vi in graph.input}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.ByteSize() > limit:
            if tensor.name not in declared:
                light.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
        else:
            light.initializer.append(tensor)
    model = onnx.ModelProto(ir_version=proto.ir_version, graph=light)
    model.opset_import.extend(proto.opset_import)
    return model


def _convert_graph(g: onnx.GraphProto, base_dir: str | None, top_level: bool = False) -> Graph:
    initializers: dict[str, np.ndarray] = {}
    for t in g.initializer:
        try:
            initializers[t.name] = tensor_to_numpy(t, base_dir)
        except Exception as exc:
            raise ModelError(f"initializer {t.name!r}: cannot read its data ({exc})") from None
    for st in g.sparse_initializer:
        try:
            initializers[st.values.name] = sparse_to_numpy(st, base_dir)
        except Exception as exc:
            raise ModelError(f"sparse initializer {st.values.name!r}: cannot read its data ({exc})") from None
    types = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = type_from_proto(vi.type)
        if t is not None:
            types[vi.name] = t
        elif vi.type.WhichOneof("value") not in (None, "tensor_type"):
            raise ModelError(f"value {vi.name!r} has type {vi.type.WhichOneof('value')}; only tensors are supported")
    nodes = []
    used_names: set[str] = set()
    for index, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{index}"
        while name in used_names:
            name += "_"
        used_names.add(name)
        attrs = {a.name: attr_from_proto(a, lambda sub: _convert_graph(sub, base_dir)) for a in n.attribute}
        node = Node(n.op_type, list(n.input), list(n.output), attrs, name, n.domain if n.domain != "ai.onnx" else "")
        if node.op_type == "Constant" and node.domain == "":
            _normalize_constant(node)
        nodes.append(node)
    # Inputs that have an initializer are constants with a default (IR version < 4 style);
    # rtxrt treats them as weights, not run-time inputs.
    inputs = [vi.name for vi in g.input if not (top_level and vi.name in initializers)]
    return Graph(nodes, inputs, [vi.name for vi in g.output], types, initializers, g.name or "main")


def _invented(dim) -> bool:
    return isinstance(dim, str) and dim.startswith("unk__")


_CONSTANT_FORMS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
    "value_string": object,
    "value_strings": object,
}


def _normalize_constant(node: Node) -> None:
    """Give every Constant node one ``value`` tensor attribute, whichever form it used."""
    if "value" in node.attrs:
        return
    for key, dtype in _CONSTANT_FORMS.items():
        if key in node.attrs:
            node.attrs = {"value": np.array(node.attrs[key], dtype=dtype)}
            return
    if "sparse_value" in node.attrs:
        node.attrs = {"value": np.asarray(node.attrs["sparse_value"])}
        return
    raise ModelError(f"{node.label}: Constant has no value attribute")
