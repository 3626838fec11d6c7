"""Generated InstanceNormalization/GroupNormalization, Resize, ConvTranspose and pooling
kernels on the GPU agree with the reference backend.

Runs the catalogue of tests/backends/cuda/test_spatial_codegen.py (the UNet's cases, odd sizes, both
layouts, fp32/fp16/bf16 storage; Resize cubic up and down with a = -0.75 and -0.5,
exclude_outside, antialias, each coordinate transform, keep_aspect_ratio_policy, and
tf_crop_and_resize with rois partly outside and extrapolation_value in each mode;
ConvTranspose over 1, 2 and 3 spatial axes with groups, strides, dilations, pads,
output_padding and bias): each kernel is compiled with NVRTC for
the probed GPU's arch and launched on fresh random inputs (seeded per case, uniform, never
zeros; X of the normalizations has a mean of 0.5, so a missing mean subtraction shows;
ConvTranspose weights are scaled by 1/sqrt(fan-in) so that results are O(1)) into an output
poisoned with NaN, so an element no thread wrote fails the comparison. NHWC cases get X
transposed to channels-last, packed weights (``weight_layout`` NHWC) come from
``pack_conv_transpose_weights``, and Y is transposed back. The reference backend runs on the
same stored values widened to float64 (GroupNormalization still stashes in float32, as its
``stash_type`` says).

Then the pooling catalogue of tests/backends/cuda/test_nd_spatial_codegen.py (MaxPool and
AveragePool over 1-D, 2-D and 3-D inputs with ceil_mode, count_include_pad, dilations and
auto_pad; MaxPool's Indices in both storage orders, channels-first and channels-last; 3-D
global pools), its Indices poisoned with INT64_MIN; and that file's models (a 3-D UNet's
ConvTranspose steps, a video classifier's 3-D pools, SegNet-style MaxPool with Indices after
channels-last convs or not) through a Session, every node on the GPU.

Tolerances, as check_close applies them (‖Y − ref‖/‖ref‖ < tol, and per element
|Y − ref| <= tol · (|ref| + rms(ref))):
- Resize nearest, MaxPool's Y and Indices, GlobalMaxPool: exact (the kernel copies the
  stored bits the reference picks, the first of equal maxima, and computes its index;
  tf_crop_and_resize's extrapolation values are exact in every storage type).
- float32: 1e-5 (fp32 statistics and sums against float64; a few ulp). Resize linear and
  cubic: float32 weights (each within 2^-24 of the reference's float64 weight, their
  magnitudes summing to less than 2 along an axis) and fp32 sums of at most a few dozen taps.
- float16 1e-3 and bfloat16 1e-2: one rounding to the storage type (half an ulp: 4.9e-4 and
  3.9e-3 relative) on top of fp32 arithmetic (Resize cubic too: its result, overshoot
  included, is rounded once).
- GroupNormalization in float16 2e-3 and bfloat16 2e-2: like the reference, the kernel
  rounds the normalized value, its product with the scale, and the sum with the bias, each
  to the storage type; against float64 that is up to three half-ulps of |n·scale| <= |Y| + 1
  (|bias| <= 1), i.e. 1.5e-3·|Y| + 1e-3 for fp16, 1.2e-2·|Y| + 7.8e-3 for bf16, inside
  tol · (|Y| + rms(Y)) with rms(Y) ≈ 0.8.
- Models through a Session: as the fake-device check (tests/fake_gpu/engine.py), relative to
  each output's largest magnitude, fp32 1e-5 and fp16 1e-2 (fp16 storage rounds every stored
  value, and the ConvTranspose steps sum O(10) products of them). Indices (``check_indices``):
  exact where the pool reads the model's input (a 1/8 grid, which fp16 holds exactly);
  after convs, whose rounding (TF32, fp16) may reorder near-equal values, each Index must
  point at a value within that tolerance of the reference's maximum.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.conv_transpose_source import pack_conv_transpose_weights
from rtxrt.backends.cuda.compile.nvrtc import compile_many

from .helpers import check_close, device_view, storage
from .test_nd_spatial_codegen import (
    MODELS,
    POOL_CASES,
    PoolCase,
    check_indices,
    compare_pool,
    feeds,
    pool_input,
    pool_logical,
    pool_reference,
    pool_stored,
)
from .test_spatial_codegen import CASES, Case

pytestmark = pytest.mark.gpu

F32, F16, BF16 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16
TOLERANCE = {F32: 1e-5, F16: 1e-3, BF16: 1e-2}
GROUP_NORM_TOLERANCE = {F32: 1e-5, F16: 2e-3, BF16: 2e-2}
SESSION_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2}
NAN_BITS = {F32: (np.uint32, 0x7FC00000), F16: (np.uint16, 0x7E00), BF16: (np.uint16, 0x7FC0),
            DType.INT64: (np.int64, -2**63)}  # (an index no window gives)
SMALL_GRID = {"InstanceNorm-unet-1x4x16384-NCHW-float32": 3, "InstanceNorm-2x37x7x9-NHWC-float32": 1,
              "GroupNorm21_g8-2x40x7x9-NHWC-bfloat16": 3, "Resize-linear_half_pixel_x2-1x32x32x32-NHWC-bfloat16": 5,
              "Resize-cubic_half_pixel_x2-1x5x8x8-NHWC-float16": 2,
              "Resize-crop_cubic_tf-2x5x9x8-NHWC-float16": 3,  # an extrapolated element's continue: the next one
              "ConvTranspose-odd_s2x3_pads_outpad_dil-NHWC-wNHWC-float32": 7,
              "ConvTranspose-3d_group3_s213_dil_pads_outpad-NCHW-wNHWC-float16": 2}
POOL_SMALL_GRID = {"MaxPool-r3d_stem_col_major-2x4x5x9x9-NCHW-float32-indices": 2,
                   "MaxPool-k3s2_col_major-2x33x7x9-NHWC-bfloat16-indices": 3,
                   "AveragePool-k3s2p1_incl_ceil-2x4x5x9x8-NCHW-float32": 1}


@pytest.fixture(scope="module")
def functions(tmp_path_factory):
    import cupy

    from rtxrt.backends.cuda.device import probe

    kernels = {k.name: k.source for k in (c.kernel() for c in [*CASES, *POOL_CASES])}
    folder = tmp_path_factory.mktemp("spatial_cubins")
    loaded = {}
    for name, cubin in compile_many(kernels.items(), probe().arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path)).get_function(name)
    return loaded


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(case: Case, functions):
    kernel = case.kernel()
    arrays = host_inputs(case)
    got = logical(case, launch(functions[kernel.name], kernel, physical_inputs(case, kernel, arrays)))
    compare(case, got, reference(case, arrays))


@pytest.mark.parametrize("case_id, grid", SMALL_GRID.items())
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id, grid, functions):
    case = next(c for c in CASES if c.id == case_id)
    kernel = case.kernel()
    assert kernel.launch.grid() > grid
    arrays = host_inputs(case)
    got = logical(case, launch(functions[kernel.name], kernel, physical_inputs(case, kernel, arrays), grid))
    compare(case, got, reference(case, arrays))


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: c.id)
def test_pool_kernel_matches_the_reference_backend(case: PoolCase, functions):
    kernel = case.kernel()
    x = pool_input(case)
    got = launch_all(functions[kernel.name], kernel, [pool_stored(case, x)])
    compare_pool(case, pool_logical(case, got), pool_reference(case, x))


@pytest.mark.parametrize("case_id, grid", POOL_SMALL_GRID.items())
def test_a_pool_grid_smaller_than_the_work_loops_over_all_of_it(case_id, grid, functions):
    case = next(c for c in POOL_CASES if c.id == case_id)
    kernel = case.kernel()
    assert kernel.launch.grid() > grid
    x = pool_input(case)
    got = launch_all(functions[kernel.name], kernel, [pool_stored(case, x)], grid)
    compare_pool(case, pool_logical(case, got), pool_reference(case, x))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_a_model_through_a_session_matches_the_reference(tmp_path, name, precision):
    import rtxrt
    from rtxrt.aot import compile_onnx
    from rtxrt.aot.options import AotOptions
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.frontend.onnx_import import load_onnx

    make, shape = MODELS[name]
    proto = make()
    session = rtxrt.Session(compile_onnx(proto, AotOptions(precision=precision)), cache_dir=tmp_path, progress=False)
    names = [o.name for o in proto.graph.output]
    for seed in (0, 1):
        inputs = feeds(shape, seed)
        want = ReferenceExecutor(load_onnx(proto)).run(inputs)
        for output, result in zip(names, session.run(None, inputs)):
            got, ref = np.asarray(result, np.float64), np.asarray(want[output], np.float64)
            assert got.shape == ref.shape, (name, output, got.shape, ref.shape)
            if output == "indices":
                check_indices(make(), inputs, np.asarray(result), SESSION_TOLERANCE[precision])
            else:
                scale = max(1.0, float(np.abs(ref).max()))
                np.testing.assert_allclose(got, ref, rtol=SESSION_TOLERANCE[precision],
                                           atol=SESSION_TOLERANCE[precision] * scale, err_msg=f"{name} {precision}")
    assert session.stats["host_nodes"] == [], session.stats["host_nodes"]


# ---------------------------------------------------------------- helpers (numpy, then one CuPy launch)


def host_inputs(case: Case) -> list[np.ndarray]:
    """The node's tensor inputs (logical layout, storage dtype): X, then scale and bias or
    W and B; never zeros."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))

    def values(shape, scale=1.0, offset=0.0):
        v = (rng.uniform(-1.0, 1.0, shape) * scale + offset).astype(storage(case.dtype))
        v[v == 0] = storage(case.dtype).type(scale)
        return v

    shapes = [tuple(t.shape) for t in case.inputs]
    if case.op == "Resize":
        return [values(shapes[0])]
    if case.op == "ConvTranspose":
        x, w = shapes[:2]
        fan_in = x[1] // int(case.node.attr("group", 1)) * math.prod(w[2:])
        return [values(x), values(w, 1 / math.sqrt(fan_in)), *(values(s) for s in shapes[2:])]
    return [values(shapes[0], 1.0, 0.5), values(shapes[1]), values(shapes[2])]


