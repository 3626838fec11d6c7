"""The fake GPU the CPU tests run the CUDA backend on (tests/fake_gpu): what it models and what
it refuses. A fake that accepted what a GPU refuses would let plumbing bugs through, so each
refusal here is one a real device (or NVRTC) makes: copies of the wrong kind, accesses
outside an allocation or misaligned, reads of bytes nothing wrote, work on another stream
during a graph capture, a missing kernel name, a launch past ``__launch_bounds__``, a
template argument that cannot be deduced. Racing writes are refused too: their result
depends on thread order."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from rtxrt.backends.cuda.ops.gemm_simt_source import simt_gemm_kernel
from rtxrt.backends.cuda.ops.gemm_source import GemmProblem
from rtxrt.ir.dtypes import DType
from tests.fake_gpu.cuda_c import CompileError, DeviceFault, NotInterpretable, convert, literal
from tests.fake_gpu.cublas import FakeCublas
from tests.fake_gpu.device import D2D, D2H, H2D, CUDADriverError, FakeDevice


@pytest.fixture
def device(monkeypatch):
    return FakeDevice(4 << 20).install(monkeypatch)


def kernel(body: str, params: str = "const float* __restrict__ x, float* __restrict__ y", n: int = 8,
           head: str = "") -> str:
    return (f'{head}\nextern "C" __global__ void __launch_bounds__(256) k({params}) {{\n'
            f"  for (unsigned int i = blockIdx.x * (unsigned int)blockDim.x + threadIdx.x; i < {n}u;"
            f" i += (unsigned int)gridDim.x * blockDim.x) {{\n    {body}\n  }}\n}}\n")


def launch(device, source: str, *arrays, block: int = 256, grid: int = 1):
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(source.encode())
    module.get_function("k")((grid, 1, 1), (block, 1, 1), arrays)


def test_the_fake_replaces_cupy_for_one_test(device):
    import cupy

    assert cupy is device.cupy and sys.modules["cupy.cuda.function"].Module
    x = cupy.asarray(np.arange(4, dtype=np.float32))
    assert x.data.ptr == device.memory.find(x.data.ptr)[0].ptr  # a real address in the fake memory
    np.testing.assert_array_equal(x.get(), np.arange(4, dtype=np.float32))


def test_a_launch_is_recorded_with_what_each_pointer_points_into(device):
    cupy = device.cupy
    x, y = cupy.asarray(np.arange(8, dtype=np.float32)), cupy.empty(8, np.float32)
    launch(device, kernel("y[i] = x[i] * 2.0f;"), x, y)
    (record,) = device.launches
    assert (record.kernel, record.grid, record.block, record.executed) == ("k", (1, 1, 1), (256, 1, 1), True)
    assert [(a.ptr, offset) for a, offset in record.where] == [(x.data.ptr, 0), (y.data.ptr, 0)]
    np.testing.assert_array_equal(y.get(), np.arange(8) * 2.0)


@pytest.mark.parametrize("body, fault", [
    ("y[i] = x[i + 1];", "out of bounds"),  # reads one past the end
    ("y[i] = x[i] + y[i];", "nothing wrote"),  # y was never written
    ("y[0] = x[i];", "race"),  # every lane writes y[0], with different values
])
def test_faults_a_gpu_or_a_correct_plan_would_not_allow(device, body, fault):
    cupy = device.cupy
    x, y = cupy.asarray(np.arange(8, dtype=np.float32)), cupy.empty(8, np.float32)
    with pytest.raises(DeviceFault, match=fault):
        launch(device, kernel(body), x, y)


def test_a_branch_not_taken_reads_nothing(device):
    """Lanes are masked as threads are: the out-of-range read is never made."""
    cupy = device.cupy
    x, y = cupy.asarray(np.arange(8, dtype=np.float32)), cupy.empty(8, np.float32)
    launch(device, kernel("y[i] = i + 1 < 8u ? x[i + 1] : -1.0f; if (i == 0) { y[i] = 42.0f; }"), x, y)
    np.testing.assert_array_equal(y.get(), [42, 2, 3, 4, 5, 6, 7, -1])


def test_launches_the_device_would_refuse(device):
    cupy = device.cupy
    x, y = cupy.asarray(np.zeros(8, np.float32)), cupy.empty(8, np.float32)
    with pytest.raises(DeviceFault, match="launch_bounds"):
        launch(device, kernel("y[i] = x[i];"), x, y, block=512)
    with pytest.raises(DeviceFault, match="invalid launch"):
        launch(device, kernel("y[i] = x[i];"), x, y, grid=0)
    with pytest.raises(DeviceFault, match="arguments"):
        launch(device, kernel("y[i] = x[i];"), x)
    module = cupy.cuda.function.Module()
    module.load(kernel("y[i] = x[i];").encode())
    with pytest.raises(CUDADriverError, match="NOT_FOUND"):
        module.get_function("rtx_not_there")


def test_code_nvrtc_would_reject_is_a_compile_error(device):
    cupy = device.cupy
    x, y = cupy.asarray(np.zeros(8, np.float32)), cupy.empty(8, np.float32)
    head = "template <typename T> __device__ T rtx_max(T a, T b) { return a >= b ? a : b; }"
    with pytest.raises(CompileError, match="deduced as both"):  # float and double
        launch(device, kernel("y[i] = rtx_max(x[i], 0.0);", head=head), x, y)
    with pytest.raises(CompileError, match="const"):
        launch(device, kernel("x[i] = 1.0f; y[i] = x[i];"), x, y)


def test_c_arithmetic_is_cs_not_numpys():
    assert literal("4294967295").dtype == np.int64 and literal("4294967295u").dtype == np.uint32
    assert literal("0x1.8p+1f").dtype == np.float32 and float(literal("0x1.8p+1f")) == 3.0
    assert convert(np.asarray(np.float32(np.nan)), np.dtype(np.int32)) == 0  # cvt.rzi.sat
    assert convert(np.asarray(np.float32(-3.0)), np.dtype(np.uint8)) == 0  # saturates, as the GPU
    assert convert(np.asarray(np.float32(3e9)), np.dtype(np.int32)) == 2**31 - 1


def test_the_interpreter_evaluates_unsigned_wrap_promotion_and_truncation(device):
    cupy = device.cupy
    x = cupy.asarray(np.array([-7, 7, -1, 3], np.int32))
    y = cupy.empty(4, np.int64)
    # int / int truncates; x < 5u compares as unsigned (true only for 3: -7 and -1 are huge);
    # signed chars promote to int before adding (128, not -128)
    body = "y[i] = (long long)(x[i] / 2) * 100 + (x[i] < 5u) * 10 + (signed char)127 + (signed char)1;"
    launch(device, kernel(body, "const int* __restrict__ x, long long* __restrict__ y", n=4), x, y)
    np.testing.assert_array_equal(y.get(), [-300 + 128, 300 + 128, 0 + 128, 100 + 10 + 128])


def test_memcpy_kinds_must_match_where_the_pointers_are(device):
    cupy = device.cupy
    host = np.arange(4, dtype=np.float32)
    d = cupy.cuda.alloc(16)
    cupy.cuda.runtime.memcpy(d.ptr, host.ctypes.data, 16, H2D)
    with pytest.raises(DeviceFault, match="kind device to device"):
        cupy.cuda.runtime.memcpy(d.ptr, host.ctypes.data, 16, D2D)
    with pytest.raises(DeviceFault, match="overrun"):
        cupy.cuda.runtime.memcpy(host.ctypes.data, d.ptr, 32, D2H)


def test_a_graph_capture_records_and_a_replay_reruns(device):
    cupy = device.cupy
    stream = cupy.cuda.Stream(non_blocking=True)
    x, y = cupy.asarray(np.arange(8, dtype=np.float32)), cupy.empty(8, np.float32)
    module = cupy.cuda.function.Module()
    module.load(kernel("y[i] = x[i] + 1.0f;").encode())
    fn = module.get_function("k")
    stream.begin_capture()
    fn((1, 1, 1), (256, 1, 1), (x, y), stream=stream)
    with pytest.raises(DeviceFault, match="while stream"):  # work on the legacy stream invalidates a capture
        fn((1, 1, 1), (256, 1, 1), (x, y))
    with pytest.raises(DeviceFault, match="synchronous"):
        cupy.cuda.runtime.memcpy(y.data.ptr, x.data.ptr, 32, D2D)
    graph = stream.end_capture()
    assert device.launches == [] and graph.descriptions == ["launch of k"]
    graph.launch(stream)
    graph.launch(stream)
    assert [r.replay for r in device.launches] == [True, True]
    np.testing.assert_array_equal(y.get(), np.arange(8) + 1.0)


def test_tiled_kernels_are_not_interpreted_but_still_recorded(monkeypatch):
    gemm = simt_gemm_kernel(GemmProblem(32, 32, 32, DType.FLOAT32))
    for opaque, raises in (("raise", True), ("skip", False)):
        device = FakeDevice(4 << 20, opaque=opaque)
        with monkeypatch.context() as m:
            cupy = device.install(m).cupy
            module = cupy.cuda.function.Module()
            module.load(gemm.source.encode())
            args = [cupy.cuda.alloc(32 * 32 * 4) for _ in gemm.args]
            call = lambda: module.get_function(gemm.name)(gemm.launch.grid, gemm.launch.block, args)  # noqa: E731
            if raises:
                with pytest.raises(NotInterpretable):
                    call()
            else:
                call()
                (record,) = device.launches
                assert not record.executed and record.why_not


def test_the_fake_cublas_refuses_what_cublas_refuses_and_computes_row_major(device):
    cupy = device.cupy
    stream = cupy.cuda.Stream()
    blas = FakeCublas(device, stream)
    a = cupy.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = cupy.asarray(np.arange(12, dtype=np.float32).reshape(4, 3))  # stored [N, K]
    c = cupy.empty((2, 4), np.float32)
    blas.gemm(a.data.ptr, b.data.ptr, c.data.ptr, 2, 4, 3, dtype=np.float32, trans_b=True)
    np.testing.assert_allclose(c.get(), a.get() @ b.get().T)
    with pytest.raises(ValueError, match="ldc"):
        blas.gemm(a.data.ptr, b.data.ptr, c.data.ptr, 2, 4, 3, dtype=np.float32, trans_b=True, ldc=3)
