"""Generated Resize kernels run on the fake device (tests/fake_gpu: the interpreter runs the
grid-stride kernels; reading outside X or leaving an output unwritten faults) and agree with
the reference backend, as tests/backends/cuda/test_gpu_spatial.py checks them on a GPU: every
Resize case of the catalogue (tests/backends/cuda/test_spatial_codegen.py CASES: nearest and
linear, then cubic up and down with a = -0.75 and -0.5, exclude_outside, antialias, each
coordinate transform, keep_aspect_ratio_policy, tf_crop_and_resize with rois partly outside
and extrapolation_value, both layouts, fp32/fp16/bf16), with the GPU test's inputs and
tolerances (nearest exact; fp32 1e-5, fp16 1e-3, bf16 1e-2). Then models: a bicubic upsample
after a conv and a TF-style crop-and-resize plan wholly on the GPU for sm_86 and run through
the Engine on the fake device as the reference does.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.ops.resize_source import resize_kernel
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.engine import check_model, cublas_tactic
from tests.fake_gpu.kernels import run_kernel
from tests.helpers import make_model

from .test_gpu_spatial import compare, host_inputs, logical, physical_inputs, reference
from .test_spatial_codegen import CASES, Case

RESIZES = [c for c in CASES if c.op == "Resize"]
F = TensorProto.FLOAT


def run_fake(case: Case, grid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The case's kernel on the fake device, and the reference, on the GPU test's inputs."""
    kernel = case.kernel()
    arrays = host_inputs(case)
    (stored,) = run_kernel(FakeDevice(32 << 20), kernel, physical_inputs(case, kernel, arrays), grid=grid)
    return logical(case, stored), reference(case, arrays)


@pytest.mark.parametrize("case", RESIZES, ids=lambda c: c.id)
def test_kernel_on_the_fake_device_matches_the_reference_backend(case: Case):
    compare(case, *run_fake(case))


def test_a_cubic_resize_of_a_batch_that_varies_has_one_source_right_at_every_batch():
    """In a generic plan the batch is a dim argument, as in nearest and linear kernels; the
    tap tables follow the image size, which is fixed here."""
    node = Node("Resize", ["x", "", "scales"], ["y"], {"mode": "cubic", "exclude_outside": 1}, name="up")
    kernels = []
    for n in (1, 3):
        batch = dim(n, "rtxd_i0_0", 1, 4)
        with dim_bindings({"rtxd_i0_0": n}):
            kernel = resize_kernel(node, [TensorType(DType.FLOAT32, (batch, 3, 5, 6))], (batch, 3, 10, 9),
                                   DType.FLOAT32, "NHWC", scales=[1, 1, 2, 1.5])
        kernels.append(kernel)
        x = np.random.default_rng(n).uniform(-1, 1, (n, 3, 5, 6)).astype(np.float32)
        device = FakeDevice(8 << 20)
        module = device.cupy.cuda.function.Module()
        module.load(kernel.source.encode())
        y = device.cupy.asarray(np.full((n, 10, 9, 3), np.nan, np.float32))
        args = (device.cupy.asarray(np.ascontiguousarray(np.moveaxis(x, 1, -1))), y, *(np.int32(d) for d in kernel.dims))
        module.get_function(kernel.name)((kernel.launch.grid(), 1, 1), (kernel.launch.block, 1, 1), args)
        want = find_kernel("Resize")(node, 21, None).run(x.astype(np.float64), None, np.array([1, 1, 2, 1.5], np.float32))
        np.testing.assert_allclose(np.moveaxis(y.get(), -1, 1), want, rtol=1e-5, atol=1e-6)
    assert kernels[0].source == kernels[1].source and "int rtxd_i0_0" in kernels[0].source


def bicubic_after_conv():
    """Conv 3x3 -> Resize cubic x2 (a = -0.5, exclude_outside, as TF exports bicubic) -> Relu."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1,
                              name="bicubic"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    return make_model(nodes, [("x", F, [2, 3, 6, 7])], [("y", F, [2, 4, 12, 14])], {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) / 3, "b": rng.standard_normal(4).astype(np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32)})


def crop_and_resize():
    """A TF detector's crop: Resize tf_crop_and_resize (bilinear) of a box reaching past the
    image, to 5x6, extrapolation_value 10; then a cubic crop of the same box."""
    nodes = [helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="linear", extrapolation_value=10.0,
                              coordinate_transformation_mode="tf_crop_and_resize", name="crop"),
             helper.make_node("Resize", ["x", "roi", "", "sizes"], ["z"], mode="cubic",
                              coordinate_transformation_mode="tf_crop_and_resize", name="crop_cubic")]
    return make_model(nodes, [("x", F, [1, 3, 8, 9])], [("y", F, [1, 3, 5, 6]), ("z", F, [1, 3, 5, 6])], {
        "roi": np.array([0, 0, -0.1, 0.3, 1, 1, 0.8, 1.2], np.float32), "sizes": np.array([1, 3, 5, 6], np.int64)})


MODELS = {"bicubic_after_conv": (bicubic_after_conv, (2, 3, 6, 7)), "crop_and_resize": (crop_and_resize, (1, 3, 8, 9))}


@pytest.mark.parametrize("name", MODELS)
def test_the_model_plans_wholly_on_the_gpu_for_sm_86(name: str):
    make, shape = MODELS[name]
    report = plan_coverage(compile_onnx(make().SerializeToString()), {"x": shape}, "sm_86")
    assert report.host_nodes == [], [(h.node, h.why) for h in report.host_nodes]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_the_model_on_the_fake_device_matches_the_reference(monkeypatch, name: str, precision: str):
    make, shape = MODELS[name]
    device = FakeDevice().install(monkeypatch)
    feeds = [{"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)} for seed in (0, 1)]
    runs = check_model(device, make(), feeds, precision, prefer=cublas_tactic)  # the conv's GEMM: cuBLAS, emulated
    resized = [p for p in runs[0].engine.final.programs if p.label == "resize"]
    assert len(resized) == {"bicubic_after_conv": 1, "crop_and_resize": 2}[name]
