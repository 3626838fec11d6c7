"""Generated reduction kernels on the GPU agree with the reference backend.

Runs the compile test's catalogue (tests/backends/cuda/test_reduction_codegen.py): row kernels,
the strided ``columns`` and ``split`` kernels over other axes, and LayerNormalization with its
Mean and InvStdDev outputs (axis -1, -2 and 1 of 2-D to 4-D inputs in float32, float16 and
bfloat16, stash type float32; only Mean, only InvStdDev, both). Each kernel is compiled for
the probed GPU's arch, launched on fresh random inputs (seeded per case, never zeros; small
integers with ties, and NaNs, for the arg-reductions) into outputs poisoned with NaN (-1 for
indices), checked to have written every element of every output, and compared with the
reference backend's kernel for the same node (``find_kernel``), output by output, with the
tolerances the catalogue's module docstring gives (indices exactly; Mean and InvStdDev within
rtol 1e-5, atol 1e-6).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from tests.backends.cuda.helpers import load_cubins
from tests.backends.cuda.test_reduction_codegen import CASES, compare_outputs, poisoned, random_inputs, storage

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    from rtxrt.backends.cuda.device import probe

    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    return load_cubins(kernels, tmp_path_factory.mktemp("cubins"), probe().arch)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(case, modules):
    kernel = case.kernel()
    arrays = random_inputs(case)
    compare_outputs(launch(modules[kernel.name], kernel, arrays), kernel, case, arrays)


@pytest.mark.parametrize("case_id", [
    "Softmax-float32-3x5x67", "LayerNormalization-bfloat16-4x1500", "ArgMin_last-bfloat16-4x1500",
    "Softmax_axis1-float32-2x19x6x7", "ReduceLogSumExp_axes13-bfloat16-2x40x3x5-split",
    "ArgMax_nan-float32-3x50x4-columns", "ArgMin_nan_last-float32-3x50x4-split", "Softmax_axis1-float16-3x700x10-split",
    "LayerNormalization_stats_axis-1-float32-3x5x67", "LayerNormalization_stats_axis1-bfloat16-6x40x64",
])
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id, modules):
    case = next(c for c in CASES if c.id == case_id)
    kernel = case.kernel()
    arrays = random_inputs(case)
    compare_outputs(launch(modules[kernel.name], kernel, arrays, grid=1), kernel, case, arrays)


# ---------------------------------------------------------------- helpers

def device_view(array: np.ndarray) -> np.ndarray:
    """CuPy has no bfloat16: move its bits as uint16."""
    return array.view(np.uint16) if array.dtype == ml_dtypes.bfloat16 else np.ascontiguousarray(array)


def launch(module, kernel: KernelSource, arrays: list[np.ndarray], grid: int | None = None) -> list[np.ndarray]:
    """The kernel's outputs, in ``kernel.outputs`` order, each poisoned before the launch (an
    unwritten element shows) and viewed as its type."""
    import cupy

    inputs = [cupy.asarray(device_view(a)) for a in arrays]
    outs = [cupy.asarray(poisoned(a.dtype, tuple(int(d) for d in a.shape))) for a in kernel.outputs]
    blocks = kernel.launch.grid() if grid is None else grid
    if blocks:
        module.get_function(kernel.name)((blocks,), (kernel.launch.block,), (*inputs, *outs))
    cupy.cuda.get_current_stream().synchronize()
    return [out.get().view(storage(a.dtype)) for out, a in zip(outs, kernel.outputs)]
