"""The ctypes cuBLAS binding on the GPU: products agree with numpy in float64, and a GEMM
captured in a CUDA graph replays on new input contents (which CuPy's own cuBLAS calls cannot
do: they refuse stream capture).

Inputs are fresh standard-normal values (seeded per test, never zeros); the reference is numpy
in float64 of exactly the values the GPU got (the fp16/bf16 values after rounding). Bounds:
- fp32: ``|err| <= 1e-5 * (|A| @ |B|)`` elementwise, i.e. rtol 1e-5 relative to the size of
  the terms summed (cancellation makes plain rtol meaningless for near-zero results). fp32
  rounding gives at most about k * 6e-8 (k = 129: 8e-6, typically far less).
- tf32: inputs rounded to 10-bit mantissas (2^-11 = 4.9e-4 each), so
  ``||err|| / ||ref|| < 2e-3``; and above 1e-5, which shows TF32 tensor cores were used.
- fp16 or bf16 inputs, fp32 accumulation: products of 16-bit values are exact in fp32, so a
  float32 output is fp32-accurate (``||err|| / ||ref|| < 1e-5``, fp16 accumulation would give
  about 1e-3); a 16-bit output adds its own rounding: fp16 ``< 1e-3`` (2^-11 per element),
  bf16 ``< 5e-3`` (2^-8 = 3.9e-3 per element, about half that on average).
"""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.errors import RtxrtError

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def stream(cp):
    return cp.cuda.Stream(non_blocking=True)


@pytest.fixture(scope="module")
def blas(stream):
    from rtxrt.backends.cuda.run.cublas import Cublas

    with Cublas(stream.ptr) as handle:
        yield handle


def normal(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def to_device(cp, stream, *arrays):
    with stream:
        return [cp.asarray(a) for a in arrays]


def product(a, b, trans_a=False, trans_b=False):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (np.swapaxes(a, -1, -2) if trans_a else a) @ (np.swapaxes(b, -1, -2) if trans_b else b)


def fetch(cp, stream, x):
    stream.synchronize()
    with stream:
        out = cp.asnumpy(x)
    stream.synchronize()
    return out.astype(np.float64)


def relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def assert_fp32_exact(got, a, b, trans_a=False, trans_b=False):
    want = product(a, b, trans_a, trans_b)
    scale = product(np.abs(a), np.abs(b), trans_a, trans_b)
    excess = np.abs(got - want) - 1e-5 * scale
    assert excess.max() <= 0, f"max |err| above 1e-5 * |A||B| by {excess.max():.3g}"


@pytest.mark.parametrize("trans_a", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["b", "bT"])
def test_fp32_with_transposes(cp, stream, blas, trans_a, trans_b):
    rng = np.random.default_rng(10 + 2 * trans_a + trans_b)
    m, n, k = 67, 45, 129
    a = normal(rng, (k, m) if trans_a else (m, k))
    b = normal(rng, (n, k) if trans_b else (k, n))
    da, db = to_device(cp, stream, a, b)
    with stream:
        dc = cp.empty((m, n), np.float32)
    blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32,
              trans_a=trans_a, trans_b=trans_b)
    assert_fp32_exact(fetch(cp, stream, dc), a, b, trans_a, trans_b)


def test_tf32_is_close_but_not_fp32_and_math_mode_resets(cp, stream, blas):
    rng = np.random.default_rng(20)
    m = n = k = 512
    a, b = normal(rng, (m, k)), normal(rng, (k, n))
    da, db = to_device(cp, stream, a, b)
    with stream:
        dc = cp.empty((m, n), np.float32)
    blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32, compute="tf32")
    error = relative_error(fetch(cp, stream, dc), product(a, b))
    assert 1e-5 < error < 2e-3, error
    # The next fp32 call on the same handle is exact again: the math mode is set per call.
    blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32, compute="fp32")
    assert_fp32_exact(fetch(cp, stream, dc), a, b)


