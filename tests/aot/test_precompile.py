"""``rtxrt aot --precompile``: the .rtxir carries the cubins a GPU's JIT would compile (every
candidate tactic's kernels at the given shapes, per arch) in a CUBINS section that changes
neither the model nor its IR hash, so a GPU of such an arch starts without compiling.

The model is one Conv+bias+Relu (a handful of kernels per arch: im2col, a few GEMM tiles to
tune, a layout conversion), so that CI compiles few kernels."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import AotOptions, build_rtxir, compile_onnx
from rtxrt.aot.precompile import PrecompileOptions
from rtxrt.backends.cuda.plan.builder import Plan, build_plan
from rtxrt.cli import main
from rtxrt.errors import FormatError, InputError
from rtxrt.format import (
    Cubins,
    ir_hash,
    layout,
    read_cubin_index,
    read_cubins,
    read_header,
    read_rtxir,
    to_bytes,
)
from rtxrt.format.writer import canonical_json, pack_sections
from rtxrt.backends.cuda.cache.runtime_cache import kernel_blob_name
from rtxrt.backends.cuda.target import compute_capability, runtime_model
from tests.helpers import make_model

ARCHS = ("sm_86", "sm_90")
SHAPES = {"x": (2, 4, 8, 8)}


def conv_model(batch: int | str = "batch") -> onnx.ModelProto:
    """y = relu(conv3x3(x) + b), x: float32[batch, 4, 8, 8]."""
    rng = np.random.default_rng(7)
    return make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        [("x", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [("y", TensorProto.FLOAT, [batch, 8, 8, 8])],
        {"w": rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)},
    )


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    """Builds keep their kernels in a cache of this module's own, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RTXRT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The ONNX model, its plain .rtxir and its .rtxir precompiled for ARCHS at SHAPES."""
    folder = tmp_path_factory.mktemp("precompile")
    onnx_path = folder / "conv.onnx"
    onnx.save(conv_model(), str(onnx_path))
    plain, precompiled = folder / "plain.rtxir", folder / "precompiled.rtxir"
    assert main(["aot", str(onnx_path), "-o", str(plain)]) == 0
    assert main(["aot", str(onnx_path), "-o", str(precompiled), "--precompile", ",".join(ARCHS),
                 "--shapes", "x:2x4x8x8"]) == 0
    return onnx_path, plain, precompiled


def runtime_plan(path, arch: str, shapes=SHAPES) -> Plan:
    """What the runtime's JIT plans for this file's engine specialized to ``shapes`` on a GPU
    of ``arch`` (any SM count)."""
    return build_plan(runtime_model(read_rtxir(path), None, compute_capability(arch)), shapes, arch=arch, sm_count=84)


def generic_plan(path, arch: str, shapes=SHAPES, around=SHAPES) -> Plan:
    """The plan of a session's generic engine at ``shapes``: over the default ranges around
    ``around``, its first shape (the model's batch is symbolic), made with the session's own
    fitting_ranges and GenericEngines.probe."""
    from rtxrt.backends.cuda.generic import GenericEngines
    from rtxrt.ir.default_ranges import fitting_ranges

    model = runtime_model(read_rtxir(path), None, compute_capability(arch))
    declared = {name: model.graph.types[name].shape for name in around}
    _, dims = fitting_ranges(declared, around, lambda r: GenericEngines.probe(model, r))
    return build_plan(model, shapes, arch=arch, sm_count=84, dims=dims)


def runtime_kernels(path, arch: str) -> dict[str, str]:
    """Every kernel a session of this file compiles on its first run at SHAPES: the generic
    engine's (a hot shape's own engine is left to the JIT, in the background)."""
    return generic_plan(path, arch).kernels


# ---------------------------------------------------------------- what is embedded

@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_holds_exactly_the_planned_kernels_as_cubins(built, arch):
    _, _, path = built
    cubins = read_cubins(path, arch)
    plan = generic_plan(path, arch)
    assert any(len(step.candidates) > 1 for step in plan.steps)  # tactics for the autotuner, each embedded
    assert set(cubins) == {kernel_blob_name(name, arch) for name in plan.kernels}
    assert all(blob.startswith(b"\x7fELF") for blob in cubins.values())


def test_archs_not_asked_for_and_plain_files_have_no_cubins(built):
    _, plain, path = built
    assert read_cubins(path, "sm_75") == {}
    assert read_cubins(plain, "sm_86") == {}
    assert read_cubin_index(plain).sizes == {}


