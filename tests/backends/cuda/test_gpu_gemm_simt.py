"""The SIMT GEMM (rtxrt/jit/codegen/gemm_simt.py) and the stand-alone epilogue after a cuBLAS
GEMM (rtxrt/jit/codegen/epilogue.py) on the GPU.

Kernels are compiled with NVRTC for the probed GPU's arch and loaded from cubin files with
CuPy. Inputs are fresh random values (seeded per case, uniform in [-1, 1], never zeros; B
scaled by 1/sqrt(K) so that results are O(1), where the activations bend), laid out with the
problem's leading dimensions; D is filled with NaN first, so that an element nobody wrote
shows, and the gaps between its rows must stay NaN. The reference is the reference backend's
rtxrt::FusedMatMul run in float64 on the same values.

Tolerances, as relative norms ||D - ref|| / ||ref|| and per element |D - ref| <= tol *
(|ref| + rms(ref)) (tests/backends/cuda/helpers.check_close):
- fp32 results: 1e-5. fp32 accumulation over K <= 3072 of O(1/sqrt(K)) terms errs by about
  sqrt(K) * 6e-8 <= 3.3e-6 (products of fp16/bf16 values are exact in fp32), the activations
  by a few ulps;
- fp16 results 2e-3 (one rounding is at most 4.9e-4), bf16 1e-2 (at most 3.9e-3);
- cuBLAS then the epilogue kernel, with a 16-bit D: cuBLAS rounds the product to D's type
  before the epilogue reads it, then the epilogue rounds again, so twice those (4e-3, 2e-2);
  fp32 stays 1e-5.

``test_speed_against_cublas_fp32_4096`` times each tactic and cuBLAS (true fp32, and TF32 for
information) on 4096^3 float32 with CUDA events (median of 10 after warm-up) and prints
TFLOP/s; it asserts correctness only.
"""
from __future__ import annotations

import itertools
import math
import statistics
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.activations import ACTIVATIONS, RESIDUALS
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node
from rtxrt.backends.cuda.codegen.epilogue import epilogue_kernel
from rtxrt.backends.cuda.ops.gemm_source import GemmProblem
from rtxrt.backends.cuda.ops.gemm_simt_source import (
    SIMT_TACTICS,
    SimtGemmKernel,
    SimtTactic,
    simt_gemm_kernel,
)
from rtxrt.backends.cuda.codegen.kernel_source import GridLaunch, KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many

from .helpers import check_close, random, storage, to_device

pytestmark = pytest.mark.gpu

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
TOLERANCE = {F32: 1e-5, F16: 2e-3, BF16: 1e-2}
TWO_ROUNDINGS = {F32: 1e-5, F16: 4e-3, BF16: 2e-2}
NAN_BITS = {F16: 0x7E00, BF16: 0x7FC0}
PARAMS = {"leaky_relu": (0.2,), "clip": (-0.5, 0.75), "hard_sigmoid": (0.25, 0.4)}


@dataclass(frozen=True)
class Case:
    id: str
    problem: GemmProblem
    tactic: SimtTactic

    @property
    def kernel(self) -> SimtGemmKernel:
        return simt_gemm_kernel(self.problem, self.tactic)


# (batch, M, N, K): odd sizes everywhere, a batch, BERT's FFN, one row, sizes past one tile
# of every tactic, K below one K step.
SHAPES = [(1, 37, 61, 83), (3, 45, 70, 96), (1, 128, 3072, 768), (1, 1, 768, 768), (1, 200, 136, 200),
          (1, 64, 64, 5)]


def gemm_cases() -> list[Case]:
    cases = []
    for (batch, m, n, k), tactic, dtype, trans_b in itertools.product(SHAPES, SIMT_TACTICS, (F32, F16, BF16),
                                                                      (True, False)):
        problem = GemmProblem(m, n, k, dtype=dtype, trans_b=trans_b, batch=batch)
        cases.append(Case(f"{batch}x{m}x{n}x{k}-{tactic.label}-{dtype.short}-{'NK' if trans_b else 'KN'}",
                          problem, tactic))
    for dtype in (F16, BF16):  # 16-bit inputs, fp32 results
        problem = GemmProblem(37, 61, 83, dtype=dtype, out_dtype=F32, alpha=0.75)
        cases.append(Case(f"37x61x83-f32out-{dtype.short}", problem, SIMT_TACTICS[0]))
    return cases


