"""Writing a Model as .rtxir: canonical JSON for META and GRAPH, aligned raw bytes for WEIGHTS."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Union

import numpy as np

from ..version import __version__ as _rtxrt_version
from ..errors import FormatError
from ..ir.dtypes import DType
from ..ir.graph import MAX_DIM, Graph, Model, Node, TensorType
from . import layout
from .embedded import cubin_binding
from .layout import Section

Chunk = Union[bytes, np.ndarray]  # np.ndarray chunks are 1-D uint8


@dataclass
class RefitSource:
    """What a weightless file keeps so that refit can rebuild its weights: the imported model
    before the AOT passes (its large initializers in ``Graph.stripped``) and the order of its
    initializers, kept and stripped together, which the passes' result may depend on."""

    model: Model
    initializer_order: list[str]


@dataclass
class Cubins:
    """Kernels compiled ahead of time (``rtxrt aot --precompile``): ``blobs`` maps an arch
    ("sm_86") to {blob name: cubin}; ``shapes`` lists the input shapes ({input: dims}) the
    kernels were planned at. Neither changes what the file computes, nor its ``ir_hash``."""

    blobs: Mapping[str, Mapping[str, bytes]]
    shapes: list[Mapping[str, tuple[int, ...]]] = field(default_factory=list)


def write_rtxir(model: Model, destination: str | os.PathLike | BinaryIO, *,
                options: dict | None = None, source: RefitSource | None = None,
                cubins: Cubins | None = None) -> None:
    """Write ``model`` to a path (atomically, via a temporary file) or a binary stream.

    ``options`` (the AOT options used) are stored in META for ``rtxrt inspect``. ``source``
    makes a weightless file's refit recipe (see FORMAT.md, "Weightless files"). ``cubins``
    adds a CUBINS section (format 1.2); without it the file is a 1.1 file.
    """
    parts = _encode(model, options, source, cubins)
    if not isinstance(destination, (str, os.PathLike)):
        pack_sections(destination, parts)
        return
    path = os.fspath(destination)
    # Readers may have the old file mmap'd; replacing keeps their view intact and never
    # leaves a half-written file under the final name.
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            pack_sections(f, parts)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # name the file the caller asked for, not the temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise


def to_bytes(model: Model, *, options: dict | None = None, source: RefitSource | None = None,
             cubins: Cubins | None = None) -> bytes:
    stream = io.BytesIO()
    write_rtxir(model, stream, options=options, source=source, cubins=cubins)
    return stream.getvalue()


def graph_digest(graph: Graph) -> str:
    """SHA-256 of ``graph`` as the writer stores it (JSON and tensor bytes): equal digests mean
    equal graphs, stripped initializers compared by name and type only."""
    weights = _Weights()
    digest = hashlib.sha256(canonical_json(_encode_graph(graph, weights, 0), "graph"))
    for chunk in weights.chunks:
        digest.update(chunk)
    return digest.hexdigest()


def pack_sections(stream: BinaryIO, parts: list[tuple[str, list[Chunk]]], *,
                  version: tuple[int, int] | None = None) -> None:
    """Write a container holding ``parts`` (kind, chunks), in order, stamped with ``version``
    (default: the lowest that has every kind of section in ``parts``).

    Two passes over the chunks (hash, then write) so weights are never copied into one blob.
    """
    version = version or layout.version_for(kind for kind, _ in parts)
    measured = []
    for kind, chunks in parts:
        measured.append((kind, sum(len(c) for c in chunks), _sha256(chunks)))
    offsets, file_size = layout.place([length for _, length, _ in measured])
    sections = [Section(kind, off, length, sha) for (kind, length, sha), off in zip(measured, offsets)]
    header = layout.pack_header(sections, file_size, version)
    stream.write(header)
    pos = len(header)
    for section, (_, chunks) in zip(sections, parts):
        stream.write(bytes(section.offset - pos))
        for chunk in chunks:
            stream.write(chunk)
        pos = section.end