def physical_inputs(case: Case, kernel: KernelSource, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The kernel's input buffers, as stored: X channels-last for NHWC, W packed for a
    weight_layout NHWC."""
    stored = list(arrays)
    if case.layout == "NHWC":
        stored[0] = np.moveaxis(stored[0], 1, -1)
    if case.op == "ConvTranspose" and case.weight_layout == "NHWC":
        stored[1] = pack_conv_transpose_weights(stored[1])
    for arg in kernel.inputs:
        assert stored[arg.index].shape == arg.shape, (arg.name, stored[arg.index].shape, arg.shape)
    return [np.ascontiguousarray(stored[arg.index]) for arg in kernel.inputs]


def launch(function, kernel: KernelSource, inputs: list[np.ndarray], grid: int | None = None) -> np.ndarray:
    """Runs a one-output ``kernel`` on ``inputs`` into a NaN-filled output; returns it as stored."""
    (y,) = launch_all(function, kernel, inputs, grid)
    return y


def launch_all(function, kernel: KernelSource, inputs: list[np.ndarray], grid: int | None = None) -> list[np.ndarray]:
    """Runs ``kernel`` on ``inputs`` into poisoned outputs (NaN, INT64_MIN); returns them as stored."""
    import cupy

    outputs = [cupy.full(out.shape, NAN_BITS[out.dtype][1], dtype=NAN_BITS[out.dtype][0]) for out in kernel.outputs]
    buffers = [cupy.asarray(device_view(a)) for a in inputs]
    function((kernel.launch.grid() if grid is None else grid,), (kernel.launch.block,), (*buffers, *outputs))
    cupy.cuda.get_current_stream().synchronize()
    return [y.get().view(storage(out.dtype)) for y, out in zip(outputs, kernel.outputs)]


def logical(case: Case, stored: np.ndarray) -> np.ndarray:
    return np.moveaxis(stored, -1, 1) if case.layout == "NHWC" else stored


def reference(case: Case, arrays: list[np.ndarray]) -> np.ndarray:
    """The reference backend's result for the stored values, computed in float64."""
    wide = [a.astype(np.float64) for a in arrays]
    result = find_kernel(case.op)(case.node, case.opset, None).run(*wide, *case.reference_extras())
    assert result.dtype == np.float64 and result.shape == case.output_shape(), (result.dtype, result.shape)
    return result


def compare(case: Case, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    if case.op == "Resize" and case.node.attr("mode", "nearest") == "nearest":
        np.testing.assert_array_equal(got.astype(np.float64), want, err_msg=case.id)
        return
    tolerance = GROUP_NORM_TOLERANCE if case.op == "GroupNormalization" else TOLERANCE
    check_close(got, want, tolerance[case.dtype], case.id, "Y")
