"""Generated GridSample kernels on the GPU agree with the reference backend.

Runs the catalogue of tests/backends/cuda/test_grid_sample_codegen.py (each mode x padding mode x
align_corners x storage type; 4-D, 5-D and 3-D X; both X layouts; grids of each float type
reaching well outside [-1, 1]): each kernel is compiled with NVRTC for the probed GPU's arch
and launched on the catalogue's inputs (seeded per case; X never zero) into an output
poisoned with NaN bits, so an element no thread wrote fails the comparison. NHWC cases get X
channels-last and Y transposed back. The reference backend runs on the same stored values
widened to float64.

Tolerances (``assert_matches``): nearest is exact (the kernel copies the values the
reference picks: positions are float64 on both sides, ties round to even); the others within
one rounding to the storage type of max |Y|: float32 1e-5 (fp32 weights and blend against
float64), float16 1e-3 and bfloat16 1e-2 (half an ulp: 4.9e-4 and 3.9e-3).

Then, as on the fake device: a grid of fewer blocks than the work, shape-generic kernels (one
source, its dims passed as int arguments) at two shapes, NaN and far-away positions.
"""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType

from .helpers import KernelLoader, device_view, storage
from .test_grid_sample_codegen import (
    CASES,
    GENERIC,
    MODES,
    Case,
    assert_matches,
    case,
    case_inputs,
    generic_kernel,
    logical,
    physical,
    reference,
    special_grid,
)

pytestmark = pytest.mark.gpu

F32, F16, BF16 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16
NAN_BITS = {F32: (np.uint32, 0x7FC00000), F16: (np.uint16, 0x7E00), BF16: (np.uint16, 0x7FC0)}
SMALL_GRID = {"flow_warp-zeros-ac0-1x16x32x48-to-40x24-NCHW-float16-grid_float32-opset20": 3,
              "upsample-border-ac1-1x8x17x13-to-21x19-NHWC-float32-grid_float32-opset20": 1}


@pytest.fixture(scope="module")
def function(tmp_path_factory):
    """``function(kernel)``: the loaded kernel, compiled for the probed arch (the catalogue at
    once, others as they come)."""
    from rtxrt.backends.cuda.device import probe

    loader = KernelLoader(tmp_path_factory.mktemp("grid_sample_cubins"), probe().arch)
    loader.load([c.kernel() for c in CASES])
    return loader


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(c: Case, function):
    kernel = c.kernel()
    x, grid = case_inputs(c)
    got = logical(c, launch(function(kernel), kernel, physical(c, x), grid))
    assert_matches(c, got, reference(c, x, grid))


@pytest.mark.parametrize("case_id, blocks", SMALL_GRID.items())
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id, blocks, function):
    c = next(c for c in CASES if c.id == case_id)
    kernel = c.kernel()
    assert kernel.launch.grid() > blocks
    x, grid = case_inputs(c)
    got = logical(c, launch(function(kernel), kernel, physical(c, x), grid, blocks))
    assert_matches(c, got, reference(c, x, grid))


@pytest.mark.parametrize("n, dtype, layout, shapes", GENERIC,
                         ids=lambda v: v.attr("mode") if hasattr(v, "attr") else None)
def test_a_generic_kernel_is_right_at_every_shape(n, dtype, layout, shapes, function):
    kernels = [generic_kernel(n, shapes, at, dtype, layout) for at in range(len(shapes))]
    assert len({k.name for k in kernels}) == 1
    for (x_shape, grid_shape), kernel in zip(shapes, kernels):
        c = Case("generic", n, TensorType(dtype, x_shape), TensorType(F32, grid_shape), layout)
        x, grid = case_inputs(c)
        got = logical(c, launch(function(kernel), kernel, physical(c, x), grid))
        assert_matches(c, got, reference(c, x, grid))


@pytest.mark.parametrize("mode", MODES)
def test_nan_and_far_away_positions_give_nan_zero_or_the_edge(mode, function):
    """As on the fake device: a NaN position gives NaN (nearest under zeros padding: 0);
    ±1e30 gives 0 under zeros padding and the edge under border padding."""
    for padding in ("zeros", "border", "reflection"):
        c = case(mode, padding, 0, F32, (1, 2, 4, 5), (3, 4))
        kernel = c.kernel()
        x, grid = special_grid(c, [np.nan])
        got = launch(function(kernel), kernel, x, grid)
        if mode == "nearest" and padding == "zeros":
            assert (got == 0).all(), padding
        elif mode != "nearest":
            assert np.isnan(got).all(), padding
    zeros, border = (case(mode, padding, 1, F32, (1, 2, 4, 5), (3, 4)) for padding in ("zeros", "border"))
    x, grid = special_grid(zeros, [1e30, -1e30])
    assert (launch(function(zeros.kernel()), zeros.kernel(), x, grid) == 0).all()
    got = launch(function(border.kernel()), border.kernel(), x, grid)
    edges = grid.copy()
    edges[..., 0] = np.sign(grid[..., 0])
    assert_matches(border, got, reference(border, x, edges))


# ---------------------------------------------------------------- helpers (one CuPy launch)


def launch(function, kernel: KernelSource, x: np.ndarray, grid: np.ndarray, blocks: int | None = None) -> np.ndarray:
    """Runs ``kernel`` on X (as stored) and the grid into a NaN-filled Y, its dims passed as
    int arguments after the pointers; returns Y as stored."""
    import cupy

    (out,) = kernel.outputs
    bits, nan = NAN_BITS[out.dtype]
    y = cupy.full(out.shape, nan, dtype=bits)
    args = (cupy.asarray(device_view(x)), cupy.asarray(device_view(grid)), y, *(np.int32(d) for d in kernel.dims))
    function((kernel.launch.grid() if blocks is None else blocks,), (kernel.launch.block,), args)
    cupy.cuda.get_current_stream().synchronize()
    return y.get().view(storage(out.dtype))