@pytest.mark.parametrize("dtype, out_dtype, bound", [
    ("float16", "float16", 1e-3),
    ("float16", "float32", 1e-5),
    ("bfloat16", "bfloat16", 5e-3),
    ("bfloat16", "float32", 1e-5),
])
def test_16_bit_inputs_accumulate_in_fp32(cp, stream, blas, dtype, out_dtype, bound):
    import ml_dtypes

    if dtype == "bfloat16" and int(cp.cuda.Device().compute_capability) < 80:
        pytest.skip("bfloat16 GEMM needs compute capability 8.0")
    np_dtype = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
    rng = np.random.default_rng(30)
    m, n, k = 96, 80, 1024
    a = normal(rng, (m, k), np_dtype[dtype])
    b = normal(rng, (n, k), np_dtype[dtype])  # B stored transposed, as weights are
    # CuPy has no bfloat16: move the raw bits as uint16.
    da, db = to_device(cp, stream, a.view(np.uint16), b.view(np.uint16))
    with stream:
        dc = cp.empty((m, n), np.uint16 if out_dtype != "float32" else np.float32)
    blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=dtype, out_dtype=out_dtype,
              compute="fp16acc32", trans_b=True)
    stream.synchronize()
    with stream:
        raw = cp.asnumpy(dc)
    stream.synchronize()
    got = (raw if out_dtype == "float32" else raw.view(np_dtype[out_dtype])).astype(np.float64)
    error = relative_error(got, product(a, b, trans_b=True))
    assert error < bound, error


def test_batched_strided_with_a_shared_weight_and_pitches(cp, stream, blas):
    """4 entries of A, each a view with row pitch k + 8 into a wider buffer; one B for all
    (stride 0); C with row pitch n + 4, untouched beyond column n."""
    rng = np.random.default_rng(40)
    batch, m, n, k = 4, 33, 17, 65
    a_store, w = normal(rng, (batch, m, k + 8)), normal(rng, (k, n))
    c_store = normal(rng, (batch, m, n + 4))
    da, dw, dc = to_device(cp, stream, a_store, w, c_store)
    blas.gemm(da.data.ptr, dw.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32, batch=batch,
              lda=k + 8, ldc=n + 4, stride_b=0)
    got = fetch(cp, stream, dc)
    for i in range(batch):
        assert_fp32_exact(got[i, :, :n], a_store[i, :, :k], w)
    np.testing.assert_array_equal(got[:, :, n:], c_store[:, :, n:])


def test_batched_packed_with_alpha_and_beta(cp, stream, blas):
    rng = np.random.default_rng(50)
    batch, m, n, k = 3, 24, 40, 56
    a, b, c0 = normal(rng, (batch, k, m)), normal(rng, (batch, k, n)), normal(rng, (batch, m, n))
    da, db, dc = to_device(cp, stream, a, b, c0)
    blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32, batch=batch,
              trans_a=True, alpha=0.5, beta=2.0)
    want = 0.5 * product(a, b, trans_a=True) + 2.0 * c0
    np.testing.assert_allclose(fetch(cp, stream, dc), want, rtol=1e-5, atol=1e-4)


def test_graph_capture_replays_on_new_inputs(cp, stream, blas):
    rng = np.random.default_rng(60)
    m, n, k = 128, 96, 160
    a, b = normal(rng, (m, k)), normal(rng, (k, n))
    da, db = to_device(cp, stream, a, b)
    with stream:
        dc = cp.empty((m, n), np.float32)
        stream.begin_capture()
        blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32)
        blas.gemm(da.data.ptr, db.data.ptr, dc.data.ptr, m, n, k, dtype=np.float32,
                  compute="tf32", alpha=0.0, beta=1.0)  # a second node: C unchanged
        graph = stream.end_capture()
    for seed in (61, 62):  # new contents in the same buffers, then replay
        a, b = normal(np.random.default_rng(seed), (m, k)), normal(np.random.default_rng(seed + 100), (k, n))
        with stream:
            da.set(a, stream=stream)
            db.set(b, stream=stream)
            dc.fill(np.nan)
        graph.launch(stream)
        assert_fp32_exact(fetch(cp, stream, dc), a, b)


def test_closed_handle_refuses_work(stream):
    from rtxrt.backends.cuda.run.cublas import Cublas

    with Cublas(stream.ptr) as handle:
        assert handle.version >= 11_0000
    with pytest.raises(RtxrtError, match="closed"):
        handle.gemm(0, 0, 0, 1, 1, 1, dtype=np.float32)
    handle.close()  # twice is fine
