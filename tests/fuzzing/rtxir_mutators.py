"""Structure-aware mutations of a .rtxir file, re-sealed afterwards (fresh section checksums
and header checksum) so that every mutation gets past the checksums to the parser, the checker
and the executor.

Most mutations keep the file well-formed and change what it means: op types, attributes,
the wiring of values, declared types, how tensor bytes are read, the order of nodes, the graph's
inputs and outputs, tensor values (NaN, infinities, huge and negative integers in shape tensors,
indices and axes). The others break the format: JSON values of another type, missing, extra and
duplicate keys, empty and reordered lists, deep nesting, damaged JSON text, truncated WEIGHTS.
"""
from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import ml_dtypes
import numpy as np

from rtxrt.format import layout
from rtxrt.format.writer import pack_sections
from rtxrt.ir.dtypes import DType
from rtxrt.ir.ops import all_schemas
from tests.fuzzing import pick, short

# Besides the extremes, sizes a machine could just about allocate: those must be refused too.
LARGE = [1 << 16, 1 << 20, 1 << 24, 1 << 30]
INTS = [0, 1, -1, 2, 3, 7, 64, -64, 2**31 - 1, 2**31, -(2**31), 2**62, -(2**62), 2**63, 2**64, 10**40, *LARGE]
SMALL_INTS = [-2, -1, 0, 1, 2, 3, 4, 2**31, 2**62, *LARGE]
FLOATS = [0.0, -0.0, 0.5, -3.5, 1e38, 1e308, -1e308, 5e-324, "nan", "inf", "-inf"]
STRINGS = ["", "none", "relu", "gelu", "before_activation", "NHWC", "constant", "reflect", "linear", "nearest",
           "DCR", "SAME_UPPER", "half_pixel", "x" * 1000, "\udc80"]
DIMS = [0, 1, 2, 3, 5, -1, -5, 2**31, 2**40, 2**62, 2**63, *LARGE, "batch", "n", "", None]
DTYPE_NAMES = sorted(d.short for d in DType)
SCHEMAS = sorted(all_schemas())  # (domain, op_type) of every operator rtxrt knows
ATTR_NAMES = ["axis", "axes", "perm", "pads", "strides", "kernel_shape", "dilations", "group", "keepdims", "alpha",
              "beta", "transA", "transB", "trans_b", "mode", "activation", "activation_params", "residual", "to",
              "value", "body", "then_branch", "else_branch", "num_outputs", "split", "blocksize", "epsilon",
              "allowzero", "start", "end", "auto_pad", "ceil_mode", "output_shape", "output_padding", "dtype",
              "batch_dims", "coordinate_transformation_mode", "upper", "direction", "hidden_size", "num_scan_inputs"]
ATTR_KINDS = ["int", "float", "string", "tensor", "graph", "type", "none", "ints", "floats", "strings",
              "tensors", "graphs"]
EMPTY_GRAPH = {"name": "empty", "inputs": [], "outputs": [], "types": [], "initializers": [], "nodes": []}
PROFILE_KEY = "rtxrt.profile"
PROFILES = ['{"x": [[1, 8], [2, 8], [4, 8]]}', '{"x": [[4, 8], [2, 8], [1, 8]]}', '{"x": [[1, 8], [2, 8]]}',
            '{"x": [[0, 8], [2, 8], [1099511627776, 8]]}', '{"x": [[1], [2], [3]]}', '{"y": [[1, 8], [2, 8], [4, 8]]}',
            '{"x": 5}', '[1, 2]', '{"x": [["a", 8], [2, 8], [4, 8]]}', '{}', 'not json', '']
# What the format-breaking mutations put in: every JSON type, the wrong names and spellings.
OTHER_TYPES = [0, -1, 1.5, "x", "", None, True, False, [], {}, [[]], {"kind": "int", "value": 1}]
FIELD_VALUES = {
    "op_type": ["NoSuchOp", ""], "domain": ["no.such.domain", "ai.onnx"], "dtype": ["float33", "FLOAT", "", 1],
    "kind": ["bogus", "INT", ""], "shape": [1.5, True, [2], 10**30, "x"], "offset": [1, -64, 2**64, 63],
    "nbytes": [-1, 0, 1, 2**62], "name": ["", "x" * 10000], "inputs": ["", "\udc80"], "outputs": ["", "\udc80"],
}


