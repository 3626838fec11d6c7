"""The cuBLAS binding without a GPU: status names in errors, the row-major to column-major
argument mapping (checked against numpy by emulating cuBLAS's column-major GEMM), dtype and
compute choices, and finding the library (a fake wheel layout; a clear error when nothing is
found)."""
from __future__ import annotations

import ctypes.util

import numpy as np
import pytest

from rtxrt.errors import RtxrtError
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.run import cublas
from rtxrt.backends.cuda.run.cublas import (
    CUBLAS_COMPUTE_32F,
    CUBLAS_COMPUTE_32F_FAST_TF32,
    CUBLAS_DEFAULT_MATH,
    CUBLAS_OP_N,
    CUBLAS_OP_T,
    CUBLAS_TF32_TENSOR_OP_MATH,
    CUDA_R_16BF,
    CUDA_R_16F,
    CUDA_R_32F,
    CublasError,
    CublasNotFoundError,
    check,
    column_major_call,
    gemm_types,
    wheel_candidates,
)

# ---------------------------------------------------------------- status -> message

@pytest.mark.parametrize("status, name", [
    (1, "CUBLAS_STATUS_NOT_INITIALIZED"), (3, "CUBLAS_STATUS_ALLOC_FAILED"),
    (7, "CUBLAS_STATUS_INVALID_VALUE"), (8, "CUBLAS_STATUS_ARCH_MISMATCH"),
    (11, "CUBLAS_STATUS_MAPPING_ERROR"), (13, "CUBLAS_STATUS_EXECUTION_FAILED"),
    (14, "CUBLAS_STATUS_INTERNAL_ERROR"), (15, "CUBLAS_STATUS_NOT_SUPPORTED"),
    (16, "CUBLAS_STATUS_LICENSE_ERROR"),
])
def test_status_names_the_function_and_status(status, name):
    with pytest.raises(CublasError) as info:
        check(status, "cublasGemmStridedBatchedEx")
    assert isinstance(info.value, RtxrtError)
    assert str(info.value).startswith(f"cublasGemmStridedBatchedEx failed: {name}")
    assert (info.value.function, info.value.status) == ("cublasGemmStridedBatchedEx", status)


def test_success_passes_and_unknown_status_is_named():
    check(0, "cublasCreate_v2")
    with pytest.raises(CublasError, match="cublasCreate_v2 failed: unknown cuBLAS status 99"):
        check(99, "cublasCreate_v2")


def test_arch_mismatch_explains():
    with pytest.raises(CublasError, match="compute capability 8.0"):
        check(8, "cublasGemmStridedBatchedEx")


# ---------------------------------------------------------------- row-major -> column-major

def emulate(call: cublas.GemmCall, memory: dict[int, np.ndarray]) -> None:
    """Run ``call`` as cuBLAS would: column-major operands read from flat buffers."""
    def view(buffer, offset, rows, cols, ld):  # column-major rows x cols, pitch ld
        return np.lib.stride_tricks.as_strided(
            buffer[offset:], shape=(rows, cols), strides=(buffer.itemsize, ld * buffer.itemsize))

    a_rows, a_cols = (call.m, call.k) if call.transa == CUBLAS_OP_N else (call.k, call.m)
    b_rows, b_cols = (call.k, call.n) if call.transb == CUBLAS_OP_N else (call.n, call.k)
    assert call.lda >= a_rows and call.ldb >= b_rows and call.ldc >= call.m
    for i in range(call.batch):
        a = view(memory[call.a], i * call.stride_a, a_rows, a_cols, call.lda)
        b = view(memory[call.b], i * call.stride_b, b_rows, b_cols, call.ldb)
        c = view(memory[call.c], i * call.stride_c, call.m, call.n, call.ldc)
        c[...] = (a if call.transa == CUBLAS_OP_N else a.T) @ (b if call.transb == CUBLAS_OP_N else b.T)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_mapping_matches_numpy(trans_a, trans_b, batch):
    rng = np.random.default_rng(7)
    m, n, k = 5, 4, 3
    a = rng.standard_normal((batch, k, m) if trans_a else (batch, m, k))
    b = rng.standard_normal((batch, n, k) if trans_b else (batch, k, n))
    c = np.full((batch, m, n), np.nan)
    call = column_major_call(1, 2, 3, m, n, k, trans_a=trans_a, trans_b=trans_b, batch=batch)
    emulate(call, {1: a.reshape(-1), 2: b.reshape(-1), 3: c.reshape(-1)})
    expected = (a.transpose(0, 2, 1) if trans_a else a) @ (b.transpose(0, 2, 1) if trans_b else b)
    np.testing.assert_allclose(c, expected, rtol=1e-12)


def test_mapping_swaps_operands_and_dimensions():
    call = column_major_call(0xA, 0xB, 0xC, 8, 16, 32, trans_b=True)
    assert call == cublas.GemmCall(transa=CUBLAS_OP_T, transb=CUBLAS_OP_N, m=16, n=8, k=32,
                                   a=0xB, lda=32, stride_a=16 * 32,
                                   b=0xA, ldb=32, stride_b=8 * 32,
                                   c=0xC, ldc=16, stride_c=8 * 16, batch=1)


