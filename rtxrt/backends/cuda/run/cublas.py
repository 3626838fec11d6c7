"""cuBLAS through ctypes, so that a GEMM can be captured in a CUDA graph.

CuPy refuses every cuBLAS call during stream capture (DESIGN.md, "Facts checked on an H200").
cuBLAS itself captures and replays correctly when its handle is bound to the capturing stream
and owns a workspace set with ``cublasSetWorkspace_v2`` (else it would allocate during
capture). This module is that binding and nothing more: find the library, one handle bound to
one stream, and one strided-batched GEMM on row-major operands. Choosing between cuBLAS and
generated kernels is the autotuner's business.

The library comes from the NVIDIA wheel beside CuPy (``nvidia-cublas-cu12``:
``nvidia/cublas/lib/libcublas.so.12``; ``nvidia-cublas`` for CUDA 13:
``nvidia/cu13/lib/libcublas.so.13``), else from ``cuda.pathfinder`` (CuPy 14's library
finder), else from the system (``ctypes.util.find_library``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_dtypes  # noqa: F401  (registers numpy's "bfloat16")
import numpy as np

from ....errors import RtxrtError

# Enum values from cublas_api.h (cuBLAS 12.x and 13.0; unchanged between them) and, for
# cudaDataType_t, from library_types.h.
CUBLAS_STATUS_NAMES = {  # cublasStatus_t
    0: "CUBLAS_STATUS_SUCCESS",
    1: "CUBLAS_STATUS_NOT_INITIALIZED",
    3: "CUBLAS_STATUS_ALLOC_FAILED",
    7: "CUBLAS_STATUS_INVALID_VALUE",
    8: "CUBLAS_STATUS_ARCH_MISMATCH",
    11: "CUBLAS_STATUS_MAPPING_ERROR",
    13: "CUBLAS_STATUS_EXECUTION_FAILED",
    14: "CUBLAS_STATUS_INTERNAL_ERROR",
    15: "CUBLAS_STATUS_NOT_SUPPORTED",
    16: "CUBLAS_STATUS_LICENSE_ERROR",
}
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1  # cublasOperation_t
CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH = 0, 3  # cublasMath_t
CUBLAS_COMPUTE_32F = 68  # cublasComputeType_t: float, default
CUBLAS_COMPUTE_32F_PEDANTIC = 69
CUBLAS_COMPUTE_32F_FAST_16F = 74
CUBLAS_COMPUTE_32F_FAST_16BF = 75
CUBLAS_COMPUTE_32F_FAST_TF32 = 77  # float accumulation, inputs rounded to TF32
CUBLAS_GEMM_DEFAULT = -1  # cublasGemmAlgo_t
CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14  # cudaDataType_t

DATA_TYPES = {"float32": CUDA_R_32F, "float16": CUDA_R_16F, "bfloat16": CUDA_R_16BF}
# compute name -> (cublasComputeType_t, cublasMath_t, input dtypes it takes). Every one
# accumulates in fp32 with fp32 alpha and beta.
COMPUTE = {
    "fp32": (CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, ("float32",)),
    "tf32": (CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_TF32_TENSOR_OP_MATH, ("float32",)),
    "fp16acc32": (CUBLAS_COMPUTE_32F, CUBLAS_DEFAULT_MATH, ("float16", "bfloat16")),
}
# cuBLAS's recommended workspace for Hopper; enough for every arch before it.
WORKSPACE_BYTES = 32 << 20
INSTALL_HINT = ("pip install nvidia-cublas-cu12 (CUDA 12, CuPy cupy-cuda12x) or nvidia-cublas "
                "(CUDA 13, cupy-cuda13x)")
_HINTS = {
    8: " (the GPU lacks a feature this call needs: bfloat16 needs compute capability 8.0)",
    15: " (this combination of data types, compute type and layout is not supported here)",
}
_INT32_MAX = 2**31 - 1

_VOID_P, _INT, _LL = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
_SIGNATURES: dict[str, list[Any]] = {
    "cublasCreate_v2": [ctypes.POINTER(_VOID_P)],
    "cublasDestroy_v2": [_VOID_P],
    "cublasGetVersion_v2": [_VOID_P, ctypes.POINTER(_INT)],
    "cublasSetStream_v2": [_VOID_P, _VOID_P],
    "cublasSetWorkspace_v2": [_VOID_P, _VOID_P, ctypes.c_size_t],
    "cublasSetMathMode": [_VOID_P, _INT],
    # handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB,
    # beta, C, Ctype, ldc, strideC, batchCount, computeType, algo
    "cublasGemmStridedBatchedEx": [_VOID_P, _INT, _INT, _INT, _INT, _INT,
                                   _VOID_P, _VOID_P, _INT, _INT, _LL,
                                   _VOID_P, _INT, _INT, _LL,
                                   _VOID_P, _VOID_P, _INT, _INT, _LL, _INT, _INT, _INT],
}
# Where the NVIDIA wheels put the library, relative to a site-packages "nvidia" folder.
_WHEEL_PATTERNS = ("cu1*/lib/libcublas.so.*", "cublas/lib/libcublas.so.*",
                   "cu1*/bin/**/cublas64_*.dll", "cublas/bin/cublas64_*.dll")
_library: ctypes.CDLL | None = None


class CublasNotFoundError(RtxrtError):
    """No cuBLAS library could be loaded."""


class CublasError(RtxrtError):
    """A cuBLAS function returned an error status; ``function`` and ``status`` say which."""

    def __init__(self, function: str, status: int):
        self.function, self.status = function, status
        name = CUBLAS_STATUS_NAMES.get(status, f"unknown cuBLAS status {status}")
        super().__init__(f"{function} failed: {name}{_HINTS.get(status, '')}")


def check(status: int, function: str) -> None:
    """Raise CublasError unless ``status`` is CUBLAS_STATUS_SUCCESS."""
    if status != 0:
        raise CublasError(function, status)


# ---------------------------------------------------------------- argument mapping (pure)

class GemmCall(NamedTuple):
    """The shape arguments of ``cublasGemmStridedBatchedEx`` (column-major, in its order)."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    a: int
    lda: int
    stride_a: int
    b: int
    ldb: int
    stride_b: int
    c: int
    ldc: int
    stride_c: int
    batch: int