def epilogue_cases() -> list[Case]:
    """Each activation x residual once; types, tactics, layouts, batches, bias and alpha
    rotating; every third case with padded leading dimensions."""
    cases = []
    for i, (activation, residual) in enumerate(itertools.product(ACTIVATIONS, RESIDUALS)):
        tactic = SIMT_TACTICS[i % len(SIMT_TACTICS)]
        dtype = (F32, F16, BF16)[i % 3]
        out = F32 if i % 4 == 1 else dtype
        batch, m, n, k = ((1, 37, 61, 83), (2, 64, 96, 128), (1, 130, 72, 40))[i % 3]
        padded = {"lda": k + 3, "ldb": (k if i % 2 == 0 else n) + 5, "ldz": n + 2, "ldd": n + 7} if i % 3 == 2 else {}
        problem = GemmProblem(m, n, k, dtype=dtype, out_dtype=out, trans_b=i % 2 == 0, batch=batch,
                              bias=i % 5 != 4, alpha=0.5 if i % 3 == 1 else 1.0, activation=activation,
                              activation_params=PARAMS.get(activation, ()), residual=residual, **padded)
        cases.append(Case(f"{activation}-{residual}-{batch}x{m}x{n}x{k}-{dtype.short}-{out.short}-{tactic.label}"
                          f"{'-padded' if padded else ''}", problem, tactic))
    return cases


# What cuBLAS computes before epilogue_kernel: fp32 (compute "fp32") and 16-bit inputs
# (fp32 accumulation), padded, batched, with a shared B and alpha.
CUBLAS_CASES = [
    ("f32-NK-bias-relu", GemmProblem(37, 61, 83, dtype=F32, bias=True, activation="relu")),
    ("f32-KN-batch2-alpha-gelu-resbefore", GemmProblem(64, 96, 128, dtype=F32, trans_b=False, batch=2, alpha=0.5,
                                                       bias=True, activation="gelu", residual="before_activation")),
    ("f32-padded-silu-resafter", GemmProblem(100, 200, 64, dtype=F32, lda=67, ldb=72, ldd=203, ldz=210,
                                             activation="silu", residual="after_activation")),
    ("f32-batch3-shared-b-tanh", GemmProblem(45, 70, 96, dtype=F32, batch=3, stride_b=0, bias=True,
                                             activation="tanh")),
    ("f32-residual-only", GemmProblem(33, 40, 50, dtype=F32, residual="after_activation")),
    ("f16-hard_swish-resafter", GemmProblem(64, 96, 128, dtype=F16, bias=True, activation="hard_swish",
                                            residual="after_activation")),
    ("bf16-f32out-clip", GemmProblem(37, 61, 83, dtype=BF16, out_dtype=F32, bias=True, activation="clip",
                                     activation_params=(-0.5, 0.75))),
]

GEMM_CASES, EPILOGUE_CASES = gemm_cases(), epilogue_cases()


@pytest.fixture(scope="module")
def device():
    from rtxrt.backends.cuda.device import probe

    return probe()


class Functions:
    """Compiles kernels for the GPU's arch (in parallel, once per name) and loads them."""

    def __init__(self, arch: str, folder):
        self.arch, self.folder, self.loaded = arch, folder, {}

    def load(self, kernels: list[KernelSource]) -> None:
        import cupy

        missing = {k.name: k.source for k in kernels if k.name not in self.loaded}
        for name, cubin in compile_many(missing.items(), self.arch).items():
            path = self.folder / f"{name}.cubin"
            path.write_bytes(cubin)
            self.loaded[name] = cupy.RawModule(path=str(path)).get_function(name)

    def launch(self, kernel: KernelSource, args: list) -> None:
        """Launches ``kernel`` on the current stream (not at all when its grid is empty)."""
        self.load([kernel])
        function = self.loaded[kernel.name]
        if isinstance(kernel.launch, GridLaunch):
            if all(kernel.launch.grid):
                function(kernel.launch.grid, kernel.launch.block, tuple(args))
        elif kernel.launch.grid():
            function((kernel.launch.grid(),), (kernel.launch.block,), tuple(args))