def test_mapping_with_pitches_and_a_shared_operand():
    """Row pitches wider than the rows (views into bigger buffers) and stride 0 (one weight
    matrix for every batch entry)."""
    rng = np.random.default_rng(8)
    batch, m, n, k = 2, 3, 4, 5
    a_store = rng.standard_normal((batch, m, k + 2))  # lda = k + 2
    w = rng.standard_normal((k, n + 1))  # ldb = n + 1, shared
    c_store = np.zeros((batch, m, n + 3))  # ldc = n + 3
    call = column_major_call(1, 2, 3, m, n, k, lda=k + 2, ldb=n + 1, ldc=n + 3, batch=batch,
                             stride_b=0)
    assert (call.lda, call.ldb, call.ldc, call.stride_a, call.stride_b) == (n + 1, k + 2, n + 3, 0, m * (k + 2))
    emulate(call, {1: a_store.reshape(-1), 2: w.reshape(-1), 3: c_store.reshape(-1)})
    np.testing.assert_allclose(c_store[:, :, :n], a_store[:, :, :k] @ w[:, :n], rtol=1e-12)
    assert not c_store[:, :, n:].any()


@pytest.mark.parametrize("kwargs, message", [
    ({"m": 0}, "m must be"),
    ({"k": -1}, "k must be"),
    ({"batch": 0}, "batch must be"),
    ({"lda": 3}, "lda must be in \\[4,"),  # A is [m=2, k=4]
    ({"trans_a": True, "lda": 1}, "lda must be in \\[2,"),  # stored [k, m=2]
    ({"ldb": 2}, "ldb must be in \\[3,"),  # B is [k, n=3]
    ({"ldc": 2}, "ldc must be in \\[3,"),
    ({"batch": 2, "stride_c": 3}, "stride_c must be"),  # C entries would overlap
    ({"stride_a": -1}, "stride_a must be"),
    ({"m": 2.0}, "m must be an integer"),
    ({"n": 2**31}, "n must be in"),
])
def test_mapping_rejects_bad_arguments(kwargs, message):
    args = {"m": 2, "n": 3, "k": 4}
    args.update(kwargs)
    m, n, k = args.pop("m"), args.pop("n"), args.pop("k")
    with pytest.raises(ValueError, match=message):
        column_major_call(0, 0, 0, m, n, k, **args)


# ---------------------------------------------------------------- dtypes and compute

@pytest.mark.parametrize("dtype, compute, out_dtype, expected", [
    (np.float32, "fp32", None, (CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH)),
    ("float32", "tf32", None,
     (CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_TF32_TENSOR_OP_MATH)),
    (np.float16, "fp16acc32", None, (CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH)),
    (DType.BFLOAT16, "fp16acc32", None,
     (CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH)),
    ("float16", "fp16acc32", "float32", (CUDA_R_16F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH)),
])
def test_gemm_types(dtype, compute, out_dtype, expected):
    assert gemm_types(dtype, compute, out_dtype) == expected


def test_enum_values_match_cublas_api_h():
    assert (CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF) == (0, 2, 14)
    assert (CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32) == (68, 77)
    assert (CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH) == (0, 3)


@pytest.mark.parametrize("dtype, compute, out_dtype, message", [
    (np.float16, "fp32", None, "compute 'fp32' takes float32 inputs, got float16"),
    (np.float32, "fp16acc32", None, "takes float16 or bfloat16 inputs"),
    (np.float64, "fp32", None, "got float64"),
    (np.float32, "fp64", None, "compute must be one of fp32, tf32, fp16acc32"),
    (np.float16, "fp16acc32", "bfloat16", "float16 inputs give float16 or float32 output"),
    ("no-such-type", "fp32", None, "not a data type"),
])
def test_gemm_types_rejects(dtype, compute, out_dtype, message):
    with pytest.raises(ValueError, match=message):
        gemm_types(dtype, compute, out_dtype)


# ---------------------------------------------------------------- finding the library

def test_wheel_candidates_cover_both_layouts_and_prefer_the_major(tmp_path):
    (tmp_path / "a" / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    (tmp_path / "b" / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    cu12 = tmp_path / "a" / "nvidia" / "cublas" / "lib" / "libcublas.so.12"
    cu13 = tmp_path / "b" / "nvidia" / "cu13" / "lib" / "libcublas.so.13"
    for path in (cu12, cu13, cu12.with_name("libcublasLt.so.12"), cu13.with_name("libcublasLt.so.13")):
        path.write_bytes(b"")
    search = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "missing")]
    assert wheel_candidates(search) == [str(cu13), str(cu12)]  # newest first
    assert wheel_candidates(search, prefer_major=12) == [str(cu12), str(cu13)]
    assert wheel_candidates([str(tmp_path)]) == []


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    """No wheel on sys.path, no cuda.pathfinder answer, nothing on the system."""
    def pathfinder():
        raise RuntimeError('Failure finding "libcublas.so.13 or libcublas.so.12"')

    monkeypatch.setattr(cublas, "_library", None)
    monkeypatch.setattr(cublas.sys, "path", [str(tmp_path)])
    monkeypatch.setattr(cublas, "_pathfinder_path", pathfinder)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    return tmp_path


def test_library_missing_gives_clear_error(nothing_installed):
    with pytest.raises(CublasNotFoundError) as info:
        cublas.load_cublas()
    message = str(info.value)
    assert isinstance(info.value, RtxrtError)
    assert "cuBLAS library not found" in message
    assert "nvidia/cublas/lib/libcublas.so" in message and "nvidia/cu13/lib/libcublas.so" in message
    assert "pip install nvidia-cublas-cu12" in message and "nvidia-cublas " in message
    assert "cuda.pathfinder: Failure finding" in message
    assert "find_library('cublas'): nothing" in message


def test_broken_wheel_library_is_named_in_the_error(nothing_installed):
    lib = nothing_installed / "nvidia" / "cublas" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcublas.so.12").write_bytes(b"not an ELF file")
    with pytest.raises(CublasNotFoundError, match="libcublas.so.12: .*"):
        cublas.load_cublas()