def column_major_call(a: int, b: int, c: int, m: int, n: int, k: int, *,
                      trans_a: bool = False, trans_b: bool = False,
                      lda: int | None = None, ldb: int | None = None, ldc: int | None = None,
                      batch: int = 1, stride_a: int | None = None,
                      stride_b: int | None = None, stride_c: int | None = None) -> GemmCall:
    """cuBLAS arguments for the row-major ``C[m,n] = op(A)[m,k] @ op(B)[k,n]`` (per batch).

    Row-major operands: A is stored ``[m,k]`` (``[k,m]`` when ``trans_a``), B ``[k,n]``
    (``[n,k]`` when ``trans_b``), C ``[m,n]``; ``ld*`` are row pitches in elements (default:
    packed) and ``stride_*`` the elements between batch entries (default: packed; 0 reuses
    one A or B for every entry). A row-major matrix is the column-major storage of its
    transpose, so cuBLAS computes ``C^T = op(B)^T op(A)^T``: A and B swap places, m and n
    swap, and each keeps its own transpose flag."""
    for name, value in (("m", m), ("n", n), ("k", k), ("batch", batch)):
        _check_int(name, value, 1)
    a_cols = m if trans_a else k
    b_cols = k if trans_b else n
    lda = a_cols if lda is None else lda
    ldb = b_cols if ldb is None else ldb
    ldc = n if ldc is None else ldc
    for name, value, cols in (("lda", lda, a_cols), ("ldb", ldb, b_cols), ("ldc", ldc, n)):
        _check_int(name, value, cols)
    stride_a = (k if trans_a else m) * lda if stride_a is None else stride_a
    stride_b = (n if trans_b else k) * ldb if stride_b is None else stride_b
    stride_c = m * ldc if stride_c is None else stride_c
    for name, value in (("stride_a", stride_a), ("stride_b", stride_b)):
        _check_int(name, value, 0, limit=2**63 - 1)
    # Batch entries of C must not overlap: each would overwrite the others.
    _check_int("stride_c", stride_c, (m - 1) * ldc + n if batch > 1 else 0, limit=2**63 - 1)
    return GemmCall(transa=CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
                    transb=CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
                    m=n, n=m, k=k,
                    a=b, lda=ldb, stride_a=stride_b,
                    b=a, ldb=lda, stride_b=stride_a,
                    c=c, ldc=ldc, stride_c=stride_c, batch=batch)


