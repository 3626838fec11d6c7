"""Shape-generic engines on the GPU: a profile's one JIT serves every shape in it.

A Session with a profile compiles and tunes the generic kernels once, at load; every other
shape of the profile then runs on the GPU with no compile ("none" and "lazy"), correct against
the reference backend; "lazy" swaps in a shape's specialized engine once it is hot and built;
a second session on the same cache compiles nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

BERT_PROFILE_RANGE = [(1, 1), (2, 16), (4, 64)]


def build(zoo_export, folder: Path, name: str, precision: str, **export) -> Path:
    from rtxrt.aot import build_rtxir
    from rtxrt.aot.options import AotOptions
    from tests.models import zoo

    path = folder / f"{name}-{precision}-generic.rtxir"
    if not path.exists():
        onnx_path = zoo_export(name).onnx_path if not export else str(folder / f"{name}-dynamic.onnx")
        if export:
            zoo.export(name, onnx_path, **export)
        build_rtxir(onnx_path, path, AotOptions(precision=precision))
    return path


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def check_against_reference(session, feeds, tolerance: float) -> None:
    from rtxrt.backends.reference.executor import ReferenceExecutor

    got = session.run(None, feeds)
    want = ReferenceExecutor(session.model).run(feeds)
    for name, value in zip(session.model.graph.outputs, got):
        assert relative_error(value, want[name]) < tolerance, (name, {k: v.shape for k, v in feeds.items()})


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_a_profile_compiles_once_and_runs_every_shape_in_it_on_the_gpu(zoo_export, tmp_path, precision, tolerance):
    import rtxrt
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count

    path = build(zoo_export, tmp_path, "bert", precision)
    inputs = zoo_export("bert").input_names
    profile = {n: BERT_PROFILE_RANGE for n in inputs}
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, profile=profile,
                            specialization="none")
    assert session.kernels_compiled_total > 0  # the one JIT: the generic kernels, at load
    before = compiled_count()
    for seed, (batch, seq) in enumerate([(3, 7), (1, 1), (4, 64), (2, 33), (1, 50)]):
        check_against_reference(session, zoo_export("bert").make_inputs(seed, batch=batch, seq=seq), tolerance)
        assert session.stats["engine"] == "generic"
    assert compiled_count() == before and session.stats["kernels_compiled"] == 0

    again = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, profile=profile, specialization="none")
    again.run(None, zoo_export("bert").make_inputs(9, batch=3, seq=21))
    assert again.kernels_compiled_total == 0 and compiled_count() == before  # a second session: from the cache


def test_lazy_runs_a_new_shape_generic_at_once_and_specialized_once_built(zoo_export, tmp_path):
    import rtxrt
    from rtxrt.runtime.session import HOT_USES

    path = build(zoo_export, tmp_path, "bert", "fp32")
    profile = {n: BERT_PROFILE_RANGE for n in zoo_export("bert").input_names}
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, profile=profile,
                            specialization="lazy")
    feeds = zoo_export("bert").make_inputs(3, batch=3, seq=11)
    results = []
    for _ in range(HOT_USES):
        results.append(session.run(None, feeds))
        assert session.stats["engine"] == "generic"  # on the GPU at once, never the CPU
    session.wait()  # the hot shape's specialized engine, built in the background
    results.append(session.run(None, feeds))
    assert session.stats["engine"] == "specialized" and session.stats["kernels_compiled"] > 0
    for a, b in zip(results[0], results[-1]):
        assert relative_error(b, a) < 1e-4


def test_a_yolo_style_detector_runs_every_input_size_without_compiling(zoo_export, tmp_path):
    import rtxrt
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count
    from tests.models import zoo

    path = build(zoo_export, tmp_path, "yolo_tiny", "fp32", dynamic_size=True)
    make = zoo._image_inputs((1, 3, 64, 64))
    profile = {"input": [(1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 256, 256)]}
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, profile=profile,
                            specialization="none")
    before = compiled_count()
    for seed, (batch, size) in enumerate([(1, 96), (2, 256), (1, 32), (2, 160)]):
        check_against_reference(session, make(seed, batch=batch, size=size), 1e-4)
        assert session.stats["engine"] == "generic"
    assert compiled_count() == before


def test_a_model_without_a_profile_gets_default_ranges(zoo_export, tmp_path):
    import rtxrt
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count

    path = build(zoo_export, tmp_path, "bert", "fp32")
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, specialization="none")
    check_against_reference(session, zoo_export("bert").make_inputs(1, batch=2, seq=16), 1e-4)  # the one JIT
    before = compiled_count()
    check_against_reference(session, zoo_export("bert").make_inputs(2, batch=5, seq=40), 1e-4)
    assert session.stats["engine"] == "generic" and compiled_count() == before


def test_a_unet_without_a_profile_gets_ranges_its_poolings_divide(zoo_export, tmp_path):
    """A U-Net refuses 1-pixel images (its poolings and skip concatenations need sizes that
    divide by 2^k): the default ranges raise their lower bounds instead of giving up the
    generic engine, so new sizes run on it without compiling."""
    import rtxrt
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count
    from tests.models import zoo

    path = build(zoo_export, tmp_path, "unet", "fp32", dynamic_size=True)
    make = zoo._image_inputs((1, 3, 64, 64))
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, specialization="none")
    check_against_reference(session, make(0), 1e-4)  # the one JIT
    before = compiled_count()
    for seed, (batch, size) in enumerate([(2, 96), (1, 32), (3, 160)]):
        check_against_reference(session, make(seed, batch=batch, size=size), 1e-4)
        assert session.stats["engine"] == "generic"
    assert compiled_count() == before


def test_a_profile_keeps_a_bounded_number_of_shapes_loaded(zoo_export, tmp_path, monkeypatch):
    """The least recently run shapes give back their own memory (constants, CUDA graph) and
    are planned again, correctly and without compiling, when they come back."""
    import rtxrt
    from rtxrt.backends.cuda import generic
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count
    from tests.models import zoo

    monkeypatch.setattr(generic, "MAX_LIVE_ENGINES", 3)
    path = build(zoo_export, tmp_path, "yolo_tiny", "fp32", dynamic_size=True)
    make = zoo._image_inputs((1, 3, 64, 64))
    profile = {"input": [(1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 256, 256)]}
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False, profile=profile,
                            specialization="none")
    before, held = compiled_count(), []
    sizes = [(1, 96), (2, 128), (1, 160), (2, 192), (1, 224), (1, 96), (2, 256), (2, 128)]
    for seed, (batch, size) in enumerate(sizes):
        check_against_reference(session, make(seed, batch=batch, size=size), 1e-4)
        assert len(session._generic.engines) <= 3
        held.append(session._generic.device_bytes)
    assert compiled_count() == before
    assert max(held[3:]) <= max(held[:3]) * 1.05  # what is held stops growing with the shapes seen
