"""Generated tensor-core GEMMs (rtxrt/jit/codegen/gemm.py) on the GPU.

Each kernel is compiled with NVRTC for the probed GPU's arch, loaded from its cubin file with
CuPy and run on fresh random inputs (seeded per case, never zeros; B scaled by 1/sqrt(K) so
that results are O(1), where the activations bend). The output buffer is filled with NaN
first, so that an element the kernel did not write shows.

Tolerances, as relative norms ||D - ref|| / ||ref||, and per element |D - ref| <= tol *
(|ref| + rms(ref)) so that one wrong tile of a large matrix cannot hide in the norm:
- against float64 products of the same (fp16/bf16) inputs: tol 2e-3 for fp16 results (a
  rounding to fp16 is at most 4.9e-4 relative; fp32 accumulation adds ~1e-6), 1e-2 for bf16
  (a rounding is at most 3.9e-3), 2e-4 for fp32 results (accumulation only);
- against the reference backend's rtxrt::FusedMatMul (fp32 matmul and epilogue, rounded once
  to the inputs' type): the same for fp16 and bf16 results; the two sides' fp32 values differ
  by ~1e-6, so their roundings differ by at most one ulp (9.8e-4 fp16, 7.8e-3 bf16).

``test_speed_against_cublas_4096`` times every candidate tactic and cupy.matmul (cuBLAS) on
4096^3 fp16 with CUDA events (median of 20 after warm-up) and prints TFLOP/s; it asserts
correctness only.
"""
from __future__ import annotations

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
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.ops.gemm_source import (
    CANDIDATE_TACTICS,
    GemmKernel,
    GemmProblem,
    GemmTactic,
    gemm_kernel,
    mma_instruction,
)
from rtxrt.backends.cuda.compile.nvrtc import compile_many

from .helpers import check_close, random, storage, to_device

pytestmark = pytest.mark.gpu

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
TOLERANCE = {F16: 2e-3, BF16: 1e-2, F32: 2e-4}
NAN_BITS = {F16: 0x7E00, BF16: 0x7FC0}
PARAMS = {"leaky_relu": (0.2,), "clip": (-0.5, 0.75), "hard_sigmoid": (0.25, 0.4)}


@dataclass(frozen=True)
class Case:
    id: str
    problem: GemmProblem
    tactic: GemmTactic

    @property
    def kernel(self) -> GemmKernel:
        return gemm_kernel(self.problem, self.tactic)


# (batch, M, N, K): odd sizes everywhere, a batch, BERT's FFN, one row, K not a multiple of
# BK but of 8 (16-byte copies with a partial last K step), K below one mma step.
SHAPES = [(1, 37, 61, 83), (3, 45, 70, 96), (1, 128, 3072, 768), (1, 1, 768, 768), (1, 200, 136, 200),
          (1, 64, 64, 5)]


def gemm_cases() -> list[Case]:
    cases = []
    for (batch, m, n, k) in SHAPES:
        for tactic in CANDIDATE_TACTICS:
            for dtype in (F16, BF16):
                for trans_b in (True, False):
                    problem = GemmProblem(m, n, k, dtype=dtype, trans_b=trans_b, batch=batch)
                    cases.append(Case(f"{batch}x{m}x{n}x{k}-{tactic.label}-{dtype.short}-{'NK' if trans_b else 'KN'}",
                                      problem, tactic))
    for dtype in (F16, BF16):  # fp32 results
        problem = GemmProblem(37, 61, 83, dtype=dtype, out_dtype=F32, alpha=0.75)
        cases.append(Case(f"37x61x83-f32out-{dtype.short}", problem, CANDIDATE_TACTICS[0]))
        problem = GemmProblem(128, 256, 256, dtype=dtype, out_dtype=F32, trans_b=False)
        cases.append(Case(f"128x256x256-f32out-{dtype.short}-KN", problem, CANDIDATE_TACTICS[1]))
    return cases


