"""Grouped convolutions (rtxrt/backends/cuda/ops/conv_grouped_source.py) on the GPU, against the
reference backend.

- Whole models (tests/backends/cuda/test_grouped_conv.py's grouped models: NCHW first convs and
  NHWC ones, groups 2 to 32, 1x1 and 3x3, strides, dilation, a channel multiplier; and two
  ResNeXt blocks exported from torch) through ``rtxrt.Session`` (compiled, autotuned, CUDA
  graphs), fp32 and fp16: no host node, outputs within ||gpu - ref|| / ||ref|| of 1e-3 (fp32)
  and 2e-2 (fp16, every value stored in fp16 through five convolutions).
- Every tactic a grouped conv offers (the batched tensor-core GEMM's tiles with the bias per
  group, the SIMT ones for fp32, the direct kernel, im2col + cuBLAS + the epilogue), each run
  through the real Engine on an arena filled with NaN first (so an element no kernel wrote
  shows), fp32, fp16 and bf16 (sm_80 and newer): within each output's largest magnitude
  times 1e-4 (fp32), 2e-2 (fp16) and 6e-2 (bf16) of the reference.
- A generic plan (Session with a profile over batch and image size) of the ResNeXt blocks at
  several shapes.
- The time of each tactic on ResNeXt-50 (32x4d)'s grouped 3x3 convolutions at batch 32, fp16:
  printed, and the default (what runs untuned) within 3x of the fastest.
"""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.frontend.onnx_import import load_onnx
from tests.fake_gpu.engine import check_matches_reference, run_engine

from .test_grouped_conv import MODELS, grouped_model, grouped_steps, model_feeds, resnext_block

pytestmark = pytest.mark.gpu

SESSION_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
TACTIC_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2}


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("cupy")
    from rtxrt.backends.cuda.jit import GpuContext

    return GpuContext()