def test_the_runtime_compiles_nothing_at_the_precompiled_shapes(built):
    """What load_engine does with ``precompiled``: a kernel whose blob is there is not compiled.
    Every candidate's kernels are there (the autotuner times them all), so the chosen ones are too."""
    _, _, path = built
    embedded = read_cubins(path, "sm_86")
    assert [n for n in runtime_kernels(path, "sm_86") if kernel_blob_name(n, "sm_86") not in embedded] == []
    other_batch = generic_plan(path, "sm_86", {"x": (3, 4, 8, 8)}).kernels  # another batch: the same kernels
    assert [n for n in other_batch if kernel_blob_name(n, "sm_86") not in embedded] == []
    specialized = runtime_plan(path, "sm_86").kernels  # a hot shape's own engine still JITs
    assert any(kernel_blob_name(n, "sm_86") not in embedded for n in specialized)


def test_kernels_do_not_depend_on_the_sm_count():
    """Precompiling plans with any SM count; the user's GPU has its own."""
    model = compile_onnx(conv_model(), round_trip=True)
    assert build_plan(model, SHAPES, arch="sm_89", sm_count=1).kernels == \
        build_plan(model, SHAPES, arch="sm_89", sm_count=128).kernels


# ---------------------------------------------------------------- identity and determinism

def sections_of(data: bytes) -> dict[str, bytes]:
    _, sections = layout.read_table(memoryview(data), "test")
    return {s.kind: data[s.offset:s.end] for s in sections}


def repack(parts: dict[str, bytes]) -> bytes:
    stream = io.BytesIO()
    pack_sections(stream, [(kind, [payload]) for kind, payload in parts.items()])
    return stream.getvalue()


def test_cubins_change_neither_the_ir_hash_nor_the_rest_of_the_file(built):
    _, plain, path = built
    assert ir_hash(path) == ir_hash(plain) == read_header(path).ir_hash
    assert read_header(plain).format_version == (1, 1)  # a plain build is the 1.1 file it always was
    assert read_header(path).format_version == (1, 2)
    assert list(read_header(path).sections) == ["META", "GRAPH", "WEIGHTS", "CUBINS"]
    parts = sections_of(path.read_bytes())
    del parts[layout.CUBINS]
    assert repack(parts) == plain.read_bytes()


def test_precompiled_builds_are_byte_identical_and_report_each_arch(built, tmp_path, capsys):
    onnx_path, _, path = built
    again = tmp_path / "again.rtxir"
    assert main(["aot", str(onnx_path), "-o", str(again), "--precompile", ",".join(ARCHS),
                 "--shapes", "x:2x4x8x8"]) == 0
    assert again.read_bytes() == path.read_bytes()
    out = capsys.readouterr().out
    for arch in ARCHS:
        assert f"precompiled {arch}: {len(runtime_kernels(path, arch))} kernels, " in out and " KiB in " in out


def test_a_static_model_is_planned_at_its_own_shapes(tmp_path):
    onnx_path = tmp_path / "static.onnx"
    onnx.save(conv_model(batch=1), str(onnx_path))
    result = build_rtxir(onnx_path, tmp_path / "static.rtxir", precompile_for=PrecompileOptions(("sm_80",)))
    index = read_cubin_index(tmp_path / "static.rtxir")
    kernels = runtime_plan(tmp_path / "static.rtxir", "sm_80", {"x": (1, 4, 8, 8)}).kernels
    assert [(r.arch, r.kernels) for r in result.precompiled] == [("sm_80", len(kernels))]
    assert index.shapes == [{"x": (1, 4, 8, 8)}] and list(index.sizes) == ["sm_80"]


# ---------------------------------------------------------------- clear errors

def test_an_unsupported_arch_is_named_before_anything_is_written(built, tmp_path, capsys):
    onnx_path, _, _ = built
    out = tmp_path / "never.rtxir"
    assert main(["aot", str(onnx_path), "-o", str(out), "--precompile", "sm_86,sm_87", "--shapes", "x:1x4x8x8"]) == 1
    err = capsys.readouterr().err
    assert "'sm_87'" in err and "sm_75, sm_80, sm_86, sm_89, sm_90, sm_120" in err
    assert not out.exists()
    with pytest.raises(InputError, match="at least one arch"):
        build_rtxir(onnx_path, out, precompile_for=PrecompileOptions(()))


def test_symbolic_inputs_without_shapes_are_named_with_an_example(built, tmp_path, capsys):
    onnx_path, _, _ = built
    assert main(["aot", str(onnx_path), "-o", str(tmp_path / "m.rtxir"), "--precompile", "sm_86"]) == 1
    err = capsys.readouterr().err
    assert "x float32[batch,4,8,8] have symbolic dims" in err and "--shapes x:1x4x8x8" in err