def epilogue_cases() -> list[Case]:
    cases = []
    for i, (activation, residual) in enumerate((a, r) for a in ACTIVATIONS for r in RESIDUALS):
        tactic = CANDIDATE_TACTICS[i % len(CANDIDATE_TACTICS)]
        dtype = BF16 if i % 4 == 3 else F16
        batch, m, n, k = ((1, 37, 61, 83), (2, 64, 96, 128), (1, 130, 72, 40))[i % 3]
        problem = GemmProblem(m, n, k, dtype=dtype, trans_b=i % 2 == 0, batch=batch, bias=i % 5 != 4,
                              alpha=0.5 if i % 3 == 1 else 1.0, activation=activation,
                              activation_params=PARAMS.get(activation, ()), residual=residual)
        cases.append(Case(f"{activation}-{residual}-{batch}x{m}x{n}x{k}-{dtype.short}-{tactic.label}", problem, tactic))
    return cases


GEMM_CASES, EPILOGUE_CASES = gemm_cases(), epilogue_cases()


@pytest.fixture(scope="module")
def device():
    from rtxrt.backends.cuda.device import probe

    return probe()


class Kernels:
    """Compiles kernels for the GPU (in parallel, once per name) and loads them from cubin files."""

    def __init__(self, arch: str, folder):
        self.arch, self.folder, self.functions = arch, folder, {}

    def load(self, kernels: list[GemmKernel]) -> None:
        import cupy

        missing = {k.name: k.source for k in kernels if k.name not in self.functions}
        for name, cubin in compile_many(missing.items(), self.arch).items():
            path = self.folder / f"{name}.cubin"
            path.write_bytes(cubin)
            self.functions[name] = cupy.RawModule(path=str(path)).get_function(name)

    def __call__(self, kernel: GemmKernel):
        if not self.supports(kernel.problem):
            pytest.skip(f"{kernel.problem.dtype.short} GEMM does not run on {self.arch}")
        self.load([kernel])
        return self.functions[kernel.name]

    def supports(self, problem: GemmProblem) -> bool:
        try:
            mma_instruction(self.arch, problem.dtype)
        except CodegenError:
            return False
        return True


@pytest.fixture(scope="module")
def kernels(device, tmp_path_factory) -> Kernels:
    compiled = Kernels(device.arch, tmp_path_factory.mktemp("gemm_cubins"))
    compiled.load([c.kernel for c in GEMM_CASES + EPILOGUE_CASES if compiled.supports(c.problem)])
    return compiled


# ---------------------------------------------------------------- helpers



def poisoned(shape: tuple[int, ...], dtype: DType):
    import cupy

    if dtype == F32:
        return cupy.full(shape, np.nan, cupy.float32)
    return cupy.full(shape, NAN_BITS[dtype], cupy.uint16)


def from_device(array, dtype: DType) -> np.ndarray:
    return array.get().view(storage(dtype))


def launch(function, kernel: GemmKernel, a, b, bias=None, z=None, d=None) -> None:
    import cupy

    p = kernel.problem
    args = [a, b] + ([bias] if p.bias else []) + ([z] if p.has_z else []) + [d]
    if all(kernel.launch.grid):
        function(kernel.launch.grid, kernel.launch.block, tuple(args))
    cupy.cuda.get_current_stream().synchronize()


@dataclass
class Inputs:
    a: np.ndarray
    b: np.ndarray
    bias: np.ndarray | None
    z: np.ndarray | None


def inputs_for(case: Case) -> Inputs:
    p = case.problem
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    lead = (p.batch,) if p.batch != 1 else ()
    a = random(rng, (*lead, p.m, p.k), p.dtype)
    b = random(rng, (*lead, *((p.n, p.k) if p.trans_b else (p.k, p.n))), p.dtype, 1 / math.sqrt(max(p.k, 1)))
    bias = random(rng, (p.n,), p.out_dtype) if p.bias else None
    z = random(rng, (*lead, p.m, p.n), p.out_dtype) if p.has_z else None
    return Inputs(a, b, bias, z)


def run(kernels: Kernels, case: Case, x: Inputs) -> np.ndarray:
    kernel = case.kernel
    p = kernel.problem
    d = poisoned(kernel.outputs[0].shape, p.out_dtype)
    launch(kernels(kernel), kernel, to_device(x.a), to_device(x.b),
           None if x.bias is None else to_device(x.bias), None if x.z is None else to_device(x.z), d)
    return from_device(d, p.out_dtype)


