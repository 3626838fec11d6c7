"""ONNX → IR: load (external data only from inside the model's folder), upgrade old opsets,
inline local functions, run ONNX shape inference, convert to IR, check that every operator is
supported."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import version_converter

from ..errors import ModelError, RtxrtError, UnsupportedOpError
from ..ir.checker import check_model
from ..ir.graph import Graph, Model, Node, TensorType
from ..ir.infer import infer_types
from .function_bodies import expand_function_ops
from ..ir.onnx_codec import TensorFromProto, attr_from_proto, sparse_to_numpy, type_from_proto
from ..ir.ops import get_schema
from .external_data import tensor_reader
from .legacy import restore_legacy_resize_defaults, rewrite_coerced_hardmax
from .onnx_hints import onnx_inferred_types
from .proto_check import check_proto

MIN_OPSET = 13
OnnxSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_onnx(source: OnnxSource, *, base_dir: str | os.PathLike | None = None) -> Model:
    """Import an ONNX model (path, serialized bytes or ModelProto) into a checked, typed IR.

    External data is read only from inside ``base_dir``: by default the folder of a model
    given as a path; a model given as bytes or a ModelProto has none unless named here."""
    proto, label, folder = _load_proto(source)
    check_proto(proto, label)
    if base_dir is not None:
        folder = Path(base_dir)
    proto = _upgrade(proto, label)
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    proto = expand_function_ops(proto)
    hints = onnx_inferred_types(proto)
    graph = _convert_graph(proto.graph, tensor_reader(folder), top_level=True)
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


def _load_proto(source: OnnxSource) -> tuple[onnx.ModelProto, str, Path | None]:
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
        proto = onnx.load(str(path), load_external_data=False)  # external data: see external_data.py
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from None
    if not proto.HasField("graph"):
        raise ModelError(f"{path}: not a valid ONNX model (no graph)")
    return proto, str(path), path.parent


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


def _convert_graph(g: onnx.GraphProto, read: TensorFromProto, top_level: bool = False) -> Graph:
    _check_unique_names(g)
    initializers: dict[str, np.ndarray] = {}
    for t in g.initializer:
        with _reading(f"initializer {t.name!r}"):
            initializers[t.name] = read(t)
    for st in g.sparse_initializer:
        with _reading(f"sparse initializer {st.values.name!r}"):
            initializers[st.values.name] = sparse_to_numpy(st, read)
    types = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = _declared_type(vi)
        if t is not None:
            types[vi.name] = t
    nodes = []
    used_names: set[str] = set()
    for index, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{index}"
        while name in used_names:
            name += "_"
        used_names.add(name)
        attrs = {}
        for a in n.attribute:
            with _reading(f"{n.op_type} node {name!r}, attribute {a.name!r}"):
                attrs[a.name] = attr_from_proto(a, lambda sub: _convert_graph(sub, read), read)
        node = Node(n.op_type, list(n.input), list(n.output), attrs, name, n.domain if n.domain != "ai.onnx" else "")
        if node.op_type == "Constant" and node.domain == "":
            _normalize_constant(node)
        nodes.append(node)
    # Inputs that have an initializer are constants with a default (IR version < 4 style);
    # rtxrt treats them as weights, not run-time inputs.
    inputs = [vi.name for vi in g.input if not (top_level and vi.name in initializers)]
    return Graph(nodes, inputs, [vi.name for vi in g.output], types, initializers, g.name or "main")


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Any failure to read a tensor becomes a ModelError naming the tensor."""
    try:
        yield
    except RtxrtError:
        raise
    except Exception as exc:
        raise ModelError(f"{what}: {exc}") from None


def _check_unique_names(g: onnx.GraphProto) -> None:
    """Each name is an input, an output and a value at most once (ONNX's single assignment);
    a graph input may also have an initializer (its default, IR version < 4)."""
    where = f"graph {g.name!r}"
    for kind, names in (("input", [vi.name for vi in g.input]), ("output", [vi.name for vi in g.output]),
                        ("initializer", [t.name for t in g.initializer]
                         + [st.values.name for st in g.sparse_initializer])):
        counts = Counter(names)
        twice = next((name for name, count in counts.items() if count > 1), None)
        if twice is not None:
            raise ModelError(f"{where}: {kind} {twice!r} is declared {counts[twice]} times")
    defined = {vi.name: "a graph input" for vi in g.input}
    defined.update((t.name, "an initializer") for t in g.initializer)
    defined.update((st.values.name, "a sparse initializer") for st in g.sparse_initializer)
    for index, n in enumerate(g.node):
        label = f"{n.op_type} node {n.name or f'{n.op_type}_{index}'!r}"
        for name in filter(None, n.output):
            if name in defined:
                raise ModelError(f"{where}: {label} produces {name!r}, which is already {defined[name]}")
            defined[name] = f"produced by {label}"


def _declared_type(vi: onnx.ValueInfoProto) -> TensorType | None:
    """The type a graph declares for a value; -1 (what old exporters write for "unknown")
    is an unknown dim, any other negative size is refused."""
    t = type_from_proto(vi.type)
    if t is None:
        if vi.type.WhichOneof("value") not in (None, "tensor_type"):
            raise ModelError(f"value {vi.name!r} has type {vi.type.WhichOneof('value')}; only tensors are supported")
        return None
    if t.shape is None:
        return t
    for axis, dim in enumerate(t.shape):
        if isinstance(dim, int) and dim < -1:
            raise ModelError(f"value {vi.name!r} declares dim {dim} at axis {axis} of shape {list(t.shape)}; "
                             f"sizes cannot be negative")
    return TensorType(t.dtype, tuple(None if dim == -1 else dim for dim in t.shape))


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