# --- the file taken apart and put back together --------------------------------------------------


@dataclass
class Raw:
    """JSON text written as it is (for nesting deeper than a recursive encoder could write)."""

    text: str


class Repeated(dict):
    """A JSON object written with some keys twice (a duplicate key)."""

    repeated: tuple[str, ...] = ()


@dataclass
class RtxirParts:
    """A file taken apart: the JSON sections parsed, the other sections as bytes."""

    json: dict[str, Any]  # section kind -> parsed JSON (META and GRAPH)
    raw: dict[str, bytearray]  # section kind -> bytes (WEIGHTS, CUBINS, unknown kinds)
    order: list[str]  # section kinds in file order
    text_edits: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)  # applied to the written JSON

    @staticmethod
    def of(data: bytes) -> "RtxirParts":
        _, sections = layout.read_table(memoryview(data), "seed")
        parts = RtxirParts({}, {}, [s.kind for s in sections])
        for s in sections:
            body = data[s.offset:s.end]
            if s.kind in (layout.META, layout.GRAPH):
                parts.json[s.kind] = json.loads(body)
            else:
                parts.raw[s.kind] = bytearray(body)
        return parts

    @property
    def graph(self) -> dict:
        return self.json[layout.GRAPH]

    @property
    def weights(self) -> bytearray:
        return self.raw.setdefault(layout.WEIGHTS, bytearray())

    def seal(self) -> bytes:
        bodies = {k: dump_json(v).encode() for k, v in self.json.items()}
        bodies.update((k, bytes(v)) for k, v in self.raw.items())
        for kind, edit in self.text_edits.items():
            bodies[kind] = edit(bodies[kind])
        return seal({kind: bodies[kind] for kind in self.order})


def seal(sections: dict[str, bytes]) -> bytes:
    """A file holding these sections in this order, with every checksum computed afresh
    (the writer's own layout and sealing code)."""
    stream = io.BytesIO()
    pack_sections(stream, [(kind, [body]) for kind, body in sections.items()])
    return stream.getvalue()


