"""Reading .rtxir files from untrusted sources.

Every section's checksum is verified before it is parsed, and every parsed value is
validated before use, so a damaged or hostile file raises FormatError and nothing else.
I/O errors (a missing file, a directory) propagate as OSError.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import mmap
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from ..errors import FormatError
from ..ir.dtypes import DType
from ..ir.graph import MAX_DIM, Graph, Model, Node, NodePrecision, Storage, TensorType
from . import layout
from .embedded import cubin_binding, cubin_problem
from .writer import RefitSource


@dataclass
class RtxirInfo:
    """What ``rtxrt inspect`` shows without parsing the graph."""

    source: str
    format_version: tuple[int, int]
    producer: str
    rtxrt_version: str
    opsets: dict[str, int]
    metadata: dict[str, str]
    options: dict[str, Any]
    sections: dict[str, int]  # section name -> length in bytes, in file order
    file_size: int
    weight_bytes: int  # length of WEIGHTS, including alignment padding
    ir_hash: str


def read_rtxir(source: str | os.PathLike | bytes | bytearray | memoryview, *,
               mmap_weights: bool = True) -> Model:
    """Load a Model. From a path with ``mmap_weights``, tensors are read-only views of a
    memory map of the file; otherwise they are views of the given or read bytes."""
    with _File.open(source, mmap_weights) as f:
        model, _, _, _ = _read_model(f)
        return model


@dataclass
class RefitRecipe:
    """What refit needs from a file: its optimized graph, the build's options and version,
    and, for a weightless file, the source model to replay (None in a file with weights)."""

    model: Model
    options: dict[str, Any]
    rtxrt_version: str
    source: RefitSource | None


def read_refit_recipe(source: str | os.PathLike | bytes | bytearray | memoryview) -> RefitRecipe:
    """Read a file for refit; tensors are writable copies, independent of the file."""
    with _File.open(source, False) as f:
        model, meta, top, decoder = _read_model(f)
        recipe = None
        if "source" in top:
            obj = decoder.get(top, "source", dict, "GRAPH")
            info = decoder.model_info(obj, "GRAPH source")
            order: list[str] = []
            graph = decoder.graph(decoder.get(obj, "graph", dict, "GRAPH source"), 0, "GRAPH source", order)
            recipe = RefitSource(Model(graph=graph, **info), order)
        return RefitRecipe(model, meta["options"], meta["rtxrt_version"], recipe)


def _read_model(f: "_File") -> tuple[Model, dict, dict, "_Decoder"]:
    """The model of a file, its checked META, its GRAPH JSON and the decoder that read it."""
    for kind in f.sections.keys() - layout.SECTION_NAMES.keys():
        f.section(kind)  # unknown sections are skipped, but damage in them is still damage
    f.cubins()  # not part of the model, but a file that reads is a file whose every section is sound
    meta = f.meta()
    decoder = _Decoder(f)
    top = f.json(layout.GRAPH)
    model = Model(graph=decoder.graph(decoder.get(top, "graph", dict, "GRAPH"), 0, "GRAPH"),
                  opsets=meta["opsets"], producer=meta["producer"], metadata=meta["metadata"])
    return model, meta, top, decoder


def read_header(source: str | os.PathLike | bytes | bytearray | memoryview) -> RtxirInfo:
    """Version, producer, options and sizes; verifies only the header, table and META."""
    with _File.open(source, True) as f:
        meta = f.meta()
        weights = f.sections.get(layout.WEIGHTS)
        return RtxirInfo(
            source=f.label, format_version=f.version, producer=meta["producer"],
            rtxrt_version=meta["rtxrt_version"], opsets=meta["opsets"], metadata=meta["metadata"],
            options=meta["options"], sections={s.name: s.length for s in f.sections.values()},
            file_size=len(f.buf), weight_bytes=weights.length if weights else 0, ir_hash=f.ir_hash(),
        )


@dataclass
class CubinIndex:
    """A file's CUBINS section without the cubins: arch -> blob name -> size in bytes, the
    input shapes the kernels were planned at, and per arch why its cubins may not run (None:
    bound to this file's graph and each one a cubin for that arch; see embedded.py). Empty
    for a file without CUBINS."""

    sizes: dict[str, dict[str, int]]
    shapes: list[dict[str, tuple[int, ...]]]
    problems: dict[str, str | None]


def read_cubins(source: str | os.PathLike | bytes | bytearray | memoryview, arch: str) -> dict[str, bytes]:
    """The cubins compiled ahead of time for ``arch`` ("sm_86"): blob name -> cubin, copied
    out of the file; {} when the file has none for that arch. FormatError when they are not
    bound to this file's graph or are not cubins for ``arch``. Verifies the header, the table
    and CUBINS only."""
    with _File.open(source, True) as f:
        blobs, _, bindings = f.cubins()
        named = blobs.get(arch, {})
        problem = f.cubin_problem(arch, named, bindings)
        if problem:
            f.fail(f"the embedded {arch} kernels {problem}")
        return {name: bytes(data) for name, data in named.items()}


def read_cubin_index(source: str | os.PathLike | bytes | bytearray | memoryview) -> CubinIndex:
    """Which archs have cubins, their sizes, the shapes they were planned at and whether
    they are bound to this file's graph."""
    with _File.open(source, True) as f:
        blobs, shapes, bindings = f.cubins()
        return CubinIndex({arch: {name: len(data) for name, data in named.items()} for arch, named in blobs.items()},
                          shapes, {arch: f.cubin_problem(arch, named, bindings) for arch, named in blobs.items()})


def ir_hash(source: str | os.PathLike | bytes | bytearray | memoryview) -> str:
    """Hex digest identifying the file's graph and weights (not META: producer and options
    do not change what runs). Derived from the checksummed section table, so it is cheap."""
    with _File.open(source, True) as f:
        return f.ir_hash()


class _File:
    """An opened .rtxir: the bytes, a label for messages and the checked section table."""

    def __init__(self, buf: Any, label: str):
        self.buf = buf  # bytes, bytearray, mmap or memoryview; tensors are views of it
        self.label = label
        with memoryview(buf) as view:
            self.version, sections = layout.read_table(view, label)
        self.sections = {s.kind: s for s in sections}
        for kind in (layout.META, layout.GRAPH):
            if kind not in self.sections:
                self.fail(f"missing section {layout.SECTION_NAMES[kind]}")

    @staticmethod
    @contextlib.contextmanager
    def open(source: Any, use_mmap: bool):
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source)
            buf = view if view.format == "B" and view.ndim == 1 else view.cast("B")
            yield _File(buf, "<bytes>")
            return
        label = os.fspath(source)
        with open(label, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            mapped = None
            if use_mmap and size > 0:
                with contextlib.suppress(OSError, ValueError):  # e.g. a pipe: read it instead
                    mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            if mapped is None:  # read into a bytearray so tensors are writable views of it
                data = bytearray(size)
                del data[fh.readinto(data):]
                if not size:  # pipes and the like report no size
                    data += fh.read()
        try:
            yield _File(mapped if mapped is not None else data, label)
        except BaseException:
            if mapped is not None:
                with contextlib.suppress(BufferError):  # arrays from before the failure may pin it
                    mapped.close()
            raise

    def fail(self, message: str) -> NoReturn:
        raise FormatError(f"{self.label}: {message}")

    def section(self, kind: str) -> memoryview:
        """The bytes of a section (empty if absent), after verifying its checksum."""
        s = self.sections.get(kind)
        if s is None:
            return memoryview(b"")
        data = memoryview(self.buf)[s.offset:s.end]
        if hashlib.sha256(data).digest() != s.sha256:
            self.fail(f"checksum mismatch in section {s.name} (the file is damaged)")
        return data

    def json(self, kind: str) -> dict:
        return self.parse_json(self.section(kind), layout.SECTION_NAMES[kind])

    def parse_json(self, data: memoryview, name: str) -> dict:
        if len(data) > layout.MAX_JSON_BYTES:
            self.fail(f"section {name} has {len(data)} bytes of JSON, more than the "
                      f"{layout.MAX_JSON_BYTES}-byte limit")
        try:
            value = json.loads(bytes(data), parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
        except RecursionError:
            self.fail(f"section {name}: JSON nested too deeply")
        except ValueError as e:  # includes JSONDecodeError, UnicodeDecodeError, huge int literals
            self.fail(f"section {name}: invalid JSON ({e})")
        if not isinstance(value, dict):
            self.fail(f"section {name}: expected a JSON object at the top level")
        return value

    def meta(self) -> dict:
        check = _Checker(self.label)
        meta = self.json(layout.META)
        out = check.model_info(meta, "META")
        out["rtxrt_version"] = check.get(meta, "rtxrt_version", str, "META")
        out["options"] = check.get(meta, "options", dict, "META")
        return out

    def cubins(self) -> tuple[dict[str, dict[str, memoryview]], list[dict[str, tuple[int, ...]]], dict[str, str]]:
        """The CUBINS section, checked: arch -> blob name -> cubin (a view of the file), the
        shapes, and arch -> binding digest; empty when the file has no CUBINS."""
        if layout.CUBINS not in self.sections:
            return {}, [], {}
        data = self.section(layout.CUBINS)
        head = layout.CUBINS_INDEX_LENGTH.size
        if len(data) < head:
            self.fail(f"section CUBINS has {len(data)} bytes, too few for its {head}-byte index length")
        (length,) = layout.CUBINS_INDEX_LENGTH.unpack_from(data)
        if length > len(data) - head:
            self.fail(f"section CUBINS: its {length}-byte index overruns the {len(data)}-byte section")
        index = self.parse_json(data[head:head + length], "CUBINS")
        area = data[min(layout.align(head + length), len(data)):]
        check = _Checker(self.label)
        shapes = [self._shapes(each, check, f"CUBINS shapes[{i}]")
                  for i, each in enumerate(check.get(index, "shapes", list, "CUBINS"))]
        archs = check.get(index, "archs", dict, "CUBINS")
        blobs: dict[str, dict[str, memoryview]] = {}
        spans = []
        for arch in archs:
            if not layout.ARCH.fullmatch(arch):
                check.fail("CUBINS", f"{arch!r:.40} is not an arch name like 'sm_86'")
            entries = blobs[arch] = {}
            named = check.get(archs, arch, dict, "CUBINS archs")
            for name in named:
                where = f"CUBINS {arch} cubin {name!r:.80}"
                entry = check.get(named, name, dict, f"CUBINS {arch}")
                offset, nbytes = (check.get(entry, key, int, where) for key in ("offset", "nbytes"))
                if not name:
                    check.fail(where, "a cubin needs a name")
                if offset < 0 or offset % layout.ALIGN:
                    check.fail(where, f"offset {offset} is not a non-negative multiple of {layout.ALIGN}")
                if nbytes < 0 or offset + nbytes > len(area):
                    check.fail(where, f"bytes [{offset}, {offset + nbytes}) lie outside the {len(area)} bytes "
                                      "of cubins")
                spans.append((offset, offset + nbytes, where))
                entries[name] = area[offset:offset + nbytes]
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            if start < end:
                check.fail(second, f"overlaps {first}")
        # Optional: files from before bindings have none, and their cubins never run.
        bindings = check.get(index, "bindings", dict, "CUBINS") if "bindings" in index else {}
        for arch in bindings:
            check.get(bindings, arch, str, "CUBINS bindings")
        return blobs, shapes, bindings

    def cubin_problem(self, arch: str, cubins: dict[str, memoryview], bindings: dict[str, str]) -> str | None:
        """None when ``arch``'s cubins may run (see embedded.py), else what is wrong with them."""
        if not cubins:
            return None
        if arch not in bindings:
            return "are not bound to a graph (built by an rtxrt that did not bind them)"
        if bindings[arch] != cubin_binding(self.ir_hash(), arch, cubins):
            return "are not the ones built for this file's graph (moved from another file or altered since)"
        for name, cubin in cubins.items():
            problem = cubin_problem(cubin, arch)
            if problem:
                return f"include {name!r:.80}, which is {problem}"
        return None

    @staticmethod
    def _shapes(obj: Any, check: _Checker, where: str) -> dict[str, tuple[int, ...]]:
        if type(obj) is not dict:
            check.fail(where, "expected a JSON object")
        shapes = {}
        for name in obj:
            dims = check.get(obj, name, list, where)
            if len(dims) > layout.MAX_RANK or not all(type(d) is int and d >= 0 for d in dims):
                check.fail(where, f"the shape of {name!r:.80} must be at most {layout.MAX_RANK} non-negative integers")
            shapes[name] = tuple(dims)
        return shapes

    def ir_hash(self) -> str:
        graph, weights = (self.sections.get(kind) for kind in (layout.GRAPH, layout.WEIGHTS))
        return layout.ir_hash_of(self.version[0], graph.sha256 if graph else None, weights.sha256 if weights else None)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-standard constant {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out


class _Checker:
    """Structural checks on parsed JSON; every failure names where in the file it is."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, where: str, message: str) -> NoReturn:
        raise FormatError(f"{self.label}: {where}: {message}")

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if type(obj) is not dict:
            self.fail(where, "expected a JSON object")
        if key not in obj:
            self.fail(where, f"missing key {key!r}")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if type(value) not in kinds:  # exact: JSON true is not an int
            names = " or ".join(_JSON_NAMES[k] for k in kinds)
            self.fail(where, f"{key!r} must be {names}, got {_JSON_NAMES.get(type(value), '?')}")
        return value

    def strs(self, obj: Any, key: str, where: str) -> list[str]:
        values = self.get(obj, key, list, where)
        if not all(type(v) is str for v in values):
            self.fail(where, f"{key!r} must be a list of strings")
        return values

    def model_info(self, obj: Any, where: str) -> dict:
        """producer, opsets and metadata, as META and a weightless file's source hold them."""
        opsets = self.get(obj, "opsets", dict, where)
        metadata = self.get(obj, "metadata", dict, where)
        return {"producer": self.get(obj, "producer", str, where),
                "opsets": {d: self.get(opsets, d, int, f"{where} opsets") for d in opsets},
                "metadata": {k: self.get(metadata, k, str, f"{where} metadata") for k in metadata}}


_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "a boolean", type(None): "null"}


class _Decoder(_Checker):
    """Turns the GRAPH JSON back into IR objects, checking as it goes."""

    def __init__(self, f: _File):
        super().__init__(f.label)
        self.buf = f.buf
        weights = f.sections.get(layout.WEIGHTS)
        self.weights_start = weights.offset if weights else 0
        self.weights_len = weights.length if weights else 0
        if weights is not None and weights.length:
            f.section(layout.WEIGHTS)  # verify the checksum before trusting any tensor bytes

    def graph(self, obj: Any, depth: int, where: str, order: list[str] | None = None) -> Graph:
        """``order``, if given, receives the initializer names, kept and stripped, in file order."""
        if depth > layout.MAX_GRAPH_DEPTH:
            self.fail(where, f"subgraphs nested deeper than {layout.MAX_GRAPH_DEPTH} levels")
        name = self.get(obj, "name", str, where)
        where = f"graph {name!r}"
        types: dict[str, TensorType] = {}
        for i, entry in enumerate(self.get(obj, "types", list, where)):
            value = self.get(entry, "name", str, f"{where} type {i}")
            if value in types:
                self.fail(where, f"value {value!r} has two types")
            types[value] = self.type(entry, f"{where} type of {value!r}")
        inits: dict[str, np.ndarray] = {}
        stripped: dict[str, TensorType] = {}
        for i, entry in enumerate(self.get(obj, "initializers", list, where)):
            value = self.get(entry, "name", str, f"{where} initializer {i}")
            if value in inits or value in stripped:
                self.fail(where, f"initializer {value!r} appears twice")
            if order is not None:
                order.append(value)
            if "stripped" in entry:  # a weightless file: a type, no bytes
                stripped[value] = self.stripped(entry, f"{where} initializer {value!r}")
            else:
                inits[value] = self.tensor(entry, f"{where} initializer {value!r}")
        nodes = [self.node(n, depth, f"{where} node {i}") for i, n in enumerate(self.get(obj, "nodes", list, where))]
        storage: dict[str, Storage] = {}
        for i, entry in enumerate(self.get(obj, "storage", list, where) if "storage" in obj else []):
            value = self.get(entry, "name", str, f"{where} storage {i}")
            what = f"{where} storage of {value!r}"
            storage[value] = Storage(self.dtype(entry, what), *(self.get(entry, k, str, what) for k in ("layout", "scale", "zero_point")))
        return Graph(nodes=nodes, inputs=self.strs(obj, "inputs", where),
                     outputs=self.strs(obj, "outputs", where), types=types,
                     initializers=inits, name=name, storage=storage, stripped=stripped)

    def node(self, obj: Any, depth: int, where: str) -> Node:
        node = Node(op_type=self.get(obj, "op_type", str, where), inputs=self.strs(obj, "inputs", where),
                    outputs=self.strs(obj, "outputs", where), name=self.get(obj, "name", str, where),
                    domain=self.get(obj, "domain", str, where))
        where = f"{where} ({node.label})"
        attrs = self.get(obj, "attrs", dict, where)
        node.attrs = {key: self.attr(attrs[key], depth, f"{where} attribute {key!r}") for key in attrs}
        if "precision" in obj:  # optional
            precision = self.get(obj, "precision", dict, where)
            node.precision = NodePrecision(self.get(precision, "compute", str, f"{where} precision"),
                                           self.get(precision, "accumulate", str, f"{where} precision"))
        return node

    def attr(self, obj: Any, depth: int, where: str) -> Any:
        kind = self.get(obj, "kind", str, where)
        if kind == "none":
            return None
        if kind in ("int", "float", "string", "tensor", "graph", "type"):
            value = self.get(obj, "value", _ATTR_JSON_TYPES[kind], where)
            return self.attr_item(kind, value, depth, where)
        if kind in ("ints", "floats", "strings", "tensors", "graphs"):
            item_kind = kind[:-1]
            values = self.get(obj, "value", list, where)
            for i, v in enumerate(values):
                if type(v) not in _ATTR_JSON_TYPES[item_kind]:
                    self.fail(f"{where}[{i}]", f"not a valid {item_kind}")
            return [self.attr_item(item_kind, v, depth, f"{where}[{i}]") for i, v in enumerate(values)]
        self.fail(where, f"unknown attribute kind {kind!r}")

    def attr_item(self, kind: str, value: Any, depth: int, where: str) -> Any:
        if kind == "float":
            return self.float(value, where)
        if kind == "tensor":
            return self.tensor(value, where)
        if kind == "graph":
            return self.graph(value, depth + 1, where)
        if kind == "type":
            return self.type(value, where)
        return value  # int and string are already checked by type

    def float(self, value: Any, where: str) -> float:
        if type(value) is str and value not in ("nan", "inf", "-inf"):
            self.fail(where, f"bad float {value!r:.40}")
        try:
            return float(value)
        except OverflowError:
            self.fail(where, "float out of range")

    def dtype(self, obj: Any, where: str) -> DType:
        name = self.get(obj, "dtype", str, where)
        if name not in _DTYPES:
            self.fail(where, f"unknown element type {name!r:.40}")
        return _DTYPES[name]

    def type(self, obj: Any, where: str) -> TensorType:
        dtype = self.dtype(obj, where)
        shape = self.get(obj, "shape", (list, type(None)), where)
        if shape is not None and (len(shape) > layout.MAX_RANK or not all(map(_is_dim, shape))):
            self.fail(where, f"shape must be at most {layout.MAX_RANK} dimensions, each an integer in "
                             f"[0, {MAX_DIM}], a string or null")
        return TensorType(dtype, None if shape is None else tuple(shape))

    def stripped(self, obj: Any, where: str) -> TensorType:
        if self.get(obj, "stripped", bool, where) is not True:
            self.fail(where, "'stripped' must be true when present")
        shape = self.get(obj, "shape", list, where)
        if len(shape) > layout.MAX_RANK or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
            self.fail(where, f"shape must be at most {layout.MAX_RANK} non-negative integers")
        return TensorType(self.dtype(obj, where), tuple(shape))

    def tensor(self, obj: Any, where: str) -> np.ndarray:
        dtype = self.dtype(obj, where)
        shape = self.get(obj, "shape", list, where)
        if len(shape) > layout.MAX_RANK or not all(type(d) is int and d >= 0 for d in shape):
            self.fail(where, f"shape must be at most {layout.MAX_RANK} non-negative integers")
        count = math.prod(shape)
        if dtype is DType.STRING:
            data = self.strs(obj, "data", where)
            if len(data) != count:
                self.fail(where, f"{len(data)} strings for shape {shape}")
            array = np.empty(count, dtype=object)
            array[:] = data
            return self.reshape(array, shape, where)
        offset = self.get(obj, "offset", int, where)
        nbytes = self.get(obj, "nbytes", int, where)
        if nbytes != count * dtype.itemsize:
            self.fail(where, f"nbytes is {nbytes} but shape {shape} of {dtype.short} needs {count * dtype.itemsize}")
        if offset < 0 or offset % layout.ALIGN:
            self.fail(where, f"offset {offset} is not a non-negative multiple of {layout.ALIGN}")
        if offset + nbytes > self.weights_len:
            self.fail(where, f"bytes [{offset}, {offset + nbytes}) lie outside the "
                             f"{self.weights_len}-byte WEIGHTS section")
        array = np.frombuffer(self.buf, dtype=dtype.numpy, count=count, offset=self.weights_start + offset)
        if sys.byteorder != "little":
            array = array.byteswap()
        return self.reshape(array, shape, where)

    def reshape(self, array: np.ndarray, shape: list[int], where: str) -> np.ndarray:
        try:
            return array.reshape(shape)
        except ValueError:  # e.g. an empty tensor whose other dims overflow numpy's index type
            self.fail(where, f"shape {shape} cannot be represented")


def _is_dim(d: Any) -> bool:
    return type(d) in (str, type(None)) or (type(d) is int and 0 <= d <= MAX_DIM)


_DTYPES = {t.short: t for t in DType}
_ATTR_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float, str), "string": (str,),
    "tensor": (dict,), "graph": (dict,), "type": (dict,),
}
