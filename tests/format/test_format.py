"""The .rtxir file format: exact round trips, determinism, memory mapping, and a clear
FormatError (never another exception, never a hang) for anything damaged or foreign."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.errors import FormatError
from rtxrt.format import ir_hash, read_header, read_rtxir, to_bytes, write_rtxir
from rtxrt.format import layout
from rtxrt.format.layout import Section
from rtxrt.format.writer import canonical_json, pack_sections
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType

NUMERIC_DTYPES = [d for d in DType if d is not DType.STRING]


# ---------------------------------------------------------------- models and comparisons

def every_dtype_initializers() -> dict[str, np.ndarray]:
    inits = {
        f"w_{d.short}": np.array([0, 1, 2, 3, 1, 0]).astype(d.numpy).reshape(2, 3)
        for d in NUMERIC_DTYPES
    }
    inits["w_string"] = np.array(["", "abc", "ünïcode", "\udc80raw"], dtype=object).reshape(2, 2)
    inits["w_scalar"] = np.array(np.float64(math.pi))
    inits["w_empty"] = np.zeros((0, 3), np.float32)
    inits["w_special"] = np.array([np.nan, np.inf, -np.inf, -0.0], np.float32)
    return inits


def full_model() -> Model:
    """A model exercising every attribute kind, every dtype, every kind of dim, subgraphs."""
    inner = Graph(
        nodes=[Node("Identity", ["a"], ["b"], name="inner_id")],
        inputs=["a"], outputs=["b"],
        types={"a": TensorType(DType.INT64, ()), "b": TensorType(DType.INT64, ())},
        initializers={"inner_w": np.arange(5, dtype=np.int16)},
        name="inner",
    )
    loop_body = Graph(
        nodes=[Node("If", ["cond"], ["out"], {"then_branch": inner, "else_branch": inner}, name="if")],
        inputs=["i", "cond"], outputs=["cond", "out"], name="body",
    )
    attrs = {
        "i": 7, "i_neg": -3, "i_big": 2**62,
        "f": 1.0, "f_neg_zero": -0.0, "f_nan": math.nan, "f_inf": math.inf, "f_ninf": -math.inf,
        "f_exact": 0.1 + 0.2,
        "s": "hello \u2603 \udcff",
        "ints": [1, -2, 3], "floats": [1.0, 2.5, math.nan], "strings": ["a", "", "é"],
        "empty": [],
        "t": np.array([[1.5, 2.5]], np.float32),
        "t_str": np.array(["x", "y"], dtype=object),
        "ts": [np.arange(3, dtype=np.uint8), np.ones((2, 2), np.float16)],
        "g": loop_body,
        "gs": [inner, Graph(nodes=[], inputs=[], outputs=[], name="empty_graph")],
        "tp": TensorType(DType.BFLOAT16, ("batch", None, 4)),
        "tp_unranked": TensorType(DType.FLOAT32, None),
    }
    graph = Graph(
        nodes=[
            Node("Custom", ["x", "", "w_float32"], ["y", ""], attrs, name="custom", domain="com.example"),
            Node("Relu", ["y"], ["z"]),
        ],
        inputs=["x"], outputs=["z"],
        types={
            "x": TensorType(DType.FLOAT32, ("batch", None, 3)),
            "y": TensorType(DType.FLOAT32, None),
            "z": TensorType(DType.FLOAT16, (1, "seq", 0)),
        },
        initializers=every_dtype_initializers(),
        name="main_graph",
    )
    return Model(graph, opsets={"": 21, "com.example": 3}, producer="unit-test 1.2",
                 metadata={"author": "me", "note": "ünï"})


def small_model() -> Model:
    """Small enough to damage at every byte quickly; still has META, GRAPH and WEIGHTS."""
    graph = Graph(
        nodes=[Node("Add", ["x", "bias"], ["y"], {"alpha": 0.5}, name="add")],
        inputs=["x"], outputs=["y"],
        types={"x": TensorType(DType.FLOAT32, ("n", 4)), "y": TensorType(DType.FLOAT32, ("n", 4))},
        initializers={"bias": np.arange(4, dtype=np.float32)},
    )
    return Model(graph, producer="small")


def assert_same_value(a, b, where: str) -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype == object:
            assert a.tolist() == b.tolist(), where
        else:
            assert a.tobytes() == b.tobytes(), where  # bit-exact, NaN included
    elif isinstance(a, Graph):
        assert_same_graph(a, b)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_value(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b), where
    else:
        assert a == b, where


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert (a.name, a.inputs, a.outputs) == (b.name, b.inputs, b.outputs)
    assert list(a.types.items()) == list(b.types.items())
    assert list(a.initializers) == list(b.initializers)
    for name in a.initializers:
        assert_same_value(a.initializers[name], b.initializers[name], f"initializer {name}")
    assert len(a.nodes) == len(b.nodes)
    for x, y in zip(a.nodes, b.nodes):
        assert (x.op_type, x.inputs, x.outputs, x.name, x.domain) == (y.op_type, y.inputs, y.outputs, y.name, y.domain)
        assert sorted(x.attrs) == sorted(y.attrs)
        for key in x.attrs:
            assert_same_value(x.attrs[key], y.attrs[key], f"{x.label} attribute {key}")


def assert_same_model(a: Model, b: Model) -> None:
    assert (a.opsets, a.producer, a.metadata) == (b.opsets, b.producer, b.metadata)
    assert_same_graph(a.graph, b.graph)


# ---------------------------------------------------------------- crafting files

def sections_of(data: bytes) -> dict[str, bytes]:
    _, sections = layout.read_table(memoryview(data), "test")
    return {s.kind: data[s.offset:s.end] for s in sections}


def repack(parts: dict[str, bytes], version=(layout.MAJOR, layout.MINOR)) -> bytes:
    """A container with valid checksums around arbitrary section contents."""
    stream = io.BytesIO()
    pack_sections(stream, [(kind, [payload]) for kind, payload in parts.items()], version=version)
    return stream.getvalue()


def with_graph_json(data: bytes, mutate) -> bytes:
    parts = sections_of(data)
    doc = json.loads(parts[layout.GRAPH])
    mutate(doc)
    parts[layout.GRAPH] = canonical_json(doc, "test GRAPH")
    return repack(parts)


def expect_format_error(data, *match: str) -> FormatError:
    with pytest.raises(FormatError) as info:
        read_rtxir(data)
    for text in match:
        assert text in str(info.value), str(info.value)
    return info.value


# ---------------------------------------------------------------- round trip

def test_round_trip_preserves_every_attribute_kind_dtype_dim_and_subgraph():
    model = full_model()
    back = read_rtxir(to_bytes(model))
    assert_same_model(model, back)
    attrs = back.graph.nodes[0].attrs
    assert type(attrs["f"]) is float and type(attrs["i"]) is int
    assert attrs["empty"] == [] and attrs["tp"].shape == ("batch", None, 4)


@pytest.mark.parametrize("dtype", list(DType), ids=lambda d: d.short)
def test_every_dtype_round_trips_as_an_initializer(dtype):
    array = every_dtype_initializers()[f"w_{dtype.short}"]
    model = Model(Graph([], [], [], initializers={"w": array}))
    back = read_rtxir(to_bytes(model)).graph.initializers["w"]
    assert_same_value(array, back, dtype.short)
    assert DType.from_numpy(back.dtype) is dtype


def test_writing_is_deterministic_and_stable_under_a_read_write_cycle():
    first = to_bytes(full_model(), options={"precision": "fp16", "level": 3})
    assert first == to_bytes(full_model(), options={"level": 3, "precision": "fp16"})
    assert first == to_bytes(read_rtxir(first), options={"precision": "fp16", "level": 3})


def test_attribute_insertion_order_does_not_change_the_bytes():
    a, b = small_model(), small_model()
    a.graph.nodes[0].attrs = {"x": np.ones(3, np.float32), "y": np.zeros(2, np.int8)}
    b.graph.nodes[0].attrs = {"y": np.zeros(2, np.int8), "x": np.ones(3, np.float32)}
    assert to_bytes(a) == to_bytes(b)


def test_path_and_stream_writes_give_the_same_bytes(tmp_path):
    path = tmp_path / "m.rtxir"
    write_rtxir(full_model(), path)
    stream = io.BytesIO()
    write_rtxir(full_model(), stream)
    assert path.read_bytes() == stream.getvalue() == to_bytes(full_model())
    assert [p.name for p in tmp_path.iterdir()] == ["m.rtxir"]  # no temporary left behind


def test_mmap_read_gives_read_only_aligned_views_equal_to_the_originals(tmp_path):
    model = full_model()
    path = tmp_path / "m.rtxir"
    write_rtxir(model, str(path))
    back = read_rtxir(path, mmap_weights=True)
    assert_same_model(model, back)
    for name, array in back.graph.initializers.items():
        if array.dtype != object:
            assert not array.flags.writeable, name
            if array.size:
                assert array.ctypes.data % layout.ALIGN == 0, name

    copied = read_rtxir(path, mmap_weights=False)
    assert_same_model(model, copied)
    assert copied.graph.initializers["w_float32"].flags.writeable


def test_read_header_reports_version_producer_options_and_sizes(tmp_path):
    path = tmp_path / "m.rtxir"
    write_rtxir(small_model(), path, options={"fuse": True})
    info = read_header(path)
    assert info.format_version == (layout.MAJOR, layout.BASE_MINOR)  # 1.2 only for files with CUBINS
    assert info.producer == "small" and info.options == {"fuse": True}
    assert info.opsets == {"": 21}
    assert list(info.sections) == ["META", "GRAPH", "WEIGHTS"]
    assert info.weight_bytes == 16 and info.file_size == path.stat().st_size
    assert info.ir_hash == ir_hash(path)


def test_ir_hash_ignores_meta_but_follows_graph_and_weights():
    model = small_model()
    base = ir_hash(to_bytes(model, options={"a": 1}))
    assert base == ir_hash(to_bytes(model, options={"a": 2}))
    assert len(base) == 64 and set(base) <= set("0123456789abcdef")
    model.graph.initializers["bias"] = np.arange(1, 5, dtype=np.float32)
    assert ir_hash(to_bytes(model)) != base
    model.graph.nodes[0].attrs["alpha"] = 0.25
    assert ir_hash(to_bytes(model)) != base


# ---------------------------------------------------------------- writer refusals

@pytest.mark.parametrize("value", [{"a": 1}, [1, "a"], object(), np.array([1 + 2j], object)],
                         ids=["dict", "mixed_list", "object", "object_tensor_of_complex"])
def test_writer_refuses_unsupported_attribute_values(value):
    model = small_model()
    model.graph.nodes[0].attrs["bad"] = value
    with pytest.raises(FormatError, match="attribute 'bad'"):
        to_bytes(model)


def test_writer_refuses_options_that_are_not_json():
    with pytest.raises(FormatError, match="options|META"):
        to_bytes(small_model(), options={"x": object()})


def nested(depth: int) -> Graph:
    graph = Graph([], [], [], name="leaf")
    for i in range(depth):
        graph = Graph([Node("If", ["c"], [], {"then_branch": graph})], ["c"], [], name=f"g{i}")
    return graph


def test_subgraphs_nested_up_to_the_limit_round_trip_and_deeper_is_refused():
    model = Model(nested(layout.MAX_GRAPH_DEPTH))
    assert_same_model(model, read_rtxir(to_bytes(model)))
    with pytest.raises(FormatError, match="nested deeper"):
        to_bytes(Model(nested(layout.MAX_GRAPH_DEPTH + 1)))


# ---------------------------------------------------------------- damaged and foreign files

def test_every_truncation_raises_format_error():
    data = to_bytes(small_model())
    for cut in range(len(data)):
        expect_format_error(data[:cut])
    expect_format_error(data[:len(data) - 1], "truncated")


def test_a_bit_flip_anywhere_raises_format_error():
    data = to_bytes(small_model())
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << (pos % 8)
        expect_format_error(bytes(damaged))


@pytest.mark.parametrize("region, message", [
    ("magic", "bad magic"),
    ("header", "checksum mismatch in the header"),
    ("table", "checksum mismatch in the header"),
    ("META", "checksum mismatch in section META"),
    ("GRPH", "checksum mismatch in section GRAPH"),
    ("WGTS", "checksum mismatch in section WEIGHTS"),
])
def test_bit_flips_name_the_damaged_region(region, message):
    data = to_bytes(small_model())
    where = {"magic": 3, "header": 16, "table": layout.HEADER.size + 10}
    sections = {s.kind: s for s in layout.read_table(memoryview(data), "t")[1]}
    pos = where[region] if region in where else sections[region].offset + 5
    damaged = bytearray(data)
    damaged[pos] ^= 0x10
    expect_format_error(bytes(damaged), message)


def test_truncation_message_names_the_section_and_sizes():
    data = to_bytes(small_model())
    graph = {s.kind: s for s in layout.read_table(memoryview(data), "t")[1]}[layout.GRAPH]
    cut = graph.offset + 10
    expect_format_error(data[:cut], f"truncated: section GRAPH ends at byte {graph.end} but the file has {cut} bytes")


def onnx_bytes() -> bytes:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello, world\n" * 10, "bad magic"),
    (onnx_bytes(), "bad magic"),
    (np.random.default_rng(0).bytes(4096), "bad magic"),
    (layout.MAGIC[:5], "truncated"),
    (layout.MAGIC, "truncated"),
], ids=["empty", "text", "onnx", "random", "magic_prefix", "magic_only"])
def test_foreign_files_raise_format_error(data, message):
    expect_format_error(data, message)


def test_foreign_file_on_disk_names_the_path(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes())
    expect_format_error(path, f"{path}: not an rtxir file (bad magic)")
    empty = tmp_path / "empty.rtxir"
    empty.write_bytes(b"")
    expect_format_error(empty, "empty file")


def test_text_mode_line_ending_conversion_is_recognised():
    data = to_bytes(small_model())
    expect_format_error(data.replace(b"\r\n", b"\n", 1), "text mode")
    expect_format_error(data.replace(b"\r\n", b"\r\r\n", 1), "text mode")


def test_trailing_bytes_are_refused():
    expect_format_error(to_bytes(small_model()) + b"\0", "trailing data")


# ---------------------------------------------------------------- versions

def set_version(data: bytes, major: int, minor: int) -> bytes:
    return data[:8] + major.to_bytes(2, "little") + minor.to_bytes(2, "little") + data[12:]


def test_newer_major_version_is_refused_with_the_version():
    data = set_version(to_bytes(small_model()), layout.MAJOR + 2, 0)
    expect_format_error(data, f"format version {layout.MAJOR + 2}.0 is newer", f"({layout.MAJOR}.x)")


def test_older_major_version_asks_to_rerun_aot():
    data = set_version(to_bytes(small_model()), layout.MAJOR - 1, 4)
    expect_format_error(data, "older", "re-run `rtxrt aot`")


def test_newer_minor_version_with_unknown_keys_and_sections_is_accepted():
    model = small_model()
    parts = sections_of(to_bytes(model))
    graph = json.loads(parts[layout.GRAPH])
    graph["future_key"] = {"anything": [1, 2]}
    graph["graph"]["nodes"][0]["future_node_key"] = "fp16"
    parts[layout.GRAPH] = canonical_json(graph, "GRAPH")
    parts["XTRA"] = b"unknown section contents"
    data = repack(parts, version=(layout.MAJOR, layout.MINOR + 7))
    assert_same_model(model, read_rtxir(data))
    assert read_header(data).format_version == (layout.MAJOR, layout.MINOR + 7)


def test_unknown_sections_are_still_checksummed():
    parts = sections_of(to_bytes(small_model()))
    parts["XTRA"] = b"unknown section contents"
    data = bytearray(repack(parts))
    data[-1] ^= 1  # XTRA is the last section
    expect_format_error(bytes(data), "checksum mismatch in section XTRA")


# ---------------------------------------------------------------- crafted files, valid checksums

def first_init(doc):
    return doc["graph"]["initializers"][0]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: first_init(d).update(offset=1 << 20), "outside the"),
    (lambda d: first_init(d).update(offset=3), "multiple of 64"),
    (lambda d: first_init(d).update(offset=-64), "multiple of 64"),
    (lambda d: first_init(d).update(nbytes=12), "nbytes"),
    (lambda d: first_init(d).update(shape=[-4]), "non-negative"),
    (lambda d: first_init(d).update(shape=[1] * 65), "non-negative"),
    (lambda d: first_init(d).update(shape=[2**40, 2**40]), "nbytes"),
    (lambda d: first_init(d).update(dtype="float99"), "unknown element type"),
    (lambda d: first_init(d).update(dtype=1), "must be a string"),
    (lambda d: first_init(d).pop("offset"), "missing key 'offset'"),
    (lambda d: d["graph"].pop("nodes"), "missing key 'nodes'"),
    (lambda d: d["graph"].update(inputs="x"), "'inputs' must be a list"),
    (lambda d: d["graph"].update(inputs=[1]), "list of strings"),
    (lambda d: d["graph"].update(nodes=[[]]), "expected a JSON object"),
    (lambda d: d["graph"]["nodes"][0]["attrs"].update(alpha={"kind": "float", "value": "1e5"}), "bad float"),
    (lambda d: d["graph"]["nodes"][0]["attrs"].update(alpha={"kind": "float", "value": 10**400}), "out of range"),
    (lambda d: d["graph"]["nodes"][0]["attrs"].update(alpha={"kind": "int", "value": True}), "must be an integer"),
    (lambda d: d["graph"]["nodes"][0]["attrs"].update(alpha={"kind": "ints", "value": [1, "2"]}), "not a valid int"),
    (lambda d: d["graph"]["nodes"][0]["attrs"].update(alpha={"kind": "closure", "value": 0}), "unknown attribute kind"),
    (lambda d: d["graph"]["types"].append(d["graph"]["types"][0]), "two types"),
    (lambda d: d["graph"]["types"][0].update(shape=[1.5]), "dimensions"),
    (lambda d: d.pop("graph"), "missing key 'graph'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_crafted_graph_json_with_valid_checksums_raises_format_error(mutate, message):
    expect_format_error(with_graph_json(to_bytes(small_model()), mutate), message)


@pytest.mark.parametrize("payload, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"{\"graph\": NaN}", "invalid JSON"),
    (b"{\"a\": 1, \"a\": 2}", "duplicate key"),
    (b"\xff\xfe{}", "invalid JSON"),
    (b"[]", "top level"),
    (b"{\"n\": " + b"9" * 5000 + b"}", "invalid JSON"),
], ids=["deep", "nan_literal", "duplicate_key", "not_utf8", "not_object", "huge_int"])
def test_malformed_json_with_valid_checksums_raises_format_error(payload, message):
    parts = sections_of(to_bytes(small_model()))
    parts[layout.GRAPH] = payload
    expect_format_error(repack(parts), message)


def test_crafted_subgraph_nesting_beyond_the_limit_raises_format_error():
    def deepen(doc):
        graph = doc["graph"]
        for _ in range(layout.MAX_GRAPH_DEPTH + 1):
            graph = {"name": "g", "inputs": [], "outputs": [], "types": [], "initializers": [],
                     "nodes": [{"op_type": "If", "domain": "", "name": "", "inputs": [], "outputs": [],
                                "attrs": {"then_branch": {"kind": "graph", "value": graph}}}]}
        doc["graph"] = graph
    expect_format_error(with_graph_json(to_bytes(small_model()), deepen), "nested deeper")


@pytest.mark.parametrize("drop, message", [(layout.META, "missing section META"),
                                           (layout.GRAPH, "missing section GRAPH")])
def test_missing_required_sections_raise_format_error(drop, message):
    parts = sections_of(to_bytes(small_model()))
    del parts[drop]
    expect_format_error(repack(parts), message)


def test_bad_meta_raises_format_error():
    parts = sections_of(to_bytes(small_model()))
    meta = json.loads(parts[layout.META])
    meta["opsets"] = {"": "21"}
    parts[layout.META] = canonical_json(meta, "META")
    data = repack(parts)
    expect_format_error(data, "META opsets")
    with pytest.raises(FormatError):
        read_header(data)


def test_misplaced_sections_and_non_zero_padding_are_refused():
    data = to_bytes(small_model())
    table_end = layout.HEADER.size + layout.ENTRY.size * 3
    padded = bytearray(data)
    padded[table_end] = 1  # padding before META; no section checksum covers it
    expect_format_error(bytes(padded), "non-zero padding")

    _, sections = layout.read_table(memoryview(data), "t")
    meta = sections[0]
    moved = [Section(meta.kind, meta.offset + layout.ALIGN, meta.length, meta.sha256), *sections[1:]]
    header = layout.pack_header(moved, len(data))
    expect_format_error(header + data[len(header):],
                        f"section META starts at byte {meta.offset + layout.ALIGN}, expected {meta.offset}")


def test_precision_and_storage_annotations_round_trip():
    from rtxrt.ir.graph import NodePrecision, Storage

    graph = Graph([Node("Relu", ["x"], ["y"], name="r", precision=NodePrecision("fp16", "fp32"))], ["x"], ["y"],
                  {"x": TensorType(DType.FLOAT32, (1, 3, 4, 4)), "y": TensorType(DType.FLOAT32, (1, 3, 4, 4))},
                  storage={"y": Storage(DType.FLOAT16, "NHWC")})
    back = read_rtxir(to_bytes(Model(graph, {"": 17})))
    assert back.graph.nodes[0].precision == NodePrecision("fp16", "fp32")
    assert back.graph.storage == {"y": Storage(DType.FLOAT16, "NHWC")}
    assert to_bytes(back) == to_bytes(Model(graph, {"": 17}))