def dump_json(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        pairs = [*value.items(), *((k, value[k]) for k in getattr(value, "repeated", ()))]
        return "{" + ",".join(f"{json.dumps(k)}:{dump_json(v)}" for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    return json.dumps(value)


# --- finding things in the JSON (earlier mutations may have broken any of it) -------------------


@dataclass(frozen=True)
class Spot:
    """One place in a JSON tree: ``container[key]``, and the name of the field it belongs to
    (the key itself, or for a list item the key of the list)."""

    container: Any
    key: Any
    field: str

    @property
    def value(self) -> Any:
        return self.container[self.key]

    def set(self, value: Any) -> None:
        self.container[self.key] = value


def spots(tree: Any) -> list[Spot]:
    found = []
    stack = [(tree, "")]
    while stack:
        container, name = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            spot = Spot(container, key, key if isinstance(container, dict) else name)
            found.append(spot)
            if isinstance(value, (dict, list)):
                stack.append((value, spot.field))
    return found


def objects(tree: Any, *keys: str) -> list[dict]:
    """Every JSON object in ``tree`` that has all of ``keys``."""
    return [s.value for s in spots(tree) if isinstance(s.value, dict) and all(k in s.value for k in keys)]


def nodes(parts: RtxirParts) -> list[dict]:
    return [n for n in objects(parts.graph, "op_type", "attrs") if isinstance(n["attrs"], dict)]


def graphs(parts: RtxirParts) -> list[dict]:
    return [g for g in objects(parts.graph, "nodes", "inputs", "outputs")
            if all(isinstance(g[k], list) for k in ("nodes", "inputs", "outputs"))]


def declared_types(parts: RtxirParts) -> list[dict]:
    return [t for t in objects(parts.graph, "dtype", "shape") if "offset" not in t and "data" not in t]


def tensors(parts: RtxirParts) -> list[dict]:
    """Every well-formed tensor with bytes in WEIGHTS."""
    return [t for t in objects(parts.graph, "dtype", "shape", "offset", "nbytes") if _has_bytes(t, len(parts.weights))]


def _has_bytes(tensor: dict, weights_size: int) -> bool:
    offset, nbytes = tensor["offset"], tensor["nbytes"]
    return (tensor["dtype"] in DTYPE_NAMES and tensor["dtype"] != "string" and type(offset) is int
            and type(nbytes) is int and 0 <= offset and 0 < nbytes and offset + nbytes <= weights_size)


def value_names(parts: RtxirParts) -> list[str]:
    """Every value name the GRAPH section mentions (node and graph inputs and outputs, typed values)."""
    names = {s.value for s in spots(parts.graph) if isinstance(s.value, str) and (
        s.field in ("inputs", "outputs") or (s.field == "name" and "dtype" in s.container))}
    return sorted(names)


# --- mutations that keep the file well-formed and change its meaning -----------------------------


def change_op(parts: RtxirParts, rng: np.random.Generator) -> str:
    node = pick(rng, nodes(parts))
    domain, op_type = pick(rng, SCHEMAS)
    node["op_type"] = op_type
    if rng.random() < 0.5:
        node["domain"] = domain
    return f"node {short(node.get('name'))} became {node['domain']}::{op_type}"


def change_attribute(parts: RtxirParts, rng: np.random.Generator) -> str:
    node = pick(rng, nodes(parts))
    attrs = node["attrs"]
    key = pick(rng, sorted(attrs)) if attrs and rng.random() < 0.7 else pick(rng, ATTR_NAMES)
    if key in attrs and rng.random() < 0.3:
        del attrs[key]
        return f"deleted attribute {key!r} of {short(node.get('name'))}"
    old = attrs.get(key)
    keeps_kind = isinstance(old, dict) and old.get("kind") in ATTR_KINDS and rng.random() < 0.6
    kind = old["kind"] if keeps_kind else pick(rng, ATTR_KINDS)
    attrs[key] = {"kind": kind, "value": attribute_value(kind, parts, rng)}
    return f"attribute {key!r} of {short(node.get('name'))} = {short(attrs[key])}"


def attribute_value(kind: str, parts: RtxirParts, rng: np.random.Generator) -> Any:
    if kind in ("ints", "floats", "strings", "tensors", "graphs"):
        return [attribute_value(kind[:-1], parts, rng) for _ in range(int(rng.integers(0, 5)))]
    if kind == "int":
        return pick(rng, INTS + SMALL_INTS)
    if kind == "float":
        return pick(rng, FLOATS)
    if kind == "string":
        return pick(rng, STRINGS + value_names(parts))
    if kind == "tensor":
        known = tensors(parts)
        return copy.deepcopy(pick(rng, known)) if known else {"dtype": "string", "shape": [1], "data": ["a"]}
    if kind == "graph":
        return copy.deepcopy(pick(rng, graphs(parts) + [EMPTY_GRAPH]))
    if kind == "type":
        return {"dtype": pick(rng, DTYPE_NAMES), "shape": [pick(rng, DIMS) for _ in range(int(rng.integers(0, 4)))]}
    return None


def rewire(parts: RtxirParts, rng: np.random.Generator) -> str:
    """A node reads or writes another value, none, one it never defined, or one more or fewer."""
    node = pick(rng, nodes(parts))
    key = pick(rng, ["inputs", "outputs"])
    names = node.get(key)
    if not isinstance(names, list):
        return "no names to rewire"
    name = pick(rng, value_names(parts) + ["", "undefined_value"])
    if names and rng.random() < 0.6:
        names[int(rng.integers(len(names)))] = name
    elif names and rng.random() < 0.5:
        del names[int(rng.integers(len(names)))]
    else:
        names.append(name)
    return f"{key} of {short(node.get('name'))} = {short(names)}"


def swap_between_nodes(parts: RtxirParts, rng: np.random.Generator) -> str:
    key = pick(rng, ["inputs", "outputs"])
    candidates = [n for n in nodes(parts) if isinstance(n.get(key), list) and n[key]]
    if not candidates:
        return "no names to swap"
    a, b = pick(rng, candidates), pick(rng, candidates)
    i, j = int(rng.integers(len(a[key]))), int(rng.integers(len(b[key])))
    a[key][i], b[key][j] = b[key][j], a[key][i]
    return f"swapped {key} of {short(a.get('name'))} and {short(b.get('name'))}"


def retype(parts: RtxirParts, rng: np.random.Generator) -> str:
    """A declared type gets another element type, dim, rank, or an unknown rank."""
    t = pick(rng, declared_types(parts))
    choice = rng.random()
    if choice < 0.3:
        t["dtype"] = pick(rng, DTYPE_NAMES)
    elif choice < 0.4 or not isinstance(t["shape"], list):
        t["shape"] = None if t["shape"] is not None else [pick(rng, DIMS)]
    elif choice < 0.8 and t["shape"]:
        t["shape"][int(rng.integers(len(t["shape"])))] = pick(rng, DIMS)
    else:
        t["shape"].append(pick(rng, DIMS))
    return f"type of {short(t.get('name'))} = {t['dtype']}{short(t['shape'])}"


def reinterpret_tensor(parts: RtxirParts, rng: np.random.Generator) -> str:
    """A tensor's bytes are read as another element type or shape, consistently with its byte
    count (so the reader accepts it): index tensors become floats, shapes change rank."""
    tensor = pick(rng, tensors(parts))
    dtypes = [d for d in DType if d is not DType.STRING and tensor["nbytes"] % d.itemsize == 0]
    dtype = pick(rng, dtypes) if rng.random() < 0.5 else DType.from_name(tensor["dtype"])
    count = tensor["nbytes"] // dtype.itemsize
    tensor["dtype"] = dtype.short
    tensor["shape"] = pick(rng, [[count], [1, count], [count, 1], [1] * int(rng.integers(0, 6)) + [count]])
    if count == 1 and rng.random() < 0.5:
        tensor["shape"] = []
    return f"tensor read as {tensor['dtype']}{tensor['shape']}"


def reorder_nodes(parts: RtxirParts, rng: np.random.Generator) -> str:
    graph = pick(rng, graphs(parts))
    listed = graph["nodes"]
    if not listed:
        return "no nodes to reorder"
    i, j = (int(k) for k in rng.integers(len(listed), size=2))
    action = pick(rng, ["swap", "duplicate", "drop"])
    if action == "swap":
        listed[i], listed[j] = listed[j], listed[i]
    elif action == "duplicate":
        listed.insert(j, copy.deepcopy(listed[i]))
    else:
        del listed[i]
    return f"{action} node {i} of graph {short(graph.get('name'))}"


def change_graph_io(parts: RtxirParts, rng: np.random.Generator) -> str:
    graph = pick(rng, graphs(parts))
    key = pick(rng, ["inputs", "outputs"])
    names = graph[key]
    if names and rng.random() < 0.4:
        del names[int(rng.integers(len(names)))]
    else:
        names.append(pick(rng, value_names(parts) + ["undefined_value"]))
    return f"{key} of graph {short(graph.get('name'))} = {short(names)}"


def annotate(parts: RtxirParts, rng: np.random.Generator) -> str:
    """Precision and storage annotations (the reference backend ignores them; they must still read)."""
    if rng.random() < 0.5:
        node = pick(rng, nodes(parts))
        node["precision"] = {"compute": pick(rng, ["fp16", "bf16", "int8", ""]), "accumulate": pick(rng, ["fp32", "x"])}
        return f"precision of {short(node.get('name'))}"
    graph = pick(rng, graphs(parts))
    graph["storage"] = [{"name": pick(rng, value_names(parts) + [""]), "dtype": pick(rng, DTYPE_NAMES),
                         "layout": pick(rng, ["", "NHWC", "bogus"]), "scale": "", "zero_point": ""}]
    return f"storage of graph {short(graph.get('name'))}"


def nest_subgraphs(parts: RtxirParts, rng: np.random.Generator) -> str:
    """Make the main graph the then-branch of an If, level after level, around the limit of 64
    nested subgraphs; every If reads a new boolean input of the main graph. (Written as text:
    the nesting is deeper than a recursive encoder goes.)"""
    graph = parts.graph.get("graph")
    if not (isinstance(graph, dict) and all(isinstance(graph.get(k), list) for k in ("inputs", "outputs", "types"))):
        return "no graph to nest"
    depth = int(pick(rng, [3, 64, 65, 200]))
    inputs = [*graph["inputs"], "nest_cond"]
    types = [*graph["types"], {"name": "nest_cond", "dtype": "bool", "shape": []}]
    text, outputs = dump_json(graph), graph["outputs"]
    for level in range(depth):
        outputs = [f"nested{level}_{i}" for i, _ in enumerate(outputs)]
        node = {"op_type": "If", "domain": "", "name": f"if{level}", "inputs": ["nest_cond"], "outputs": outputs,
                "attrs": {"then_branch": {"kind": "graph", "value": Raw(text)},
                          "else_branch": {"kind": "graph", "value": EMPTY_GRAPH}}}
        outermost = level == depth - 1
        text = dump_json({"name": f"level{level}", "inputs": inputs if outermost else [], "outputs": outputs,
                          "types": types if outermost else [], "initializers": [], "nodes": [node]})
    parts.graph["graph"] = Raw(text)
    return f"nested the graph {depth} Ifs deep"


def change_opsets(parts: RtxirParts, rng: np.random.Generator) -> str:
    """META's operator set versions, which decide how nodes read their inputs and attributes."""
    opsets = parts.json[layout.META].get("opsets")
    if not isinstance(opsets, dict):
        return "no opsets"
    domain = pick(rng, ["", "", "rtxrt", "ai.onnx"])
    if domain in opsets and rng.random() < 0.2:
        del opsets[domain]
        return f"dropped opset {domain!r}"
    opsets[domain] = pick(rng, [0, 1, 7, 9, 10, 11, 12, 13, 17, 18, 21, 23, 99, -1, 2**62])
    return f"opset {domain!r} = {opsets[domain]}"


def change_profile(parts: RtxirParts, rng: np.random.Generator) -> str:
    """The shape profile that ``rtxrt aot --profile`` keeps in META's metadata, as JSON text."""
    metadata = parts.json[layout.META].get("metadata")
    if not isinstance(metadata, dict):
        return "no metadata"
    metadata[PROFILE_KEY] = pick(rng, PROFILES)
    return f"profile = {short(metadata[PROFILE_KEY])}"


def set_special_element(parts: RtxirParts, rng: np.random.Generator) -> str:
    """Overwrite one element of a tensor with an extreme value of its type (NaN and infinities,
    huge and negative integers: shape tensors, indices and axes are tensors too)."""
    tensor = pick(rng, tensors(parts))
    dtype = DType.from_name(tensor["dtype"])
    if dtype.is_float:
        value = pick(rng, [np.nan, np.inf, -np.inf, ml_dtypes.finfo(dtype.numpy).max, 0.0])
    elif dtype.is_integer:
        info = ml_dtypes.iinfo(dtype.numpy)
        value = pick(rng, [info.max, info.min, info.min + 1, 0, 1, *(v for v in LARGE if v <= info.max)])
    else:
        value = 1
    element = np.array(value).astype(dtype.numpy)
    at = tensor["offset"] + int(rng.integers(tensor["nbytes"] // dtype.itemsize)) * dtype.itemsize
    parts.weights[at:at + dtype.itemsize] = element.tobytes()
    return f"an element of a {tensor['dtype']}{tensor['shape']} tensor = {element}"


def flip_weight_bits(parts: RtxirParts, rng: np.random.Generator) -> str:
    weights = parts.weights
    for _ in range(int(rng.integers(1, 9))):
        weights[rng.integers(len(weights))] ^= 1 << int(rng.integers(8))
    return "flipped bits of WEIGHTS"


# --- mutations that break the format ------------------------------------------------------------


def break_json(parts: RtxirParts, rng: np.random.Generator) -> str:
    """One place of META or GRAPH gets a value of another type or a wrong spelling, or the JSON
    around it loses, gains, repeats or reorders members, or gets nested deeply."""
    kind = pick(rng, [layout.GRAPH] * 4 + [layout.META])
    spot = pick(rng, spots(parts.json[kind]))
    mutation = pick(rng, [_wrong_value, _wrong_value, _restructure])
    return f"{layout.SECTION_NAMES[kind]} {spot.field}={short(spot.value)}: {mutation(spot, rng)}"


def _wrong_value(spot: Spot, rng: np.random.Generator) -> str:
    spot.set(copy.deepcopy(pick(rng, OTHER_TYPES + FIELD_VALUES.get(spot.field, []))))
    return f"set {short(spot.value)}"


def _restructure(spot: Spot, rng: np.random.Generator) -> str:
    value = spot.value
    if isinstance(value, list) and value:
        return pick(rng, [_empty, _drop, _duplicate, _repeat_many, _nest_deeply])(spot, rng)
    if isinstance(value, dict) and value:
        return pick(rng, [_empty, _delete_key, _repeat_key, _add_key, _nest_deeply])(spot, rng)
    return _nest_deeply(spot, rng)


def _empty(spot: Spot, rng: np.random.Generator) -> str:
    spot.set(type(spot.value)())
    return "emptied"


def _drop(spot: Spot, rng: np.random.Generator) -> str:
    del spot.value[rng.integers(len(spot.value))]
    return "dropped an item"


def _duplicate(spot: Spot, rng: np.random.Generator) -> str:
    i = int(rng.integers(len(spot.value)))
    spot.value.insert(i, copy.deepcopy(spot.value[i]))
    return f"duplicated item {i}"


def _repeat_many(spot: Spot, rng: np.random.Generator) -> str:
    spot.value.extend(copy.deepcopy(spot.value[-1]) for _ in range(200))
    return "repeated the last item 200 times"


def _delete_key(spot: Spot, rng: np.random.Generator) -> str:
    key = pick(rng, sorted(spot.value))
    del spot.value[key]
    return f"deleted key {key!r}"


def _repeat_key(spot: Spot, rng: np.random.Generator) -> str:
    repeated = Repeated(spot.value)
    repeated.repeated = (pick(rng, sorted(spot.value)),)
    spot.set(repeated)
    return f"repeated key {repeated.repeated[0]!r}"


def _add_key(spot: Spot, rng: np.random.Generator) -> str:
    key = pick(rng, ["extra", "stripped", "storage", "precision", "data", "source"])
    spot.value[key] = pick(rng, OTHER_TYPES)
    return f"added key {key!r}"


def _nest_deeply(spot: Spot, rng: np.random.Generator) -> str:
    depth = int(pick(rng, [70, 1000, 100_000]))
    spot.set(Raw("[" * depth + dump_json(spot.value) + "]" * depth))
    return f"nested {depth} lists deep"


def damage_json_text(parts: RtxirParts, rng: np.random.Generator) -> str:
    """Overwrite bytes of the JSON text itself (syntax, UTF-8)."""
    kind = pick(rng, [layout.META, layout.GRAPH])
    positions = rng.random(int(rng.integers(1, 4)))
    values = rng.integers(256, size=len(positions))

    def edit(body: bytes) -> bytes:
        data = bytearray(body)
        for p, v in zip(positions, values):
            data[int(p * len(data))] = int(v)
        return bytes(data)

    parts.text_edits[kind] = edit
    return f"overwrote {len(positions)} byte(s) of {layout.SECTION_NAMES[kind]}"


def truncate_weights(parts: RtxirParts, rng: np.random.Generator) -> str:
    keep = int(rng.integers(len(parts.weights) + 1))
    del parts.weights[keep:]
    return f"truncated WEIGHTS to {keep} bytes"


# --- putting it together ------------------------------------------------------------------------

Mutation = Callable[[RtxirParts, np.random.Generator], str]
# (mutation, weight, what it needs to find in the file)
MUTATIONS: list[tuple[Mutation, int, Callable[[RtxirParts], list]]] = [
    (change_op, 3, nodes), (change_attribute, 5, nodes), (rewire, 3, nodes), (swap_between_nodes, 1, nodes),
    (retype, 3, declared_types), (reinterpret_tensor, 2, tensors), (reorder_nodes, 2, graphs),
    (change_graph_io, 1, graphs), (annotate, 1, nodes), (nest_subgraphs, 1, graphs),
    (change_opsets, 1, graphs), (change_profile, 1, graphs),
    (set_special_element, 4, tensors), (flip_weight_bits, 1, tensors),
    (break_json, 5, graphs), (damage_json_text, 1, graphs), (truncate_weights, 1, tensors),
]


def mutate_file(data: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    """One to three mutations of a sealed file: the mutated file, re-sealed, and what was done."""
    parts = RtxirParts.of(data)
    done = []
    weights = np.array([w for _, w, _ in MUTATIONS], float)
    for _ in range(int(rng.integers(1, 4))):
        mutation, _, needs = MUTATIONS[rng.choice(len(MUTATIONS), p=weights / weights.sum())]
        done.append(mutation(parts, rng) if needs(parts) else f"{mutation.__name__}: nothing to mutate")
    return parts.seal(), done