def gemm_types(dtype: Any, compute: str = "fp32", out_dtype: Any = None) -> tuple[int, int, int, int]:
    """(input cudaDataType, output cudaDataType, cublasComputeType_t, cublasMath_t) for
    inputs of ``dtype`` (numpy dtype, its name, or an IR DType) and ``compute``: "fp32"
    (float32 inputs, true fp32), "tf32" (float32 inputs rounded to TF32 on tensor cores) or
    "fp16acc32" (float16 or bfloat16 inputs, fp32 accumulation). The output is ``dtype``
    unless ``out_dtype`` says otherwise (float32 output of 16-bit inputs)."""
    name, out_name = _dtype_name(dtype), _dtype_name(dtype if out_dtype is None else out_dtype)
    if compute not in COMPUTE:
        raise ValueError(f"compute must be one of {', '.join(COMPUTE)}, got {compute!r}")
    compute_type, math_mode, inputs = COMPUTE[compute]
    if name not in inputs:
        raise ValueError(f"compute {compute!r} takes {' or '.join(inputs)} inputs, got {name}")
    if out_name not in (name, "float32"):
        raise ValueError(f"{name} inputs give {name} or float32 output, not {out_name}")
    return DATA_TYPES[name], DATA_TYPES[out_name], compute_type, math_mode


def _dtype_name(dtype: Any) -> str:
    try:  # an IR DType carries its numpy type as .numpy
        return np.dtype(getattr(dtype, "numpy", dtype)).name
    except TypeError:
        raise ValueError(f"not a data type: {dtype!r}") from None


def _check_int(name: str, value: Any, least: int, limit: int = _INT32_MAX) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not least <= value <= limit:
        raise ValueError(f"{name} must be in [{least}, {limit}], got {value}")


# ---------------------------------------------------------------- finding the library

def wheel_candidates(search_path: Sequence[str] | None = None,
                     prefer_major: int | None = None) -> list[str]:
    """libcublas files of NVIDIA wheels under the ``nvidia`` folders of ``search_path``
    (default ``sys.path``): those of CUDA major ``prefer_major`` first, then newest first."""
    found: dict[str, None] = {}
    for entry in sys.path if search_path is None else search_path:
        root = os.path.join(entry or os.curdir, "nvidia")
        if os.path.isdir(root):
            for pattern in _WHEEL_PATTERNS:
                found.update(dict.fromkeys(sorted(glob.glob(os.path.join(root, pattern),
                                                            recursive=True))))

    def major(path: str) -> int:
        match = re.search(r"(?:\.so\.|64_)(\d+)", os.path.basename(path))
        return int(match.group(1)) if match else 0

    return sorted(found, key=lambda p: (major(p) != prefer_major, -major(p)))


def load_cublas(prefer_major: int | None = None) -> ctypes.CDLL:
    """The cuBLAS library, loaded once per process, with the signatures this module uses."""
    if _library is not None:
        return _library
    tried: list[str] = []
    for path in wheel_candidates(prefer_major=prefer_major):
        library = _open(path, tried, lt=True)
        if library is not None:
            return _bind(library)
    try:
        path = _pathfinder_path()
    except Exception as exc:  # ImportError, or its DynamicLibNotFoundError
        tried.append(f"cuda.pathfinder: {exc}")
    else:
        library = _open(path, tried) if path else None
        if library is not None:
            return _bind(library)
    name = ctypes.util.find_library("cublas")
    library = _open(name, tried) if name else None
    if library is not None:
        return _bind(library)
    tried.append("ctypes.util.find_library('cublas'): nothing")
    raise CublasNotFoundError(
        "cuBLAS library not found: looked for nvidia/cublas/lib/libcublas.so.* and "
        "nvidia/cu13/lib/libcublas.so.* under sys.path, asked cuda.pathfinder and the "
        f"system loader. {INSTALL_HINT}. Tried: " + "; ".join(tried))


def _pathfinder_path() -> str | None:
    from cuda.pathfinder import load_nvidia_dynamic_lib

    return load_nvidia_dynamic_lib("cublas").abs_path


