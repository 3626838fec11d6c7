"""Generated row-wise kernels on the GPU agree with the reference backend.

Runs the compile test's catalogue (tests/backends/cuda/test_reduction_codegen.py): each kernel is
compiled for the probed GPU's arch, launched on fresh random inputs (seeded per case, never
zeros) into outputs poisoned with NaN, checked to have written every element, and compared
with the reference backend's kernel for the same node (``find_kernel``).

Tolerances, by the stored type:
- float32: rtol 1e-5, atol 1e-6 (summation order and expf/logf differ from numpy's by a few
  ulp; the sums are over positive inputs, so order effects stay relative);
- float16: rtol 1e-3, atol 1e-3; bfloat16: rtol 1e-2, atol 1e-2 (one ulp; both sides compute
  in fp32 and round once);
- except LayerNormalization/RMSNormalization in float16/bfloat16, which round the normalized
  value to X's type before scale and bias (as ONNX does): where the fp32 values on the two
  sides round to neighbouring narrow values, the one-ulp step is multiplied by the scale and
  rounded again, so atol there is tol * (1 + 2 * max|scale|).
"""
from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from tests.backends.cuda.test_reduction_codegen import CASES, Case

pytestmark = pytest.mark.gpu

TOLERANCE = {DType.FLOAT32: (1e-5, 1e-6), DType.FLOAT16: (1e-3, 1e-3), DType.BFLOAT16: (1e-2, 1e-2)}
NORMS = ("LayerNormalization", "RMSNormalization")


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    import cupy

    from rtxrt.backends.cuda.device import probe

    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    folder = tmp_path_factory.mktemp("cubins")
    loaded = {}
    for name, cubin in compile_many(kernels.items(), probe().arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path))
    return loaded


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(case, modules):
    kernel = case.kernel()
    arrays = random_inputs(case)
    got = launch(modules[kernel.name], kernel, arrays)
    want = reference(case, arrays)
    compare(got, want, kernel, case, arrays)


@pytest.mark.parametrize("case_id", ["Softmax-float32-3x5x67", "LayerNormalization-bfloat16-4x1500"])
def test_a_grid_smaller_than_the_rows_loops_over_all_of_them(case_id, modules):
    case = next(c for c in CASES if c.id == case_id)
    kernel = case.kernel()
    arrays = random_inputs(case)
    got = launch(modules[kernel.name], kernel, arrays, grid=1)
    compare(got, reference(case, arrays), kernel, case, arrays)


# ---------------------------------------------------------------- helpers

def random_inputs(case: Case) -> list[np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    ranges = list(case.ranges) + [None] * (len(case.inputs) - len(case.ranges))
    arrays = []
    for t, bounds in zip(case.inputs, ranges):
        low, high = bounds or (-3.0, 3.0)
        values = rng.uniform(low, high, tuple(int(d) for d in t.shape)).astype(t.dtype.numpy)
        values[values == 0] = np.asarray(high).astype(values.dtype)  # never zeros
        arrays.append(values)
    return arrays


def device_view(array: np.ndarray) -> np.ndarray:
    """CuPy has no bfloat16: move its bits as uint16."""
    return array.view(np.uint16) if array.dtype == ml_dtypes.bfloat16 else np.ascontiguousarray(array)


NAN_BITS = {DType.FLOAT32: (np.uint32, 0x7FC00000), DType.FLOAT16: (np.uint16, 0x7E00),
            DType.BFLOAT16: (np.uint16, 0x7FC0)}


def launch(module, kernel: KernelSource, arrays: list[np.ndarray], grid: int | None = None) -> np.ndarray:
    import cupy

    inputs = [cupy.asarray(device_view(a)) for a in arrays]
    (out_arg,) = kernel.outputs
    bits, nan = NAN_BITS[out_arg.dtype]
    out = cupy.full(out_arg.shape, nan, dtype=bits)  # poisoned: an element never written stays NaN
    blocks = kernel.launch.grid() if grid is None else grid
    if blocks:
        module.get_function(kernel.name)((blocks,), (kernel.launch.block,), (*inputs, out))
    cupy.cuda.get_current_stream().synchronize()
    return out.get().view(out_arg.dtype.numpy)


def reference(case: Case, arrays: list[np.ndarray]) -> np.ndarray:
    inputs: list[np.ndarray] = list(arrays)
    if case.axes is not None:
        inputs.append(np.array(case.axes, np.int64))
    kernel = find_kernel(case.node.op_type)(case.node, case.opset, None)
    result = kernel.run(*inputs)
    return result[0] if isinstance(result, (tuple, list)) else result


def compare(got: np.ndarray, want: np.ndarray, kernel: KernelSource, case: Case, arrays: list[np.ndarray]) -> None:
    dtype = kernel.outputs[0].dtype
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    wide = got.astype(np.float64)
    assert not np.isnan(wide).any(), f"{case.id}: {int(np.isnan(wide).sum())} elements not written"
    rtol, atol = TOLERANCE[dtype]
    if case.node.op_type in NORMS and dtype != DType.FLOAT32:
        atol = atol * (1 + 2 * float(np.abs(arrays[1].astype(np.float64)).max()))
    np.testing.assert_allclose(wide, want.astype(np.float64), rtol=rtol, atol=atol, err_msg=case.id)