@pytest.fixture(scope="module")
def functions(device, tmp_path_factory) -> Functions:
    compiled = Functions(device.arch, tmp_path_factory.mktemp("simt_cubins"))
    compiled.load([c.kernel for c in GEMM_CASES + EPILOGUE_CASES] + [epilogue_kernel(p) for _, p in CUBLAS_CASES])
    return compiled


@pytest.fixture(scope="module")
def blas():
    import cupy

    from rtxrt.backends.cuda.run.cublas import Cublas

    with Cublas(cupy.cuda.get_current_stream().ptr) as handle:  # the stream the kernels run on
        yield handle


# ---------------------------------------------------------------- helpers

@dataclass
class Buffers:
    """Host arrays as they lie in memory: rows padded to the problem's leading dimensions, a
    batch dim where the operand has one (not for a batch stride of 0)."""

    a: np.ndarray
    b: np.ndarray
    bias: np.ndarray | None
    z: np.ndarray | None


def host_buffers(p: GemmProblem, seed: str) -> Buffers:
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    lead = (p.batch,) if p.batch != 1 else ()
    a = random(rng, (*(lead if p.stride_a else ()), p.m, p.lda), p.dtype)
    rows_b = p.n if p.trans_b else p.k
    b = random(rng, (*(lead if p.stride_b else ()), rows_b, p.ldb), p.dtype, 1 / math.sqrt(max(p.k, 1)))
    bias = random(rng, (p.n,), p.out_dtype) if p.bias else None
    z = random(rng, (*lead, p.m, p.ldz), p.out_dtype) if p.has_z else None
    return Buffers(a, b, bias, z)


def reference64(p: GemmProblem, x: Buffers) -> np.ndarray:
    """The reference backend's FusedMatMul in float64 on the buffers' values."""
    def wide(array: np.ndarray | None, cols: int) -> np.ndarray | None:
        return None if array is None else array[..., :cols].astype(np.float64)

    attrs = {"trans_b": int(p.trans_b), "alpha": p.alpha, "activation": p.activation,
             "activation_params": list(p.activation_params), "residual": p.residual}
    node = Node("FusedMatMul", ["a", "b", "bias" if p.bias else "", "z" if p.has_z else ""], ["y"], attrs,
                domain="rtxrt")
    kernel = find_kernel("FusedMatMul", "rtxrt")(node, 1, lambda *args: [])
    return kernel.run(wide(x.a, p.k), wide(x.b, p.k if p.trans_b else p.n), wide(x.bias, p.n), wide(x.z, p.n))


def poisoned(shape: tuple[int, ...], dtype: DType):
    import cupy

    if dtype == F32:
        return cupy.full(shape, np.nan, cupy.float32)
    return cupy.full(shape, NAN_BITS[dtype], cupy.uint16)


def d_buffer(p: GemmProblem):
    return poisoned(((p.batch,) if p.batch != 1 else ()) + (p.m, p.ldd), p.out_dtype)


def epilogue_args(p: GemmProblem, x: Buffers) -> list:
    return ([to_device(x.bias)] if p.bias else []) + ([to_device(x.z)] if p.has_z else [])


def fetch(d, p: GemmProblem) -> np.ndarray:
    """D's values (NaN-free rows checked against the reference by the caller); the gaps
    between rows must still hold the poison."""
    import cupy

    cupy.cuda.get_current_stream().synchronize()
    host = d.get().view(storage(p.out_dtype))
    assert np.isnan(host[..., p.n:].astype(np.float32)).all(), "a kernel wrote into the gaps between rows of D"
    return host[..., :p.n]