def float64_product(p: GemmProblem, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    b64 = b.astype(np.float64)
    return p.alpha * np.matmul(a.astype(np.float64), b64.swapaxes(-1, -2) if p.trans_b else b64)


def reference_fused_matmul(p: GemmProblem, x: Inputs) -> np.ndarray:
    attrs = {"trans_b": int(p.trans_b), "alpha": p.alpha, "activation": p.activation,
             "activation_params": list(p.activation_params), "residual": p.residual}
    node = Node("FusedMatMul", ["a", "b", "bias" if p.bias else "", "z" if p.has_z else ""], ["y"], attrs,
                domain="rtxrt")
    kernel = find_kernel("FusedMatMul", "rtxrt")(node, 1, lambda *args: [])
    return kernel.run(x.a, x.b, x.bias, x.z)


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: c.id)
def test_gemm_matches_a_float64_product(case, kernels):
    x = inputs_for(case)
    got = run(kernels, case, x)
    check_close(got, float64_product(case.problem, x.a, x.b), TOLERANCE[case.problem.out_dtype], case.id)


@pytest.mark.parametrize("case", EPILOGUE_CASES, ids=lambda c: c.id)
def test_epilogue_matches_the_reference_fused_matmul(case, kernels):
    x = inputs_for(case)
    got = run(kernels, case, x)
    want = reference_fused_matmul(case.problem, x)
    assert want.dtype == got.dtype
    check_close(got, want, TOLERANCE[case.problem.out_dtype], case.id)


def test_fp32_output_epilogue_matches_the_reference(kernels):
    case = Case("f32out-epilogue", GemmProblem(37, 61, 83, out_dtype=F32, bias=True, activation="gelu",
                                               residual="before_activation", alpha=1.5), CANDIDATE_TACTICS[2])
    x = inputs_for(case)
    got = run(kernels, case, x)
    want = reference_fused_matmul(case.problem, x)  # rounded to fp16, A's type
    check_close(got, want, TOLERANCE[F16], case.id)


def test_padded_leading_dims_and_unwritten_gaps(kernels):
    """A with 3 elements of padding per row (no 16-byte copies), B with 8, D and Z wider than
    N: the gaps of D stay untouched."""

    m, n, k = 100, 200, 64
    p = GemmProblem(m, n, k, lda=k + 3, ldb=k + 8, ldd=n + 5, ldz=n + 7, bias=True, activation="relu",
                    residual="after_activation")
    case = Case("padded", p, CANDIDATE_TACTICS[0])
    kernel = case.kernel
    rng = np.random.default_rng(7)
    a_buf = random(rng, (m, k + 3), F16)
    b_buf = random(rng, (n, k + 8), F16, 1 / 8)
    z_buf = random(rng, (m, n + 7), F16)
    bias = random(rng, (n,), F16)
    d = poisoned((m, n + 5), F16)
    launch(kernels(kernel), kernel, to_device(a_buf), to_device(b_buf), to_device(bias), to_device(z_buf), d)
    got = from_device(d, F16)
    x = Inputs(a_buf[:, :k], b_buf[:, :k], bias, z_buf[:, :n])
    check_close(got[:, :n], reference_fused_matmul(p, x), TOLERANCE[F16], case.id)
    assert np.isnan(got[:, n:].astype(np.float32)).all(), "the kernel wrote into the gaps between rows of D"


def test_misaligned_pointers_take_the_element_wise_path(kernels):
    """Shapes that allow 16-byte copies, but A, B and D start one element into their buffers."""
    m, n, k = 256, 384, 512
    for trans_b in (True, False):
        p = GemmProblem(m, n, k, trans_b=trans_b)
        case = Case(f"misaligned-{trans_b}", p, CANDIDATE_TACTICS[1])
        kernel = case.kernel
        x = inputs_for(case)
        a = to_device(np.concatenate([np.ones(1, np.float16), x.a.reshape(-1)]))
        b = to_device(np.concatenate([np.ones(1, np.float16), x.b.reshape(-1)]))
        d = poisoned((m * n + 1,), F16)
        launch(kernels(kernel), kernel, a[1:], b[1:], None, None, d[1:])
        got = from_device(d, F16)
        assert np.isnan(got[0].astype(np.float32)), "the kernel wrote before D"
        check_close(got[1:].reshape(m, n), float64_product(p, x.a, x.b), TOLERANCE[F16], case.id)


