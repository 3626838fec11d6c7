"""rtxrt.Session on a GPU: every zoo model matches the reference backend in fp32 and fp16,
the runtime cache makes a second start compile nothing, eight processes starting at once
build one entry, a damaged entry is rebuilt, and outputs come back as the inputs' kind.

Tolerances are ||gpu - ref|| / ||ref|| per output, in float64. fp32: 1e-3 (the issue's
bar; cuBLAS and our kernels accumulate in fp32, so errors land far under it). fp16: the
values are stored in fp16 (11-bit mantissa, ~5e-4 per rounding) through tens of layers.
Measured on an H200: 1.5e-3 (ResNet-18, UNet), 4e-3 (ResNet-50, MobileNetV3), 1e-3
(BERT, GPT-2, ViT-B/16, whose softmax and layer norm stay fp32); each bound leaves about 3x
headroom."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

MODELS = ["resnet18", "resnet50", "mobilenetv3_small", "unet", "bert", "gpt2", "vit_b16"]
SHAPES = {"bert": {"batch": 2, "seq": 16}, "gpt2": {"batch": 2, "seq": 16}}
FP16_TOLERANCE = {"resnet18": 5e-3, "resnet50": 1.2e-2, "mobilenetv3_small": 1.2e-2, "unet": 5e-3, "bert": 4e-3,
                  "gpt2": 4e-3, "vit_b16": 4e-3}
ROOT = Path(__file__).resolve().parents[2]


def build(zoo_export, tmp_path: Path, name: str, precision: str) -> Path:
    from rtxrt.aot import build_rtxir
    from rtxrt.aot.options import AotOptions

    path = tmp_path / f"{name}-{precision}.rtxir"
    if not path.exists():
        build_rtxir(zoo_export(name).onnx_path, path, AotOptions(precision=precision))
    return path


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.isfinite(got).all(), "non-finite outputs"
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpu_models")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_gpu_matches_the_reference_backend(zoo_export, models_dir, tmp_path, name, precision):
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.format import read_rtxir

    path = build(zoo_export, models_dir, name, precision)
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False)
    assert session.on_gpu and session.backend.startswith("cuda")
    feeds = zoo_export(name).make_inputs(7, **SHAPES.get(name, {}))
    got = session.run(None, feeds)
    assert session.stats["host_nodes"] == []
    want = ReferenceExecutor(read_rtxir(build(zoo_export, models_dir, name, "fp32"))).run(feeds)
    tolerance = 1e-3 if precision == "fp32" else FP16_TOLERANCE[name]
    for output, value in zip(session.model.graph.outputs, got):
        error = relative_error(value, want[output])
        print(f"{name} {precision} {output}: rel err {error:.2e} (jit {session.stats['jit_seconds']:.2f} s, "
              f"{session.stats['kernels_compiled']} kernels)")
        assert error < tolerance, f"{name} {precision} {output}: {error:.3g} >= {tolerance}"


def test_cuda_graph_replay_and_eager_launches_agree(zoo_export, models_dir, tmp_path):
    import rtxrt

    path = build(zoo_export, models_dir, "resnet18", "fp16")
    feeds = zoo_export("resnet18").make_inputs(3)
    graph = rtxrt.Session(path, cache_dir=tmp_path, progress=False)
    eager = rtxrt.Session(path, cache_dir=tmp_path, progress=False, use_cuda_graph=False)
    first = graph.run(None, feeds)[0]
    np.testing.assert_array_equal(first, eager.run(None, feeds)[0])
    again = zoo_export("resnet18").make_inputs(4)
    assert not np.array_equal(graph.run(None, again)[0], first)  # the replay reads the new inputs
    np.testing.assert_array_equal(graph.run(None, again)[0], eager.run(None, again)[0])


def test_outputs_come_back_as_the_kind_of_array_given(zoo_export, models_dir, tmp_path):
    import cupy
    import torch

    import rtxrt

    path = build(zoo_export, models_dir, "resnet18", "fp32")
    session = rtxrt.Session(path, cache_dir=tmp_path, progress=False)
    feeds = zoo_export("resnet18").make_inputs(5)
    host = session.run(None, feeds)[0]
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    device = session.run(None, {k: cupy.asarray(v) for k, v in feeds.items()})[0]
    assert isinstance(device, cupy.ndarray)
    np.testing.assert_array_equal(device.get(), host)
    tensor = session.run(None, {k: torch.from_numpy(v).cuda() for k, v in feeds.items()})[0]
    assert isinstance(tensor, torch.Tensor) and tensor.is_cuda
    np.testing.assert_array_equal(tensor.cpu().numpy(), host)


def test_bad_inputs_are_named(zoo_export, models_dir, tmp_path):
    import rtxrt

    session = rtxrt.Session(build(zoo_export, models_dir, "resnet18", "fp32"), cache_dir=tmp_path, progress=False)
    feeds = zoo_export("resnet18").make_inputs(5)
    with pytest.raises(rtxrt.InputError, match="input"):
        session.run(None, {k: v.astype(np.float64) for k, v in feeds.items()})
    with pytest.raises(rtxrt.InputError, match="missing"):
        session.run(None, {})


def _start(path: Path, cache: Path, image: int = 64) -> subprocess.Popen:
    """A fresh process that opens the model (an image model: input 1x3ximagesximage), runs it
    once and prints its JIT statistics, its NVRTC compile count and the first outputs."""
    script = (
        "import json, sys, numpy as np, rtxrt\n"
        "from rtxrt.backends.cuda.compile.nvrtc import compiled_count\n"
        "s = rtxrt.Session(sys.argv[1], cache_dir=sys.argv[2], progress=False)\n"
        "n = int(sys.argv[3])\n"
        "x = np.random.default_rng(0).uniform(-1, 1, (1, 3, n, n)).astype(np.float32)\n"
        "y = s.run(None, {s.inputs[0].name: x})[0]\n"
        "print(json.dumps({'stats': s.stats, 'compiled': compiled_count(), 'sum': float(np.float64(y).sum()),"
        " 'first': y.ravel()[:8].tolist()}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", script, str(path), str(cache), str(image)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return {**json.loads(out.strip().splitlines()[-1]), "stderr": err}


def test_a_second_process_loads_from_the_cache_in_under_a_second_with_no_compile(zoo_export, models_dir, tmp_path):
    import rtxrt

    path = build(zoo_export, models_dir, "resnet18", "fp16")
    assert not rtxrt.is_cached(path, cache_dir=tmp_path)
    cold = _result(_start(path, tmp_path))
    assert cold["compiled"] > 0 and not cold["stats"]["from_cache"]
    assert rtxrt.is_cached(path, cache_dir=tmp_path)
    warm = _result(_start(path, tmp_path))
    print(f"cold JIT {cold['stats']['jit_seconds']:.2f} s ({cold['compiled']} kernels), "
          f"warm load {warm['stats']['jit_seconds']:.3f} s")
    assert warm["compiled"] == 0 and warm["stats"]["kernels_compiled"] == 0 and warm["stats"]["from_cache"]
    assert warm["stats"]["jit_seconds"] < 1.0
    assert warm["first"] == cold["first"]


def test_eight_processes_starting_at_once_build_one_entry(zoo_export, models_dir, tmp_path):
    import rtxrt

    path = build(zoo_export, models_dir, "resnet18", "fp16")
    results = [_result(p) for p in [_start(path, tmp_path) for _ in range(8)]]
    builders = [r for r in results if not r["stats"]["from_cache"]]
    assert len(builders) == 1, [r["stats"] for r in results]
    assert all(r["compiled"] == 0 for r in results if r["stats"]["from_cache"])
    assert len({json.dumps(r["first"]) for r in results}) == 1
    assert rtxrt.is_cached(path, cache_dir=tmp_path)
    assert all("CacheWarning" not in r["stderr"] for r in results)


def test_a_bit_flipped_cache_entry_is_rebuilt_with_a_warning(zoo_export, models_dir, tmp_path):
    import rtxrt
    from rtxrt.backends.cuda.cache.runtime_cache import CacheWarning

    path = build(zoo_export, models_dir, "resnet18", "fp16")
    feeds = zoo_export("resnet18").make_inputs(9)
    first = rtxrt.Session(path, cache_dir=tmp_path, progress=False).run(None, feeds)[0]
    blob = max((tmp_path / "entries").glob("*/blobs/*"), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x10
    blob.write_bytes(bytes(data))
    assert not rtxrt.is_cached(path, cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = rtxrt.Session(path, cache_dir=tmp_path, progress=False)
    assert [w.filename for w in caught if issubclass(w.category, CacheWarning)] == [__file__]  # the app's line
    assert session.stats["kernels_compiled"] > 0
    # the rebuild re-tunes and may pick other tiles: fp16 sums in another order
    assert relative_error(session.run(None, feeds)[0], first) < 5e-3
    assert rtxrt.is_cached(path, cache_dir=tmp_path)


def test_sessions_load_while_another_process_clears_the_cache(zoo_export, models_dir, tmp_path):
    """`rtxrt cache clear` looping in another process while sessions load: each load finds the
    entry, finds it gone (a miss, rebuilt) or loses it mid-read; never an error, same outputs."""
    import rtxrt

    path = build(zoo_export, models_dir, "resnet18", "fp16")
    feeds = zoo_export("resnet18").make_inputs(5)
    want = rtxrt.Session(path, cache_dir=tmp_path, progress=False).run(None, feeds)[0]
    clear = [sys.executable, "-m", "rtxrt.cli", "cache", "clear", "--cache-dir", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    loop = subprocess.Popen(["bash", "-c", f"for i in $(seq 40); do {' '.join(clear)} >/dev/null || exit 1; done"],
                            env=env)
    loads = 0
    while loop.poll() is None or loads < 3:
        got = rtxrt.Session(path, cache_dir=tmp_path, progress=False).run(None, feeds)[0]
        assert relative_error(got, want) < 5e-3  # a rebuild re-tunes and may pick other tiles
        loads += 1
    assert loop.wait() == 0 and loads >= 3


def test_resnet50_jits_cold_in_under_20_seconds_and_loads_warm_in_another_process_in_under_1(tmp_path):
    import rtxrt
    from rtxrt.aot import build_rtxir
    from rtxrt.aot.options import AotOptions

    from ..models import zoo

    exported = zoo.export("resnet50", tmp_path / "resnet50.onnx", image_size=224)
    path = tmp_path / "resnet50.rtxir"
    build_rtxir(exported.onnx_path, path, AotOptions(precision="fp16"))
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False)
    stats = session.stats
    print(f"ResNet-50 224 fp16 cold JIT: {stats['jit_seconds']:.1f} s (plan {stats['plan_seconds']:.2f}, compile "
          f"{stats['compile_seconds']:.1f} s for {stats['kernels_compiled']} kernels, tune {stats['tune_seconds']:.1f})")
    assert stats["jit_seconds"] < 20.0
    warm = _result(_start(path, tmp_path / "cache", image=224))  # another process, the same cache
    print(f"ResNet-50 224 fp16 warm load in a second process: {warm['stats']['jit_seconds']:.3f} s")
    assert warm["compiled"] == 0 and warm["stats"]["from_cache"] and warm["stats"]["jit_seconds"] < 1.0


def test_a_profile_specializes_its_opt_shapes_up_front_and_bounds_the_rest(zoo_export, models_dir, tmp_path):
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor

    path = build(zoo_export, models_dir, "bert", "fp32")
    profile = {n: [(1, 8), (2, 16), (4, 32)] for n in zoo_export("bert").input_names}
    session = rtxrt.Session(path, cache_dir=tmp_path, progress=False, profile=profile)
    assert session.stats["kernels_compiled"] > 0  # the opt shapes, before any run
    reference = ReferenceExecutor(session.model)
    for sizes in ({"batch": 2, "seq": 16}, {"batch": 3, "seq": 9}, {"batch": 1, "seq": 32}):
        feeds = zoo_export("bert").make_inputs(11, **sizes)
        got = session.run(None, feeds)
        want = reference.run(feeds)
        for output, value in zip(session.model.graph.outputs, got):
            assert relative_error(value, want[output]) < 1e-3, (sizes, output)
    with pytest.raises(rtxrt.InputError, match="outside the session's profile"):
        session.run(None, zoo_export("bert").make_inputs(1, batch=5, seq=8))


def test_lazy_specialization_serves_a_new_shape_on_the_generic_engine_until_its_own_is_ready(zoo_export, models_dir,
                                                                                              tmp_path):
    import rtxrt
    from rtxrt.runtime.session import HOT_USES

    path = build(zoo_export, models_dir, "bert", "fp32")
    session = rtxrt.Session(path, cache_dir=tmp_path, progress=False, specialization="lazy")
    feeds = zoo_export("bert").make_inputs(12, batch=2, seq=12)
    first = session.run(None, feeds)  # the default ranges' generic engine: the one JIT, then on the GPU
    assert session.stats["engine"] == "generic" and len(session._engines) == 0
    for _ in range(HOT_USES - 1):
        session.run(None, feeds)  # hot now: its specialized engine is built in the background
    session.wait()
    second = session.run(None, feeds)  # picks up the finished engine
    assert session.stats["engine"] == "specialized" and len(session._engines) == 1
    for a, b in zip(first, second):
        assert relative_error(b, a) < 1e-3


def test_bound_device_buffers_run_without_copies(zoo_export, models_dir, tmp_path):
    import cupy

    import rtxrt

    session = rtxrt.Session(build(zoo_export, models_dir, "resnet18", "fp16"), cache_dir=tmp_path, progress=False)
    feeds = zoo_export("resnet18").make_inputs(21)
    expected = session.run(None, feeds)[0]
    binding = session.bind({k: v.shape for k, v in feeds.items()})
    engine = session.engine({k: v.shape for k, v in feeds.items()})
    for name, value in feeds.items():
        binding.inputs[name][...] = cupy.asarray(value)  # written in place, on the caller's stream
    out = binding.run()["output"]
    assert out.data.ptr == engine.value_address(engine.plan.results["output"])  # the engine's own buffer
    np.testing.assert_array_equal(out.get(), expected)


def test_a_progress_callback_hears_every_compile_and_tune_step(zoo_export, models_dir, tmp_path):
    import rtxrt

    events = []
    session = rtxrt.Session(build(zoo_export, models_dir, "resnet18", "fp16"), cache_dir=tmp_path,
                            progress=lambda stage, done, total: events.append((stage, done, total)))
    compiles = [e for e in events if e[0] == "compile"]
    tunes = [e for e in events if e[0] == "tune"]
    assert compiles and compiles[-1][1] == compiles[-1][2] == session.stats["kernels_compiled"]
    assert tunes and tunes[-1][1] == tunes[-1][2] > 0
    assert [d for _, d, _ in compiles] == list(range(1, len(compiles) + 1))


def test_no_specialization_compiles_nothing_after_load(zoo_export, models_dir, tmp_path):
    """specialization="none": the profile's generic engine is built at load; a shape the cache
    holds specialized (prewarmed by another session) loads that engine; any other runs generic."""
    import rtxrt
    from rtxrt.backends.cuda.compile.nvrtc import compiled_count

    path = build(zoo_export, models_dir, "bert", "fp32")
    profile = {n: [(1, 8), (2, 16), (4, 32)] for n in zoo_export("bert").input_names}
    rtxrt.Session(path, cache_dir=tmp_path, progress=False, profile=profile).engine(
        {n: (3, 8) for n in zoo_export("bert").input_names})  # prewarms (3, 8) into the cache
    session = rtxrt.Session(path, cache_dir=tmp_path, progress=False, profile=profile, specialization="none")
    before = compiled_count()
    cached = zoo_export("bert").make_inputs(13, batch=3, seq=8)
    uncached = zoo_export("bert").make_inputs(13, batch=1, seq=20)
    session.run(None, cached)
    assert session.stats["engine"] == "specialized"
    session.run(None, uncached)
    assert session.stats["engine"] == "generic"
    assert compiled_count() == before and session.kernels_compiled_total == 0