def canonical_json(value: Any, what: str) -> bytes:
    """Sorted keys, no whitespace, ASCII only (lone surrogates survive), no NaN literals."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise FormatError(f"cannot store {what}: {e}") from None
    if len(text) > layout.MAX_JSON_BYTES:
        raise FormatError(f"cannot store {what}: {len(text)} bytes of JSON exceeds the "
                          f"{layout.MAX_JSON_BYTES}-byte limit")
    return text.encode("ascii")


def _encode(model: Model, options: dict | None, source: RefitSource | None,
            cubins: Cubins | None) -> list[tuple[str, list[Chunk]]]:
    if options is not None and not isinstance(options, dict):
        raise FormatError(f"cannot store options: expected a dict, got {type(options).__name__}")
    meta = {**_encode_model_info(model), "rtxrt_version": str(_rtxrt_version), "options": options or {}}
    weights = _Weights()
    graph = {"graph": _encode_graph(model.graph, weights, 0)}
    if source is not None:  # a weightless file: the recipe refit replays
        graph["source"] = {**_encode_model_info(source.model),
                           "graph": _encode_graph(source.model.graph, weights, 0, source.initializer_order)}
    parts = [
        (layout.META, [canonical_json(meta, "META")]),
        (layout.GRAPH, [canonical_json(graph, "GRAPH")]),
        (layout.WEIGHTS, weights.chunks),
    ]
    if cubins is not None:
        graph_sha, weights_sha = (_sha256(chunks) for _, chunks in parts[1:3])
        parts.append((layout.CUBINS, _encode_cubins(cubins, layout.ir_hash_of(layout.MAJOR, graph_sha, weights_sha))))
    return parts


def _sha256(chunks: list[Chunk]) -> bytes:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


def _encode_cubins(cubins: Cubins, ir_hash: str) -> list[Chunk]:
    """The index length, the JSON index, then every cubin at a multiple of ALIGN from the
    end of the index's padding, in (arch, name) order so the bytes are deterministic. Each
    arch's cubins are bound to ``ir_hash``, the graph they were compiled for (embedded.py)."""
    archs: dict[str, dict[str, dict]] = {}
    bindings: dict[str, str] = {}
    chunks: list[Chunk] = []
    size = 0
    for arch in sorted(cubins.blobs):
        if not isinstance(arch, str) or not layout.ARCH.fullmatch(arch):
            raise FormatError(f"cannot store cubins: {arch!r} is not an arch name like 'sm_86'")
        entries = archs[arch] = {}
        for name in sorted(cubins.blobs[arch]):
            data = cubins.blobs[arch][name]
            if not isinstance(name, str) or not name or not isinstance(data, (bytes, bytearray)):
                raise FormatError(f"cannot store cubin {name!r} of {arch}: expected a non-empty name and bytes")
            pad = -size % layout.ALIGN
            if pad:
                chunks.append(bytes(pad))
            size += pad
            entries[name] = {"offset": size, "nbytes": len(data)}
            chunks.append(bytes(data))
            size += len(data)
        bindings[arch] = cubin_binding(ir_hash, arch, cubins.blobs[arch])
    shapes = [{_str(name, "input name"): _dims(dims, f"the shape of input {name!r}") for name, dims in each.items()}
              for each in cubins.shapes]
    index = canonical_json({"archs": archs, "bindings": bindings, "shapes": shapes}, "the CUBINS index")
    head = layout.CUBINS_INDEX_LENGTH.pack(len(index)) + index
    return [head, bytes(-len(head) % layout.ALIGN), *chunks]


def _encode_model_info(model: Model) -> dict:
    return {
        "producer": _str(model.producer, "model producer"),
        "opsets": {_str(d, "opset domain"): _int(v, f"opset of domain {d!r}") for d, v in model.opsets.items()},
        "metadata": {_str(k, "metadata key"): _str(v, f"metadata {k!r}") for k, v in model.metadata.items()},
    }