@pytest.mark.parametrize("shared", ["a", "b"])
def test_a_batch_may_share_one_operand(kernels, shared):
    """stride 0: one A (or B) for all three batches, as FusedMatMul broadcasts it."""
    batch, m, n, k = 3, 45, 72, 96
    p = GemmProblem(m, n, k, batch=batch, trans_b=shared == "a", stride_a=0 if shared == "a" else None,
                    stride_b=0 if shared == "b" else None, residual="before_activation", activation="silu")
    case = Case(f"shared-{shared}", p, CANDIDATE_TACTICS[3])
    rng = np.random.default_rng(11)
    a = random(rng, (m, k) if shared == "a" else (batch, m, k), F16)
    b_shape = (n, k) if p.trans_b else (k, n)
    b = random(rng, b_shape if shared == "b" else (batch, *b_shape), F16, 0.1)
    z = random(rng, (batch, m, n), F16)
    got = run(kernels, case, Inputs(a, b, None, z))
    check_close(got, reference_fused_matmul(p, Inputs(a, b, None, z)), TOLERANCE[F16], case.id)


def test_an_in_place_residual_reads_z_before_writing_d(kernels):
    p = GemmProblem(64, 96, 128, residual="after_activation", activation="tanh", bias=True)
    case = Case("in-place", p, CANDIDATE_TACTICS[4])
    kernel = case.kernel
    x = inputs_for(case)
    d = to_device(x.z)  # Z and D are one buffer
    launch(kernels(kernel), kernel, to_device(x.a), to_device(x.b), to_device(x.bias), d, d)
    check_close(from_device(d, F16), reference_fused_matmul(p, x), TOLERANCE[F16], case.id)


def test_speed_against_cublas_4096(kernels, device):
    """4096^3 fp16 (fp32 accumulation): every candidate tactic with B as [N, K] (weights),
    the best one with B as [K, N], and cupy.matmul (cuBLAS) on [K, N]; CUDA events, median of
    20 after 3 warm-ups. Prints TFLOP/s; asserts only that the results agree."""
    import cupy

    size = 4096
    rng = np.random.default_rng(4096)
    a = random(rng, (size, size), F16)
    b_nk = random(rng, (size, size), F16, 1 / 64)
    a_d, b_nk_d = to_device(a).view(cupy.float16), to_device(b_nk).view(cupy.float16)
    b_kn_d = cupy.ascontiguousarray(b_nk_d.T)
    flops = 2 * size**3

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(20):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end))
        return statistics.median(times)

    want = cupy.matmul(a_d.astype(cupy.float32), b_kn_d.astype(cupy.float32))
    lines, best = [], None
    kernels.load([gemm_kernel(GemmProblem(size, size, size, trans_b=tb), t)
                  for t in CANDIDATE_TACTICS for tb in (True, False)])
    for trans_b in (True, False):
        tactics = CANDIDATE_TACTICS if trans_b else (best[1],)
        for tactic in tactics:
            kernel = gemm_kernel(GemmProblem(size, size, size, trans_b=trans_b), tactic)
            function = kernels(kernel)
            d = cupy.empty((size, size), cupy.float16)
            args = (a_d, b_nk_d if trans_b else b_kn_d, d)
            ms = median_ms(lambda f=function, k=kernel, args=args: f(k.launch.grid, k.launch.block, args))
            rel = float(cupy.linalg.norm(d.astype(cupy.float32) - want) / cupy.linalg.norm(want))
            assert rel < TOLERANCE[F16], (tactic.label, trans_b, rel)
            tflops = flops / ms / 1e9
            lines.append(f"  rtxrt {tactic.label:22s} B:{'NK' if trans_b else 'KN'}  {ms:7.3f} ms  {tflops:6.1f} TFLOP/s"
                         f"  (rel err {rel:.1e})")
            if trans_b and (best is None or ms < best[0]):
                best = (ms, tactic)
    out = cupy.empty((size, size), cupy.float16)
    ms = median_ms(lambda: cupy.matmul(a_d, b_kn_d, out=out))
    lines.append(f"  cuBLAS (cupy.matmul)          B:KN  {ms:7.3f} ms  {flops / ms / 1e9:6.1f} TFLOP/s")
    lines.append(f"  best rtxrt tactic {best[1].label}: {flops / best[0] / 1e9:.1f} TFLOP/s = "
                 f"{ms / best[0]:.2f} x cuBLAS")
    print(f"\n4096^3 fp16 GEMM on {device.describe()}:\n" + "\n".join(lines))