@pytest.mark.parametrize("argv, message, code", [
    (["--precompile", "sm_86", "--shapes", "image:1x4x8x8"], "unknown input(s) ['image']", 1),
    (["--precompile", "sm_86", "--shapes", "x:1x4x9x8"], "does not fit float32[batch,4,8,8]", 1),
    (["--shapes", "x:1x4x8x8"], "--shapes is for --precompile", 2),  # a bad command line
    (["--precompile", "sm_86", "--shapes", "x:1x4x8x8", "--weightless"], "cannot go with --weightless", 1),
])
def test_bad_precompile_requests_are_refused_clearly(built, tmp_path, capsys, argv, message, code):
    onnx_path, _, _ = built
    assert main(["aot", str(onnx_path), "-o", str(tmp_path / "m.rtxir"), *argv]) == code
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- the CUBINS section

def fake_cubin(arch: str, payload: bytes = b"") -> bytes:
    """The 64-byte ELF header of a cubin for ``arch`` (CUDA ELF ABI 7), then ``payload``."""
    sm = int(arch[3:])
    header = b"\x7fELF" + bytes([2, 1, 1, 0x33, 7]) + bytes(7)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 190, 1, 0, 0, 0, sm | sm << 16, 64, 0, 0, 0, 0, 0)
    return header + payload


def test_cubins_round_trip_sorted_aligned_and_independent_of_insertion_order():
    model = compile_onnx(conv_model())
    a, b, c = fake_cubin("sm_120", b"1"), fake_cubin("sm_120", bytes(70)), fake_cubin("sm_75", b"2")
    blobs = {"sm_120": {"k/b": b, "k/a": a}, "sm_75": {"k/c": c}}
    shuffled = {"sm_75": {"k/c": c}, "sm_120": {"k/a": a, "k/b": b}}
    data = to_bytes(model, cubins=Cubins(blobs, [{"x": (2, 4, 8, 8)}]))
    assert data == to_bytes(model, cubins=Cubins(shuffled, [{"x": (2, 4, 8, 8)}]))
    assert read_cubins(data, "sm_120") == blobs["sm_120"] and read_cubins(data, "sm_75") == blobs["sm_75"]
    index = read_cubin_index(data)
    assert index.sizes == {"sm_120": {"k/a": 65, "k/b": 134}, "sm_75": {"k/c": 65}}
    assert index.shapes == [{"x": (2, 4, 8, 8)}] and index.problems == {"sm_120": None, "sm_75": None}
    entries = cubins_index(data)["archs"]
    assert [e["offset"] for e in (entries["sm_120"]["k/a"], entries["sm_120"]["k/b"], entries["sm_75"]["k/c"])] \
        == [0, 128, 320]  # (arch, name) order, each at a multiple of 64
    with pytest.raises(FormatError, match="not an arch name"):
        to_bytes(model, cubins=Cubins({"86": {"k": b"x"}}))


def cubins_index(data: bytes) -> dict:
    section = sections_of(data)[layout.CUBINS]
    (length,) = layout.CUBINS_INDEX_LENGTH.unpack_from(section)
    return json.loads(section[8:8 + length])


def with_cubins_index(data: bytes, mutate) -> bytes:
    """The file with its CUBINS index changed and every checksum made valid again."""
    parts = sections_of(data)
    section = parts[layout.CUBINS]
    (length,) = layout.CUBINS_INDEX_LENGTH.unpack_from(section)
    index = json.loads(section[8:8 + length])
    mutate(index)
    new = canonical_json(index, "test index")
    head = layout.CUBINS_INDEX_LENGTH.pack(len(new)) + new
    parts[layout.CUBINS] = head + bytes(-len(head) % layout.ALIGN) + section[layout.align(8 + length):]
    return repack(parts)


def first(index: dict) -> dict:
    return index["archs"]["sm_86"][min(index["archs"]["sm_86"])]


def second(index: dict) -> dict:
    return index["archs"]["sm_86"][sorted(index["archs"]["sm_86"])[1]]


def test_a_damaged_cubins_section_is_a_format_error(built):
    _, _, path = built
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # CUBINS is the last section
    for read in (lambda d: read_cubins(d, "sm_86"), read_cubin_index, read_rtxir):
        with pytest.raises(FormatError, match="checksum mismatch in section CUBINS"):
            read(bytes(data))