def run_simt(functions: Functions, kernel: SimtGemmKernel, x: Buffers) -> np.ndarray:
    p = kernel.problem
    d = d_buffer(p)
    functions.launch(kernel, [to_device(x.a), to_device(x.b), *epilogue_args(p, x), d])
    return fetch(d, p)


def run_cublas_then_epilogue(blas, functions: Functions, p: GemmProblem, x: Buffers) -> np.ndarray:
    """cuBLAS writes alpha * A @ B into D, epilogue_kernel applies bias, activation and Z."""
    a, b, d = to_device(x.a), to_device(x.b), d_buffer(p)
    blas.gemm(a.data.ptr, b.data.ptr, d.data.ptr, p.m, p.n, p.k, dtype=p.dtype, out_dtype=p.out_dtype,
              compute="fp32" if p.dtype == F32 else "fp16acc32", trans_b=p.trans_b, lda=p.lda, ldb=p.ldb,
              ldc=p.ldd, alpha=p.alpha, batch=p.batch, stride_a=p.stride_a, stride_b=p.stride_b,
              stride_c=p.stride_d)
    functions.launch(epilogue_kernel(p), [*epilogue_args(p, x), d])
    return fetch(d, p)


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: c.id)
def test_simt_gemm_matches_a_float64_product(case, functions):
    x = host_buffers(case.problem, case.id)
    got = run_simt(functions, case.kernel, x)
    check_close(got, reference64(case.problem, x), TOLERANCE[case.problem.out_dtype], case.id)


@pytest.mark.parametrize("case", EPILOGUE_CASES, ids=lambda c: c.id)
def test_every_epilogue_matches_the_float64_fused_matmul(case, functions):
    x = host_buffers(case.problem, case.id)
    got = run_simt(functions, case.kernel, x)
    check_close(got, reference64(case.problem, x), TOLERANCE[case.problem.out_dtype], case.id)


@pytest.mark.parametrize("dtype", [F32, F16])
def test_pointers_need_no_alignment(functions, dtype):
    """A, B and D start one element into their buffers: the kernel's loads and stores are
    element-wise, so any address works."""
    import cupy

    p = GemmProblem(96, 130, 64, dtype=dtype, bias=True, activation="relu")
    x = host_buffers(p, f"misaligned-{dtype.short}")
    kernel = simt_gemm_kernel(p, SIMT_TACTICS[0])

    def shifted(array: np.ndarray):  # one element, then the array: a view from the second element
        flat = array.reshape(-1)
        return to_device(np.concatenate([flat[:1], flat]))[1:]

    d = poisoned((p.m * p.n + 1,), dtype)
    functions.launch(kernel, [shifted(x.a), shifted(x.b), to_device(x.bias), d[1:]])
    cupy.cuda.get_current_stream().synchronize()
    got = d.get().view(storage(dtype))
    assert np.isnan(got[0].astype(np.float32)), "the kernel wrote before D"
    check_close(got[1:].reshape(p.m, p.n), reference64(p, x), TOLERANCE[dtype], "misaligned")


@pytest.mark.parametrize("shared", ["a", "b"])
def test_a_batch_may_share_one_operand(functions, shared):
    """stride 0: one A (or B) for all three batches, as FusedMatMul broadcasts it."""
    p = GemmProblem(45, 72, 96, dtype=F32, batch=3, trans_b=shared == "a", stride_a=0 if shared == "a" else None,
                    stride_b=0 if shared == "b" else None, residual="before_activation", activation="silu")
    x = host_buffers(p, f"shared-{shared}")
    assert (x.a if shared == "a" else x.b).ndim == 2
    got = run_simt(functions, simt_gemm_kernel(p, SIMT_TACTICS[3]), x)
    check_close(got, reference64(p, x), TOLERANCE[F32], f"shared-{shared}")


def test_an_in_place_residual_reads_z_before_writing_d(functions):
    p = GemmProblem(64, 96, 128, dtype=F32, residual="after_activation", activation="tanh", bias=True)
    x = host_buffers(p, "in-place")
    d = to_device(x.z)  # Z and D are one buffer
    functions.launch(simt_gemm_kernel(p, SIMT_TACTICS[2]), [to_device(x.a), to_device(x.b), to_device(x.bias), d, d])
    check_close(fetch(d, p), reference64(p, x), TOLERANCE[F32], "in-place")