@pytest.fixture(scope="module")
def resnext(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("resnext")
    return {"64": resnext_block(folder / "b64.onnx", 64), "256": resnext_block(folder / "b256.onnx", 256),
            "generic": resnext_block(folder / "generic.onnx", 64, dynamic=True)}


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape and np.isfinite(got).all()
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def check_session(session, proto, feeds_list, precision: str, what: str) -> None:
    reference = ReferenceExecutor(load_onnx(proto))
    for feeds in feeds_list:
        (got,) = session.run(None, feeds)
        error = relative_error(got, reference.run(feeds)["y"])
        assert error <= SESSION_TOLERANCE[precision], f"{what} {precision}: {error:.2e}"
    assert session.stats["host_nodes"] == [], session.stats["host_nodes"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_grouped_model_through_a_session_matches_the_reference(tmp_path, name, precision):
    import rtxrt

    proto = grouped_model(**MODELS[name])
    session = rtxrt.Session(compile_onnx(proto, AotOptions(precision=precision)), cache_dir=tmp_path, progress=False)
    check_session(session, proto, [model_feeds(proto, 1), model_feeds(proto, 2)], precision, name)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("width", ["64", "256"])
def test_resnext_blocks_through_a_session_match_the_reference(tmp_path, resnext, width, precision):
    import onnx

    import rtxrt

    proto = onnx.load(resnext[width])
    session = rtxrt.Session(compile_onnx(proto, AotOptions(precision=precision)), cache_dir=tmp_path, progress=False)
    feeds = [{"x": np.random.default_rng(s).standard_normal((2, 32, 8, 8)).astype(np.float32)} for s in (1, 2)]
    check_session(session, proto, feeds, precision, f"resnext width {width}")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_generic_resnext_blocks_run_every_shape_of_their_profile(tmp_path, resnext, precision):
    import onnx

    import rtxrt

    proto = onnx.load(resnext["generic"])
    profile = {"x": [(1, 32, 8, 8), (2, 32, 12, 12), (3, 32, 16, 16)]}
    session = rtxrt.Session(compile_onnx(proto, AotOptions(precision=precision)), cache_dir=tmp_path, progress=False,
                            profile=profile, specialization="none")
    feeds = [{"x": np.random.default_rng(k).standard_normal(shape).astype(np.float32)}
             for k, shape in enumerate([(1, 32, 8, 8), (3, 32, 11, 16), (2, 32, 12, 12), (3, 32, 16, 16)])]
    check_session(session, proto, feeds, precision, "generic resnext")
    assert session.stats["engine"] == "generic"


# ---------------------------------------------------------------- every tactic, through the Engine

def run_tactic(gpu, final, cubins: dict, feeds: dict) -> dict[str, np.ndarray]:
    """``final`` on the GPU through the real Engine, its arena filled with NaN bytes first.
    Everything is ordered on the engine's stream (a non-blocking one): the fill before the
    kernels, the outputs' copies to the host after them."""
    import cupy

    from rtxrt.backends.cuda.run.executor import Engine

    with gpu.device, gpu.stream:
        engine = Engine(final, {k: cubins[k] for k in final.kernels}, stream=gpu.stream, cublas=gpu.cublas,
                        use_graph=False)
        cupy.cuda.runtime.memsetAsync(engine.arena.ptr, 0xFF, engine.arena.mem.size, gpu.stream.ptr)
        outputs = run_engine(engine, feeds)
        gpu.stream.synchronize()
        return outputs


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_grouped_tactic_matches_the_reference_on_the_gpu(gpu, name, precision):
    from rtxrt.backends.cuda.compile.nvrtc import compile_many

    if precision == "bf16" and gpu.info.compute_capability < (8, 0):
        pytest.skip("bf16 tensor-core GEMMs need sm_80")
    proto = grouped_model(**MODELS[name])
    model = compile_onnx(proto, AotOptions(precision=precision))
    feeds = model_feeds(proto, 3)
    plan = build_plan(model, {k: v.shape for k, v in feeds.items()}, arch=gpu.info.arch, sm_count=gpu.info.sm_count)
    assert plan.host_steps == []
    cubins = compile_many(plan.kernels.items(), gpu.info.arch)
    want = ReferenceExecutor(load_onnx(proto)).run(feeds)
    (i,) = grouped_steps(plan)
    labels = [p.label for p in plan.steps[i].candidates]
    for c, label in enumerate(labels):
        got = run_tactic(gpu, finalize(plan, {i: c}), cubins, feeds)
        check_matches_reference(got, want, tol=TACTIC_TOLERANCE[precision], what=f"{name} {precision} {label}")
    assert any(label.endswith(" cublas") for label in labels) and any(label.startswith("grouped_direct")
                                                                       for label in labels)
    assert len(labels) >= 3  # GEMM tiles too


# ---------------------------------------------------------------- speed

# ResNeXt-50 (32x4d)'s grouped 3x3 convolutions: (channels, image size, stride)
RESNEXT50 = [(128, 56, 1), (256, 28, 1), (512, 14, 1), (1024, 7, 1), (256, 56, 2)]


@pytest.mark.parametrize("channels, size, stride", RESNEXT50)
def test_speed_of_resnext50_grouped_convolutions_by_tactic(gpu, channels, size, stride):
    from rtxrt.backends.cuda.compile.nvrtc import compile_many
    from rtxrt.backends.cuda.run.executor import Engine

    proto = grouped_model(channels, 32, channels, first=False, strides=(stride, stride), residual=False, batch=32,
                          size=(size, size))
    model = compile_onnx(proto, AotOptions(precision="fp16"))
    feeds = model_feeds(proto, 4)
    plan = build_plan(model, {k: v.shape for k, v in feeds.items()}, arch=gpu.info.arch, sm_count=gpu.info.sm_count)
    (i,) = grouped_steps(plan)
    cubins = compile_many(plan.kernels.items(), gpu.info.arch)
    times = {}
    for c, program in enumerate(plan.steps[i].candidates):
        final = finalize(plan, {i: c})
        with gpu.device:
            engine = Engine(final, {k: cubins[k] for k in final.kernels}, stream=gpu.stream, cublas=gpu.cublas)
            engine.run(feeds)  # warm up
            times[program.label] = min(engine.profile(feeds)[i][1] for _ in range(5))
    table = ", ".join(f"{label} {ms:.3f} ms" for label, ms in sorted(times.items(), key=lambda t: t[1]))
    print(f"\nResNeXt-50 grouped 3x3, {channels} channels, {size}x{size}, stride {stride}, batch 32, fp16: {table}")
    default = plan.steps[i].candidates[0].label
    assert times[default] <= 3 * min(times.values()), f"the default {default} is far from the fastest: {table}"