@pytest.mark.parametrize("mutate, message", [
    (lambda ix: first(ix).update(offset=first(ix)["offset"] + 1), "is not a non-negative multiple of 64"),
    (lambda ix: first(ix).update(nbytes=1 << 40), "lie outside"),
    (lambda ix: second(ix).update(offset=first(ix)["offset"]), "overlaps"),
    (lambda ix: first(ix).pop("nbytes"), "missing key 'nbytes'"),
    (lambda ix: ix["archs"].update(gpu86=ix["archs"].pop("sm_86")), "'gpu86' is not an arch name"),
    (lambda ix: ix["shapes"].append({"x": [-1]}), "non-negative integers"),
])
def test_a_crafted_cubins_index_is_a_format_error(built, mutate, message):
    _, _, path = built
    data = with_cubins_index(path.read_bytes(), mutate)
    for read in (lambda d: read_cubins(d, "sm_90"), read_rtxir):
        with pytest.raises(FormatError, match=message):
            read(data)


def test_an_index_length_past_the_section_is_a_format_error(built):
    _, _, path = built
    parts = sections_of(path.read_bytes())
    parts[layout.CUBINS] = layout.CUBINS_INDEX_LENGTH.pack(1 << 40) + parts[layout.CUBINS][8:]
    with pytest.raises(FormatError, match="overruns"):
        read_cubins(repack(parts), "sm_86")


# ---------------------------------------------------------------- machine code runs only where it is bound

def with_cubin(data: bytes, arch: str, name: str, cubin: bytes, *, rebind: bool = False) -> bytes:
    """The file with one of ``arch``'s cubins replaced and every checksum re-sealed, as anyone
    can; ``rebind`` also recomputes the arch's binding (as an attacker could too)."""
    blobs = {each: read_cubins(data, each) for each in read_cubin_index(data).sizes}
    blobs[arch][name] = cubin
    index = cubins_index(data)
    model = read_rtxir(data)
    rebuilt = to_bytes(model, options=read_header(data).options,
                       cubins=Cubins(blobs, [{k: tuple(v) for k, v in s.items()} for s in index["shapes"]]))
    if rebind:
        return rebuilt
    kept = index["bindings"]  # the original bindings, over the original cubins
    return with_cubins_index(rebuilt, lambda ix: ix.update(bindings=kept))


def test_a_swapped_cubin_with_resealed_checksums_is_refused(built):
    _, _, path = built
    data = path.read_bytes()
    name = min(read_cubins(data, "sm_86"))
    forged = with_cubin(data, "sm_86", name, fake_cubin("sm_86", b"other machine code"))
    assert ir_hash(forged) == ir_hash(data)  # the model still reads, with the same IR hash
    read_rtxir(forged)
    with pytest.raises(FormatError, match="embedded sm_86 kernels are not the ones built for this file's graph"):
        read_cubins(forged, "sm_86")
    assert read_cubin_index(forged).problems == {"sm_86": "are not the ones built for this file's graph (moved "
                                                          "from another file or altered since)", "sm_90": None}
    assert read_cubins(forged, "sm_90") == read_cubins(data, "sm_90")


def test_inspect_shows_cubins_that_are_not_bound(built, tmp_path, capsys):
    _, _, path = built
    data = path.read_bytes()
    forged = tmp_path / "forged.rtxir"
    forged.write_bytes(with_cubin(data, "sm_86", min(read_cubins(data, "sm_86")), fake_cubin("sm_86")))
    assert main(["inspect", str(forged)]) == 0
    out = capsys.readouterr().out
    assert "sm_86: NOT USABLE: these cubins are not the ones built for this file's graph" in out
    assert "sm_90: bound to this file's graph" in out


def test_cubins_moved_from_another_graph_are_refused(built):
    """The same kernels (same names: the same sources) under another file's weights."""
    _, _, path = built
    data = path.read_bytes()
    model = read_rtxir(data)
    model.graph.initializers["b"] = model.graph.initializers["b"] + 1  # another graph, same kernels
    index = cubins_index(data)
    blobs = {a: read_cubins(data, a) for a in ARCHS}
    other = to_bytes(model, cubins=Cubins(blobs, [{k: tuple(v) for k, v in s.items()} for s in index["shapes"]]))
    moved = with_cubins_index(other, lambda ix: ix.update(bindings=index["bindings"]))
    with pytest.raises(FormatError, match="not the ones built for this file's graph"):
        read_cubins(moved, "sm_86")


def test_a_rebound_cubin_for_another_arch_is_refused(built):
    """Rebinding (recomputing the digest, as anyone can) does not make a cubin of sm_86 an sm_90 one."""
    _, _, path = built
    data = path.read_bytes()
    name = min(read_cubins(data, "sm_90"))
    forged = with_cubin(data, "sm_90", name, read_cubins(data, "sm_86")[min(read_cubins(data, "sm_86"))],
                        rebind=True)
    with pytest.raises(FormatError, match=r"embedded sm_90 kernels include .*, which is compiled for sm_86, not sm_90"):
        read_cubins(forged, "sm_90")
    junk = with_cubin(data, "sm_90", name, b"#!/bin/sh\n", rebind=True)
    with pytest.raises(FormatError, match="which is not an ELF image"):
        read_cubins(junk, "sm_90")


