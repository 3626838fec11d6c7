"""Generated elementwise kernels on the GPU agree with the reference backend.

Runs every kernel of the compile test's catalogue (tests/backends/cuda/test_codegen_compile.py):
compiled with NVRTC for the probed GPU's arch, loaded as a cubin with CuPy, launched on fresh
random inputs (seeded per case; zeros only where a case's range starts at 0, as a 0/1 mask),
and compared with the reference backend's kernel for the same node (``find_kernel``).

Tolerances, by the stored output type:
- bool and integers: exact;
- float32 and float64: rtol 1e-6 and atol 1e-6. Arithmetic, comparisons, rounding and the
  activations built from them are bit-exact (no FMA contraction, IEEE division and square
  root); libm functions (exp, erf, tanh, pow, ...) differ from numpy's by a few ulp (CUDA's
  documented bounds are 1-4 ulp, 1e-6 is about 8), and atol covers results that cancel to
  near zero (1 + tanh(u) in tanh-Gelu at negative inputs) whose error is a few ulp of 1;
- float16: rtol 1e-3 and atol 1e-3 (one fp16 ulp is at most 9.8e-4 relative: the fp32
  results of the two sides may round to neighbouring fp16 values);
- bfloat16: rtol 1e-2 and atol 1e-2 (one bf16 ulp is at most 7.8e-3 relative).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.backends.cuda.compile.nvrtc import compile_cubin
from tests.backends.cuda.helpers import device_view, load_cubins
from tests.backends.cuda.test_codegen_compile import CASES, Case

pytestmark = pytest.mark.gpu

TOLERANCE = {DType.FLOAT32: 1e-6, DType.FLOAT64: 1e-6, DType.FLOAT16: 1e-3, DType.BFLOAT16: 1e-2}
FLOAT_RANGE, SIGNED_RANGE, UNSIGNED_RANGE = (-3.0, 3.0), (-50, 50), (1, 100)


@pytest.fixture(scope="module")
def device():
    from rtxrt.backends.cuda.device import probe

    return probe()


@pytest.fixture(scope="module")
def modules(device, tmp_path_factory):
    """Every catalogue kernel compiled for this GPU and loaded from its cubin file."""
    kernels = {k.name: k.source for k in (case.kernel() for case in CASES)}
    return load_cubins(kernels, tmp_path_factory.mktemp("cubins"), device.arch)


def test_probe_describes_this_gpu(device):
    from cupy.cuda import runtime

    from rtxrt.backends.cuda.device import find_gpu

    props = runtime.getDeviceProperties(0)
    assert device.compute_capability == (props["major"], props["minor"])
    assert device.arch == f"sm_{props['major']}{props['minor']}"  # NVRTC 12.9 knows every current GPU
    assert device.sm_count > 0 and device.total_memory > 2**30
    assert find_gpu() == device.describe()
    assert all(v.count(".") == 1 for v in (device.driver_version, device.runtime_version, device.nvrtc_version))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend(case, modules):
    kernel = case.kernel()
    arrays = random_inputs(case)
    got = launch(modules[kernel.name], kernel, arrays)
    want = reference(case, arrays)
    assert len(got) == len(want)
    for arg, g, w in zip(kernel.outputs, got, want):
        if case.output_dtypes is None:  # the kernel's output types are the reference's
            assert g.dtype == w.dtype, (arg.name, g.dtype, w.dtype)
        assert g.shape == w.shape, (arg.name, g.shape, w.shape)
        compare(g, w, arg.dtype, case.id)


def test_a_grid_smaller_than_the_work_loops_over_all_of_it(modules):
    case = next(c for c in CASES if c.id == "groupnorm_affine_relu-float16")
    kernel = case.kernel()
    arrays = random_inputs(case)
    (got,) = launch(modules[kernel.name], kernel, arrays, grid=3)
    compare(got, reference(case, arrays)[0], DType.FLOAT16, case.id)


def test_more_than_two_billion_elements_use_64_bit_indexes(device):
    """(2, 2**30 + 3) + (2, 1) in uint8: the loop index and the broadcast offsets pass 2**31."""
    import cupy

    u8 = DType.UINT8
    shape = (2, 2**30 + 3)
    kernel = elementwise_kernel(Node("Add", ["a", "b"], ["c"]), [TensorType(u8, shape), TensorType(u8, (2, 1))])
    assert "unsigned long long i" in kernel.source
    module = cupy.cuda.function.Module()
    module.load(compile_cubin(kernel.source, kernel.name, device.arch))
    a = cupy.random.randint(1, 256, size=shape, dtype=cupy.uint8)
    b = cupy.asarray(np.array([[7], [250]], np.uint8))
    out = cupy.empty(shape, cupy.uint8)
    module.get_function(kernel.name)((kernel.launch.grid(),), (kernel.launch.block,), (a, b, out))
    assert bool((out == a + b).all())
    del a, out
    cupy.get_default_memory_pool().free_all_blocks()


# ---------------------------------------------------------------- helpers

def random_inputs(case: Case) -> list[np.ndarray | None]:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    ranges = list(case.ranges) + [None] * (len(case.inputs) - len(case.ranges))
    return [None if t is None else random_array(rng, t, r) for t, r in zip(case.inputs, ranges)]


def random_array(rng: np.random.Generator, t: TensorType, bounds: tuple[float, float] | None) -> np.ndarray:
    shape = tuple(int(d) for d in t.shape)
    if t.dtype == DType.BOOL:
        return rng.random(shape) < 0.5
    if t.dtype.is_float:
        low, high = bounds or FLOAT_RANGE
        values = rng.uniform(low, high, shape).astype(t.dtype.numpy)
    else:
        low, high = bounds or (SIGNED_RANGE if np.dtype(t.dtype.numpy).kind == "i" else UNSIGNED_RANGE)
        values = rng.integers(int(low), int(high) + 1, shape).astype(t.dtype.numpy)
    if low != 0:  # never zeros, unless the range asks for them
        values[values == 0] = np.asarray(high).astype(values.dtype)
    return values


def launch(module, kernel: KernelSource, arrays: list[np.ndarray | None], grid: int | None = None) -> list[np.ndarray]:
    import cupy

    inputs = [cupy.asarray(device_view(a)) for a in arrays if a is not None]
    outputs = [cupy.empty(arg.shape, device_view(np.empty(0, arg.dtype.numpy)).dtype) for arg in kernel.outputs]
    blocks = kernel.launch.grid() if grid is None else grid
    if blocks:
        module.get_function(kernel.name)((blocks,), (kernel.launch.block,), (*inputs, *outputs))
    cupy.cuda.get_current_stream().synchronize()
    return [out.get().view(arg.dtype.numpy) for out, arg in zip(outputs, kernel.outputs)]


def reference(case: Case, arrays: list[np.ndarray | None]) -> list[np.ndarray]:
    node = case.node
    inputs = list(arrays)
    if node.domain:  # a body computes in its own (logical) types
        body = node.attrs["body"]
        real = [a for a in arrays if a is not None]
        inputs = [a.astype(body.types[n].dtype.numpy) if n in body.types else a for n, a in zip(body.inputs, real)]
    kernel = find_kernel(node.op_type, node.domain)(node, case.opset, body_runner(case.opset))
    result = kernel.run(*inputs)
    return list(result) if isinstance(result, (tuple, list)) else [result]


def body_runner(opset: int):
    def run(graph: Graph, feeds: dict, outer) -> list[np.ndarray]:
        results = ReferenceExecutor(Model(graph, {"": opset})).run(feeds)
        return [results[o] for o in graph.outputs]
    return run


def compare(got: np.ndarray, want: np.ndarray, stored: DType, what: str) -> None:
    if not stored.is_float:
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=what)
        return
    tol = TOLERANCE[stored]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol,
                               equal_nan=True, err_msg=what)