def test_k_zero_writes_the_epilogue_of_a_zero_product(functions):
    import cupy

    p = GemmProblem(40, 50, 0, dtype=F32, bias=True, activation="sigmoid")
    bias = random(np.random.default_rng(5), (50,), F32)
    d = d_buffer(p)
    one = cupy.ones(1, cupy.float32)  # A and B are never read
    functions.launch(simt_gemm_kernel(p, SIMT_TACTICS[2]), [one, one, to_device(bias), d])
    want = np.broadcast_to(1 / (1 + np.exp(-bias.astype(np.float64))), (40, 50))
    check_close(fetch(d, p), want, TOLERANCE[F32], "k=0")


@pytest.mark.parametrize("case_id, problem", CUBLAS_CASES, ids=[c[0] for c in CUBLAS_CASES])
def test_epilogue_kernel_after_cublas_matches_the_fused_reference(case_id, problem, blas, functions):
    x = host_buffers(problem, case_id)
    got = run_cublas_then_epilogue(blas, functions, problem, x)
    check_close(got, reference64(problem, x), TWO_ROUNDINGS[problem.out_dtype], case_id)


def test_speed_against_cublas_fp32_4096(functions, blas, device):
    """4096^3 float32, B as [N, K] (weights): every SIMT tactic and cuBLAS (fp32, and TF32
    for information); CUDA events, median of 10 after 2 warm-ups. Prints TFLOP/s; asserts
    only that the fp32 results agree with a float64 product."""
    import cupy

    size = 4096
    rng = np.random.default_rng(4096)
    a = to_device(random(rng, (size, size), F32))
    b = to_device(random(rng, (size, size), F32, 1 / 64))
    want = cupy.matmul(a.astype(cupy.float64), b.astype(cupy.float64).T)
    flops = 2 * size**3
    problem = GemmProblem(size, size, size, dtype=F32, trans_b=True)
    kernels = [simt_gemm_kernel(problem, t) for t in SIMT_TACTICS]
    functions.load(kernels)

    def median_ms(fn) -> float:
        for _ in range(2):
            fn()
        times = []
        for _ in range(10):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end))
        return statistics.median(times)

    def rel_error(d) -> float:
        return float(cupy.linalg.norm(d.astype(cupy.float64) - want) / cupy.linalg.norm(want))

    lines, best = [], None
    for kernel in kernels:
        d = cupy.empty((size, size), cupy.float32)
        ms = median_ms(lambda k=kernel, d=d: functions.launch(k, [a, b, d]))
        rel = rel_error(d)
        assert rel < TOLERANCE[F32], (kernel.tactic.label, rel)
        lines.append(f"  rtxrt {kernel.tactic.label:22s} {ms:7.3f} ms  {flops / ms / 1e9:6.1f} TFLOP/s  (rel err {rel:.1e})")
        if best is None or ms < best[0]:
            best = (ms, kernel.tactic)
    results = {}
    for compute in ("fp32", "tf32"):
        d = cupy.empty((size, size), cupy.float32)
        ms = median_ms(lambda c=compute, d=d: blas.gemm(a.data.ptr, b.data.ptr, d.data.ptr, size, size, size,
                                                        dtype=F32, compute=c, trans_b=True))
        rel = rel_error(d)
        results[compute] = ms
        lines.append(f"  cuBLAS {compute}                        {ms:7.3f} ms  {flops / ms / 1e9:6.1f} TFLOP/s"
                     f"  (rel err {rel:.1e})")
        if compute == "fp32":
            assert rel < TOLERANCE[F32], rel
    lines.append(f"  best SIMT tactic {best[1].label}: {flops / best[0] / 1e9:.1f} TFLOP/s = "
                 f"{results['fp32'] / best[0]:.2f} x cuBLAS fp32")
    print(f"\n4096^3 fp32 GEMM on {device.describe()}:\n" + "\n".join(lines))
