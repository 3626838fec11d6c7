"""Generated data movement and pooling kernels on the GPU agree with the reference backend.

Runs every case of tests/backends/cuda/test_data_movement_codegen.py: compiled with NVRTC for the
probed GPU's arch, launched on fresh random inputs (seeded per case, never zeros; Gather
indices cover the whole axis, negative ones included) into outputs poisoned with NaN bytes
(0xFF), so an element the kernel never writes shows up; compared with the reference
backend's kernel for the same node (NHWC pools: the reference runs on the NCHW transpose).

Tolerances: data movement (Transpose, Concat, Slice, Gather, Expand, Tile, Cast) is
bit-exact. Pools: MaxPool and GlobalMaxPool pick an input value (exact in practice);
float32 rtol 1e-6 (atol 1e-6, for GlobalAveragePool whose sum order differs from numpy's
pairwise mean and can cancel towards 0); float16 rtol/atol 1e-3 and bfloat16 1e-2 (one ulp
of the storage type: both sides sum in fp32 and may round to neighbouring values).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from tests.backends.cuda.helpers import device_view, load_cubins
from tests.backends.cuda.test_data_movement_codegen import CASES, Case

pytestmark = pytest.mark.gpu

TOLERANCE = {DType.FLOAT32: 1e-6, DType.FLOAT16: 1e-3, DType.BFLOAT16: 1e-2}


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    from rtxrt.backends.cuda.device import probe

    arch = probe().arch
    kernels = {k.name: k.source for k in (case.kernel() for case in CASES)}
    return load_cubins(kernels, tmp_path_factory.mktemp("cubins"), arch)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(case: Case, modules):
    kernel = case.kernel()
    arrays = random_inputs(case, kernel)
    (got,) = launch(modules[kernel.name], kernel, arrays)
    want = reference(case, arrays)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    compare(got, want, kernel.outputs[0].dtype, case)


def test_a_grid_smaller_than_the_work_loops_over_all_of_it(modules):
    for case in (c for c in CASES if c.id in ("to_nhwc-float16", "GlobalAveragePool_1x3x56x56-float32-NCHW",
                                              "AveragePool_k3s1p1-float16-NCHW", "Concat_8_last-float32")):
        kernel = case.kernel()
        arrays = random_inputs(case, kernel)
        (got,) = launch(modules[kernel.name], kernel, arrays, grid=1)
        compare(got, reference(case, arrays), kernel.outputs[0].dtype, case)


# ---------------------------------------------------------------- helpers

def random_inputs(case: Case, kernel: KernelSource) -> list[np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    arrays = []
    for arg in kernel.inputs:
        if arg.name == "idx":  # Gather indices: anywhere on the axis, counted from either end
            size = kernel.inputs[0].shape[case.node.attrs.get("axis", 0)]
            arrays.append(rng.integers(-size, size, arg.shape).astype(arg.dtype.numpy))
        elif arg.dtype.is_float:
            values = rng.uniform(-3, 3, arg.shape).astype(arg.dtype.numpy)
            values[values == 0] = 1
            arrays.append(values)
        else:
            arrays.append(rng.integers(1, 120, arg.shape).astype(arg.dtype.numpy))
    return arrays


def launch(module, kernel: KernelSource, arrays: list[np.ndarray], grid: int | None = None) -> list[np.ndarray]:
    import cupy

    inputs = [cupy.asarray(device_view(a)) for a in arrays]
    outputs = []
    for arg in kernel.outputs:
        out = cupy.empty(arg.shape, device_view(np.empty(0, arg.dtype.numpy)).dtype)
        out.view(cupy.uint8).fill(0xFF)  # NaN for floats: unwritten elements cannot pass
        outputs.append(out)
    blocks = kernel.launch.grid() if grid is None else min(grid, kernel.launch.grid())
    if blocks:
        module.get_function(kernel.name)((blocks,), (kernel.launch.block,), (*inputs, *outputs))
    cupy.cuda.get_current_stream().synchronize()
    return [out.get().view(arg.dtype.numpy) for out, arg in zip(outputs, kernel.outputs)]


def reference(case: Case, arrays: list[np.ndarray]) -> np.ndarray:
    inputs = list(arrays)
    if case.layout == "NHWC":
        inputs[0] = np.moveaxis(inputs[0], -1, 1)
    result = find_kernel(case.node.op_type)(case.node, case.opset, None).run(*inputs, *case.constants)
    result = result[0] if isinstance(result, (tuple, list)) else result
    return np.ascontiguousarray(np.moveaxis(result, 1, -1) if case.layout == "NHWC" else result)


def compare(got: np.ndarray, want: np.ndarray, stored: DType, case: Case) -> None:
    if case.exact:  # bit for bit, NaN bytes included
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), case.id
        return
    assert not np.isnan(got.astype(np.float64)).any(), f"{case.id}: unwritten (NaN) outputs"
    tol = TOLERANCE[stored]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol, err_msg=case.id)