def _open(path: str, tried: list[str], lt: bool = False) -> ctypes.CDLL | None:
    """dlopen ``path`` (first its libcublasLt neighbour, for wheels without an rpath)."""
    try:
        if lt:
            folder, base = os.path.split(path)
            neighbour = os.path.join(folder, base.replace("cublas", "cublasLt", 1))
            if os.path.exists(neighbour):
                ctypes.CDLL(neighbour, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        library = ctypes.CDLL(path)
        for function in _SIGNATURES:
            getattr(library, function)
    except (OSError, AttributeError) as exc:
        tried.append(f"{path}: {exc}")
        return None
    return library


def _bind(library: ctypes.CDLL) -> ctypes.CDLL:
    global _library
    for function, argtypes in _SIGNATURES.items():
        getattr(library, function).argtypes = argtypes
        getattr(library, function).restype = ctypes.c_int
    _library = library
    return library


# ---------------------------------------------------------------- the handle

class Cublas:
    """One cuBLAS handle bound to the stream ``stream_ptr`` (e.g. ``cupy.cuda.Stream().ptr``),
    with a workspace of its own so that its GEMMs can be captured in a CUDA graph. Keep it open
    while graphs captured with it are replayed: they use its workspace. Not thread-safe: one
    handle per thread and stream. Created on CuPy's current device."""

    def __init__(self, stream_ptr: int, *, workspace_bytes: int = WORKSPACE_BYTES):
        import cupy

        self._lib = load_cublas(prefer_major=cupy.cuda.runtime.runtimeGetVersion() // 1000)
        handle = ctypes.c_void_p()
        self._call("cublasCreate_v2", ctypes.byref(handle))
        self._handle: ctypes.c_void_p | None = handle
        self.stream_ptr = stream_ptr
        try:
            self._call("cublasSetStream_v2", handle, stream_ptr)
            self.workspace = cupy.cuda.alloc(workspace_bytes)
            self._call("cublasSetWorkspace_v2", handle, self.workspace.ptr, workspace_bytes)
        except BaseException:
            self.close()
            raise

    def _call(self, function: str, *args: Any) -> None:
        check(getattr(self._lib, function)(*args), function)

    @property
    def handle(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise RtxrtError("this cuBLAS handle is closed")
        return self._handle

    @property
    def version(self) -> int:
        """cuBLAS's version number, e.g. 120903 for 12.9.3."""
        value = ctypes.c_int()
        self._call("cublasGetVersion_v2", self.handle, ctypes.byref(value))
        return value.value

    def gemm(self, a: int, b: int, c: int, m: int, n: int, k: int, *, dtype: Any,
             out_dtype: Any = None, compute: str = "fp32",
             trans_a: bool = False, trans_b: bool = False,
             lda: int | None = None, ldb: int | None = None, ldc: int | None = None,
             alpha: float = 1.0, beta: float = 0.0, batch: int = 1,
             stride_a: int | None = None, stride_b: int | None = None,
             stride_c: int | None = None) -> None:
        """Enqueue ``C = alpha * op(A) @ op(B) + beta * C`` on the handle's stream, for
        row-major operands at device addresses ``a``, ``b``, ``c`` (see column_major_call
        for shapes, pitches and batch strides, gemm_types for dtype and compute)."""
        in_type, out_type, compute_type, math_mode = gemm_types(dtype, compute, out_dtype)
        call = column_major_call(a, b, c, m, n, k, trans_a=trans_a, trans_b=trans_b,
                                 lda=lda, ldb=ldb, ldc=ldc, batch=batch, stride_a=stride_a,
                                 stride_b=stride_b, stride_c=stride_c)
        handle = self.handle
        self._call("cublasSetMathMode", handle, math_mode)
        alpha_, beta_ = ctypes.c_float(alpha), ctypes.c_float(beta)
        self._call("cublasGemmStridedBatchedEx", handle, call.transa, call.transb,
                   call.m, call.n, call.k, ctypes.byref(alpha_),
                   call.a, in_type, call.lda, call.stride_a,
                   call.b, in_type, call.ldb, call.stride_b, ctypes.byref(beta_),
                   call.c, out_type, call.ldc, call.stride_c, call.batch,
                   compute_type, CUBLAS_GEMM_DEFAULT)

    def close(self) -> None:
        """Destroy the handle (cuBLAS synchronizes the device) and free the workspace."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self._call("cublasDestroy_v2", handle)
        self.workspace = None

    def __enter__(self) -> Cublas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