class _Weights:
    """Lays tensors out in the WEIGHTS section, each at a multiple of ALIGN."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.size = 0

    def add(self, array: np.ndarray, where: str) -> dict:
        try:
            dtype = DType.from_numpy(array.dtype)
        except TypeError as e:
            raise FormatError(f"cannot store {where}: {e}") from None
        desc: dict[str, Any] = {"dtype": dtype.short, "shape": [int(d) for d in array.shape]}
        if dtype is DType.STRING:
            desc["data"] = [_text(s, where) for s in array.reshape(-1)]
            return desc
        data = np.ascontiguousarray(array)
        if sys.byteorder != "little":
            data = data.byteswap()
        raw = data.reshape(-1).view(np.uint8)
        pad = -self.size % layout.ALIGN
        if pad:
            self.chunks.append(bytes(pad))
        self.size += pad
        desc.update(offset=self.size, nbytes=int(raw.size))
        self.chunks.append(raw)
        self.size += raw.size
        return desc


def _encode_graph(graph: Graph, weights: _Weights, depth: int, order: list[str] | None = None) -> dict:
    """``order`` lists the initializers, kept and stripped, in the order to store them
    (default: kept ones, then stripped ones)."""
    if depth > layout.MAX_GRAPH_DEPTH:
        raise FormatError(f"cannot store graph {graph.name!r}: subgraphs nested deeper than "
                          f"{layout.MAX_GRAPH_DEPTH} levels")
    where = f"graph {graph.name!r}"
    if order is None:
        order = [*graph.initializers, *graph.stripped]
    if len(set(order)) != len(order) or set(order) != graph.initializers.keys() | graph.stripped.keys():
        raise FormatError(f"cannot store {where}: the initializer order does not list each "
                          "initializer, kept or stripped, exactly once")
    inits = []
    for name in order:
        entry = {"name": _str(name, f"initializer name in {where}")}
        if name in graph.stripped:  # no bytes: "stripped" tells readers that refit attaches them
            t = graph.stripped[name]
            if name in graph.initializers or not isinstance(t, TensorType) or not t.is_static:
                raise FormatError(f"cannot store stripped initializer {name!r} of {where}: "
                                  "it needs one static type and no data")
            inits.append({**entry, **_encode_type(t, where), "stripped": True})
            continue
        array = graph.initializers[name]
        if not isinstance(array, np.ndarray):
            raise FormatError(f"cannot store initializer {name!r} of {where}: not a numpy array")
        inits.append({**entry, **weights.add(array, f"initializer {name!r} of {where}")})
    types = []
    for name, t in graph.types.items():
        if not isinstance(t, TensorType):
            raise FormatError(f"cannot store the type of {name!r} in {where}: not a TensorType")
        types.append({"name": _str(name, f"value name in {where}"), **_encode_type(t, where)})
    encoded = {
        "name": _str(graph.name, "graph name"),
        "inputs": _strs(graph.inputs, f"inputs of {where}"),
        "outputs": _strs(graph.outputs, f"outputs of {where}"),
        "types": types,
        "initializers": inits,
        "nodes": [_encode_node(n, weights, depth, f"{where} node {i}") for i, n in enumerate(graph.nodes)],
    }
    if graph.storage:  # optional: absent means every value is stored as its logical type
        encoded["storage"] = [
            {"name": _str(name, f"value name in {where}"), "dtype": DType(st.dtype).short,
             "layout": _str(st.layout, "layout"), "scale": _str(st.scale, "scale"),
             "zero_point": _str(st.zero_point, "zero_point")}
            for name, st in sorted(graph.storage.items())
        ]
    return encoded


def _encode_node(node: Node, weights: _Weights, depth: int, where: str) -> dict:
    where = f"{where} ({node.label})"
    # Sorted so the WEIGHTS layout, like the JSON, does not depend on dict insertion order.
    attrs = {
        _str(key, f"attribute name of {where}"): _encode_attr(node.attrs[key], weights, depth, f"attribute {key!r} of {where}")
        for key in sorted(node.attrs)
    }
    return {
        "op_type": _str(node.op_type, f"op_type of {where}"),
        "domain": _str(node.domain, f"domain of {where}"),
        "name": _str(node.name, f"name of {where}"),
        "inputs": _strs(node.inputs, f"inputs of {where}"),
        "outputs": _strs(node.outputs, f"outputs of {where}"),
        "attrs": attrs,
        **({"precision": {"compute": _str(node.precision.compute, "compute precision"),
                          "accumulate": _str(node.precision.accumulate, "accumulate precision")}}
           if node.precision is not None else {}),
    }


def _encode_attr(value: Any, weights: _Weights, depth: int, where: str) -> dict:
    """Every attribute carries its kind, so 1.0 stays a float and [] stays a list of ints."""
    if value is None:
        return {"kind": "none", "value": None}
    if isinstance(value, (int, np.integer)):
        return {"kind": "int", "value": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"kind": "float", "value": encode_float(value)}
    if isinstance(value, str):
        return {"kind": "string", "value": value}
    if isinstance(value, np.ndarray):
        return {"kind": "tensor", "value": weights.add(value, where)}
    if isinstance(value, Graph):
        return {"kind": "graph", "value": _encode_graph(value, weights, depth + 1)}
    if isinstance(value, TensorType):
        return {"kind": "type", "value": _encode_type(value, where)}
    if isinstance(value, (list, tuple)):
        items = list(value)
        if all(isinstance(v, (int, np.integer)) for v in items):  # also the empty list
            return {"kind": "ints", "value": [int(v) for v in items]}
        if all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
            return {"kind": "floats", "value": [encode_float(v) for v in items]}
        if all(isinstance(v, str) for v in items):
            return {"kind": "strings", "value": items}
        if all(isinstance(v, np.ndarray) for v in items):
            return {"kind": "tensors", "value": [weights.add(v, f"{where}[{i}]") for i, v in enumerate(items)]}
        if all(isinstance(v, Graph) for v in items):
            return {"kind": "graphs", "value": [_encode_graph(g, weights, depth + 1) for g in items]}
    raise FormatError(f"cannot store {where}: unsupported value {value!r:.80}")


def _encode_type(t: TensorType, where: str) -> dict:
    shape = None
    if t.shape is not None:
        if len(t.shape) > layout.MAX_RANK:
            raise FormatError(f"cannot store type {t} in {where}: more than {layout.MAX_RANK} dimensions")
        shape = []
        for d in t.shape:
            is_int = isinstance(d, (int, np.integer)) and not isinstance(d, bool)
            if not (d is None or isinstance(d, str) or (is_int and 0 <= d <= MAX_DIM)):
                raise FormatError(f"cannot store type {t} in {where}: bad dimension {d!r}")
            shape.append(int(d) if is_int else d)
    return {"dtype": DType(t.dtype).short, "shape": shape}


def encode_float(value: float) -> float | str:
    """JSON has no NaN or infinity; store those as strings. Finite floats print exactly."""
    f = float(value)
    if math.isfinite(f):
        return f
    return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")


def _text(item: Any, where: str) -> str:
    if isinstance(item, bytes):  # as the ONNX codec does: undecodable bytes survive as surrogates
        return item.decode("utf-8", errors="surrogateescape")
    if not isinstance(item, str):
        raise FormatError(f"cannot store {where}: string tensor holds a {type(item).__name__}")
    return item


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"cannot store {what}: expected a string, got {value!r:.80}")
    return value


def _strs(values: Iterable[Any], what: str) -> list[str]:
    return [_str(v, what) for v in values]


def _dims(values: Iterable[Any], what: str) -> list[int]:
    dims = [_int(d, what) for d in values]
    if len(dims) > layout.MAX_RANK or any(d < 0 for d in dims):
        raise FormatError(f"cannot store {what}: expected at most {layout.MAX_RANK} non-negative dimensions")
    return dims


def _int(value: Any, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise FormatError(f"cannot store {what}: expected an int, got {value!r:.80}")
    return int(value)
