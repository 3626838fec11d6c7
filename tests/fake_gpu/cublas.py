"""A fake of rtxrt's cuBLAS handle (rtxrt.backends.cuda.run.cublas.Cublas): ``gemm`` takes the
same arguments, validates them with the real module's pure argument mapping (``gemm_types``,
``column_major_call``: what the real call would refuse, this refuses), and computes the
row-major product with numpy on the fake device's memory, enqueued on its stream (so a CUDA
graph capture records it). Products accumulate in float64 and round once to the output type;
"tf32" rounds the inputs to TF32 first, as the tensor cores do."""
from __future__ import annotations

from typing import Any

import numpy as np

from rtxrt.backends.cuda.run.cublas import column_major_call, gemm_types

from .cuda_c import BF16, F16, F32
from .device import FakeDevice, GemmRecord

_DTYPES = {0: F32, 2: F16, 14: BF16}  # cudaDataType_t


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to 10 mantissa bits, ties to even (NaN and inf kept)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0xFFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)).astype(np.uint32)
    finite = np.isfinite(x)
    return np.where(finite, rounded.view(np.float32), x)


class FakeCublas:
    """One "handle" bound to one stream of ``device``; ``calls`` lists every gemm's arguments."""

    def __init__(self, device: FakeDevice, stream: Any):
        self.device, self.stream_ptr = device, int(stream.ptr)
        self.calls: list[dict[str, Any]] = []

    def gemm(self, a: int, b: int, c: int, m: int, n: int, k: int, *, dtype: Any, out_dtype: Any = None,
             compute: str = "fp32", trans_a: bool = False, trans_b: bool = False, lda: int | None = None,
             ldb: int | None = None, ldc: int | None = None, alpha: float = 1.0, beta: float = 0.0, batch: int = 1,
             stride_a: int | None = None, stride_b: int | None = None, stride_c: int | None = None) -> None:
        in_type, out_type, _, _ = gemm_types(dtype, compute, out_dtype)
        call = column_major_call(a, b, c, m, n, k, trans_a=trans_a, trans_b=trans_b, lda=lda, ldb=ldb, ldc=ldc,
                                 batch=batch, stride_a=stride_a, stride_b=stride_b, stride_c=stride_c)
        # back to row-major: the column-major call swapped A and B
        row = dict(lda=call.ldb, ldb=call.lda, ldc=call.ldc, stride_a=call.stride_b, stride_b=call.stride_a,
                   stride_c=call.stride_c)
        options = dict(dtype=_DTYPES[in_type], out_dtype=_DTYPES[out_type], compute=compute, trans_a=trans_a,
                       trans_b=trans_b, alpha=float(alpha), beta=float(beta), batch=batch, **row)
        self.calls.append(dict(a=a, b=b, c=c, m=m, n=n, k=k, **options))
        args = (int(a), int(b), int(c), int(m), int(n), int(k))
        self.device.submit(self.stream_ptr, lambda replay: self._run(*args, options, replay), "cublas gemm")

    def _run(self, a: int, b: int, c: int, m: int, n: int, k: int, o: dict[str, Any], replay: bool) -> GemmRecord:
        record = GemmRecord(next(self.device._seq), a, b, c, m, n, k, dict(o), self.stream_ptr, replay)
        self.device._record(record)  # first: a fault below still shows the call in the log
        if not self.device.execute:
            return record
        with np.errstate(all="ignore"):  # inf and NaN propagate, as on the GPU
            self._compute(a, b, c, m, n, k, o)
        return record

    def _compute(self, a: int, b: int, c: int, m: int, n: int, k: int, o: dict[str, Any]) -> None:
        memory = self.device.memory
        # op(A)[b, r, kk] and op(B)[b, kk, c] as element strides of the stored row-major matrices
        a_strides = (o["stride_a"], 1, o["lda"]) if o["trans_a"] else (o["stride_a"], o["lda"], 1)
        b_strides = (o["stride_b"], 1, o["ldb"]) if o["trans_b"] else (o["stride_b"], o["ldb"], 1)
        c_strides = (o["stride_c"], o["ldc"], 1)
        batch = o["batch"]
        A = memory.load_block(a, o["dtype"], (batch, m, k), a_strides).astype(np.float64)
        B = memory.load_block(b, o["dtype"], (batch, k, n), b_strides).astype(np.float64)
        if o["compute"] == "tf32":
            A, B = _tf32(A.astype(np.float32)).astype(np.float64), _tf32(B.astype(np.float32)).astype(np.float64)
        result = o["alpha"] * np.matmul(A, B)
        if o["beta"] != 0.0:
            old = memory.load_block(c, o["out_dtype"], (batch, m, n), c_strides)
            result = result + o["beta"] * old.astype(np.float64)
        out = result.astype(np.float32).astype(o["out_dtype"]) if o["out_dtype"] != F32 else result.astype(F32)
        memory.store_block(c, o["out_dtype"], out, c_strides)

    def close(self) -> None:
        pass


__all__ = ["FakeCublas"]
