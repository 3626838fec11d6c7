"""Generated RoiAlign kernels on the GPU agree with the reference backend.

Runs the catalogue of tests/backends/cuda/test_roi_align_codegen.py (each mode x
coordinate_transformation_mode x sampling ratio 0 and 2 x fp32 and fp16, channels-last X,
bf16 X, fp16 and bf16 rois, opset 10's and 16's defaults, detector-sized heads; boxes partly
outside the image, tiny, huge, malformed and random, over several images): each kernel is
compiled with NVRTC for the probed GPU's arch and launched on the catalogue's inputs (seeded
per case; X never zero) into an output poisoned with NaN bits, so an element no thread wrote
fails the comparison. NHWC cases get X channels-last. The reference backend runs on the same
stored values widened to float64.

Tolerances (``assert_matches``): within one rounding to X's type of max |Y|: float32 1e-5
(fp32 positions, weights and sums against float64), float16 1e-3 and bfloat16 1e-2 (half an
ulp: 4.9e-4 and 3.9e-3). A whole detector head through a Session: float32 1e-5 and fp16
precision 2e-2 of the scores' norm (the conv and the classifier compute in fp16 too).

Then, as on the fake device: a grid of fewer blocks than the work, shape-generic kernels (one
source, its dims passed as int arguments) at two shapes, the adaptive count where fp32 and
float64 disagree, ONNX's own node tests, batch indices outside X.
"""
from __future__ import annotations

import numpy as np
import pytest

import rtxrt
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.roi_align_source import roi_align_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType

from .helpers import KernelLoader, device_view, storage
from .test_roi_align_codegen import (
    CASES,
    GENERIC,
    MODES,
    TIE_ROIS,
    Case,
    assert_matches,
    case,
    case_inputs,
    detector_head,
    generic_kernel,
    head_feeds,
    onnx_node_cases,
    physical,
    reference,
)

pytestmark = pytest.mark.gpu

F32, F16, BF16 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16
NAN_BITS = {F32: (np.uint32, 0x7FC00000), F16: (np.uint16, 0x7E00), BF16: (np.uint16, 0x7FC0)}
HEADS = [c.id for c in CASES if c.id.startswith(("box_head", "adaptive_head"))]


@pytest.fixture(scope="module")
def function(tmp_path_factory):
    """``function(kernel)``: the loaded kernel, compiled for the probed arch (the catalogue at
    once, others as they come)."""
    from rtxrt.backends.cuda.device import probe

    loader = KernelLoader(tmp_path_factory.mktemp("roi_align_cubins"), probe().arch)
    loader.load([c.kernel() for c in CASES])
    return loader


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(c: Case, function):
    kernel = c.kernel()
    x, rois, batch = case_inputs(c)
    got = launch(function(kernel), kernel, physical(c, x), rois, batch)
    assert_matches(c, got, reference(c, x, rois, batch))


@pytest.mark.parametrize("case_id", HEADS)
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id, function):
    c = next(c for c in CASES if c.id == case_id)
    kernel = c.kernel()
    assert kernel.launch.grid() > 3
    x, rois, batch = case_inputs(c)
    got = launch(function(kernel), kernel, physical(c, x), rois, batch, blocks=3)
    assert_matches(c, got, reference(c, x, rois, batch))


@pytest.mark.parametrize("n, dtype, layout, shapes", GENERIC,
                         ids=lambda v: v.attr("mode") if hasattr(v, "attr") else None)
def test_a_generic_kernel_is_right_at_every_shape(n, dtype, layout, shapes, function):
    kernels = [generic_kernel(n, shapes, at, dtype, layout) for at in range(len(shapes))]
    assert len({k.name for k in kernels}) == 1
    for (x_shape, count), kernel in zip(shapes, kernels):
        c = Case("generic", n, TensorType(dtype, x_shape), count, F32, layout)
        x, rois, batch = case_inputs(c)
        got = launch(function(kernel), kernel, physical(c, x), rois, batch)
        assert_matches(c, got, reference(c, x, rois, batch))


@pytest.mark.parametrize("mode", MODES)
def test_an_adaptive_count_at_an_integer_is_the_reference_float64_count(mode, function):
    c = case(mode, "output_half_pixel", 0, F32, (1, 2, 8, 8), len(TIE_ROIS), (2, 2), 0.1)
    x, _, _ = case_inputs(c)
    batch = np.zeros(len(TIE_ROIS), np.int64)
    got = launch(function(c.kernel()), c.kernel(), x, TIE_ROIS, batch)
    assert_matches(c, got, reference(c, x, TIE_ROIS, batch))


def test_onnx_node_tests_of_roi_align_pass(function):
    cases = onnx_node_cases()
    assert len(cases) == 3
    for n, x, rois, batch, want in cases:
        kernel = roi_align_kernel(n, 16, TensorType(F32, x.shape), TensorType(F32, rois.shape))
        np.testing.assert_allclose(launch(function(kernel), kernel, x, rois, batch), want, atol=1e-4, err_msg=n.name)


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_index_outside_x_gives_zeros(mode, function):
    c = case(mode, "half_pixel", 0, F32, (2, 3, 6, 7), 4, (2, 2), 1.0)
    x, rois, _ = case_inputs(c)
    batch = np.array([0, 2, -1, 1], np.int64)
    got = launch(function(c.kernel()), c.kernel(), x, rois, batch)
    assert (got[1:3] == 0).all()
    keep = [0, 3]
    assert_matches(c, got[keep], reference(c, x, rois[keep], batch[keep]))


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_a_detector_head_on_the_gpu_equals_the_reference(tmp_path, precision, tolerance):
    from rtxrt.aot import build_rtxir
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.format import read_rtxir

    rng = np.random.default_rng(1)
    model = detector_head()
    build_rtxir(model, tmp_path / "head.rtxir", AotOptions(precision=precision))
    build_rtxir(model, tmp_path / "reference.rtxir", AotOptions(precision="fp32"))
    session = rtxrt.Session(tmp_path / "head.rtxir", cache_dir=tmp_path / "cache", progress=False)
    reference_run = ReferenceExecutor(read_rtxir(tmp_path / "reference.rtxir"))
    for _ in range(2):  # the second run replays the captured graph on new boxes
        inputs = head_feeds(rng)
        got = session.run(None, inputs)[0]
        assert session.on_gpu and session.stats["host_nodes"] == []
        want = reference_run.run(inputs)["scores"]
        assert np.linalg.norm(got - want) <= tolerance * np.linalg.norm(want)


# ---------------------------------------------------------------- helpers (one CuPy launch)


def launch(function, kernel: KernelSource, x: np.ndarray, rois: np.ndarray, batch: np.ndarray,
           blocks: int | None = None) -> np.ndarray:
    """Runs ``kernel`` on X (as stored), the rois and batch indices into a NaN-filled Y, its
    dims passed as int arguments after the pointers; returns Y as stored."""
    import cupy

    (out,) = kernel.outputs
    bits, nan = NAN_BITS[out.dtype]
    y = cupy.full(out.shape, nan, dtype=bits)
    args = (cupy.asarray(device_view(x)), cupy.asarray(device_view(rois)), cupy.asarray(batch), y,
            *(np.int32(d) for d in kernel.dims))
    function((kernel.launch.grid() if blocks is None else blocks,), (kernel.launch.block,), args)
    cupy.cuda.get_current_stream().synchronize()
    return y.get().view(storage(out.dtype))