def test_cubins_without_a_binding_never_run(built):
    _, _, path = built
    unbound = with_cubins_index(path.read_bytes(), lambda ix: ix.pop("bindings"))
    read_rtxir(unbound)  # the model is fine
    with pytest.raises(FormatError, match="are not bound to a graph"):
        read_cubins(unbound, "sm_86")


def test_sessions_run_embedded_kernels_only_when_asked():
    import inspect

    import rtxrt

    assert inspect.signature(rtxrt.Session).parameters["embedded_kernels"].default is False


# ---------------------------------------------------------------- inspect

def test_inspect_lists_the_archs_sizes_and_shapes(built, capsys):
    _, plain, path = built
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rtxir format 1.2" in out and "CUBINS" in out
    line = next(row for row in out.splitlines() if "precompiled kernels (GPU machine code):" in row)
    for arch in ARCHS:
        assert f"{arch} {len(runtime_kernels(path, arch))} (" in line
        assert f"    {arch}: bound to this file's graph" in out
    assert "x:2x4x8x8" in line and "they run only when asked (--trust-embedded-kernels" in out
    assert main(["inspect", str(plain)]) == 0
    assert "precompiled" not in capsys.readouterr().out


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
def test_a_session_on_a_gpu_whose_arch_was_embedded_compiles_nothing(tmp_path):
    """Fresh cache, cubins for this GPU's arch, embedded kernels asked for: the JIT only tunes.
    Not asked for, or cubins for another arch only, or forged cubins: it compiles them all.
    Tolerance: fp32 throughout (one 36-term dot product per
    output, errors near 1e-7), tactics may sum in another order; 1e-4 relative (L2) leaves wide
    headroom and still catches a wrong kernel (errors of order 1)."""
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.backends.cuda.device import SUPPORTED_ARCHS, probe
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count

    arch = probe().arch
    if arch not in SUPPORTED_ARCHS:
        pytest.skip(f"{arch} is not an arch --precompile offers")
    other = next(a for a in SUPPORTED_ARCHS if a != arch)
    onnx_path = tmp_path / "conv.onnx"
    onnx.save(conv_model(), str(onnx_path))
    files = {}
    for target in (arch, other):
        files[target] = tmp_path / f"{target}.rtxir"
        build_rtxir(onnx_path, files[target], AotOptions(), precompile_for=PrecompileOptions((target,), SHAPES))
    feeds = {"x": np.random.default_rng(11).standard_normal(SHAPES["x"]).astype(np.float32)}
    want = ReferenceExecutor(read_rtxir(files[arch])).run(feeds)["y"]
    assert np.abs(want).max() > 0

    all_kernels = len(runtime_kernels(files[arch], arch))  # what a first run compiles without embedded ones

    before = compiled_count()
    session = rtxrt.Session(files[arch], cache_dir=tmp_path / "cache", progress=False, embedded_kernels=True)
    got = session.run(None, feeds)[0]
    assert not session.stats["from_cache"] and session.stats["kernels_loaded"] > 0
    assert session.stats["kernels_compiled"] == 0 and compiled_count() == before
    assert relative_error(got, want) < 1e-4

    default = rtxrt.Session(files[arch], cache_dir=tmp_path / "cache-default", progress=False)
    assert relative_error(default.run(None, feeds)[0], want) < 1e-4
    assert default.stats["kernels_compiled"] == all_kernels > 0  # the file's machine code was not used

    elsewhere = rtxrt.Session(files[other], cache_dir=tmp_path / "cache-other", progress=False, embedded_kernels=True)
    assert relative_error(elsewhere.run(None, feeds)[0], want) < 1e-4
    assert elsewhere.stats["kernels_compiled"] == all_kernels

    name = min(read_cubins(files[arch], arch))
    forged = with_cubin(files[arch].read_bytes(), arch, name, read_cubins(files[arch], arch)[max(read_cubins(files[arch], arch))])
    with pytest.warns(RuntimeWarning, match="not running embedded kernels: .* not the ones built for this file's graph"):
        refused = rtxrt.Session(forged, cache_dir=tmp_path / "cache-forged", progress=False, embedded_kernels=True)
    assert relative_error(refused.run(None, feeds)[0], want) < 1e-4
    assert refused.stats["kernels_compiled"] == all_kernels


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape and np.isfinite(got).all()
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))
