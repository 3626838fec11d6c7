"""The SIMT GEMM (rtxrt/jit/codegen/gemm_simt.py) and the stand-alone GEMM epilogue
(rtxrt/jit/codegen/epilogue.py, ``epilogue_kernel``) without a GPU: every kernel of the
catalogues compiles with NVRTC for every supported arch (bf16 too on sm_75: no tensor cores
here), and the pure parts (tactics, candidates, grids, arguments, names) behave.

``CASES``: every candidate tactic x fp32/fp16/bf16 x both layouts of B (epilogues alternating
between none and alpha + bias + gelu + residual); each activation with its parameters once;
edge shapes (odd M, N, K, K = 0, batches with shared operands, padded leading dims, fp16 in
and fp32 out). ``EPILOGUE_CASES``: each activation x residual once, bias on and off, output
types rotating, batched and padded.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pytest

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.ir.activations import ACTIVATIONS, RESIDUALS
from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.epilogue import epilogue_kernel, has_epilogue
from rtxrt.backends.cuda.ops.gemm_source import GemmProblem
from rtxrt.backends.cuda.ops.gemm_simt_source import (
    SIMT_TACTICS,
    SimtTactic,
    simt_candidate_tactics,
    simt_gemm_kernel,
)
from rtxrt.backends.cuda.codegen.kernel_source import GridLaunch, LaunchPolicy
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS

from .helpers import compile_jobs

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
PARAMS = {"leaky_relu": (0.2,), "clip": (-0.5, 0.75), "hard_sigmoid": (0.25, 0.4)}
FULL = {"alpha": 0.5, "bias": True, "activation": "gelu", "residual": "after_activation"}


@dataclass(frozen=True)
class Case:
    id: str
    problem: GemmProblem
    tactic: SimtTactic


def matrix_cases() -> list[Case]:
    cases = []
    for i, (tactic, dtype, trans_b) in enumerate(itertools.product(SIMT_TACTICS, (F32, F16, BF16), (True, False))):
        epilogue = FULL if i % 2 else {}
        problem = GemmProblem(256, 384, 512, dtype=dtype, trans_b=trans_b, **epilogue)
        cases.append(Case(f"{tactic.label}-{dtype.short}-{'NK' if trans_b else 'KN'}-{'full' if epilogue else 'plain'}",
                          problem, tactic))
    return cases


def activation_cases() -> list[Case]:
    cases = []
    for i, name in enumerate(ACTIVATIONS):
        tactic = SIMT_TACTICS[i % len(SIMT_TACTICS)]
        dtype = (F32, F16, BF16)[i % 3]
        problem = GemmProblem(96, 80, 72, dtype=dtype, trans_b=i % 2 == 0, bias=i % 2 == 1, activation=name,
                              activation_params=PARAMS.get(name, ()), residual=RESIDUALS[i % 3],
                              out_dtype=F32 if i % 4 == 3 else None)
        cases.append(Case(f"act_{name}-{tactic.label}-{dtype.short}", problem, tactic))
    return cases


def edge_cases() -> list[Case]:
    big, small = SIMT_TACTICS[0], SIMT_TACTICS[2]
    return [
        Case("odd_37x61x83", GemmProblem(37, 61, 83, dtype=F32, bias=True, activation="relu"), big),
        Case("odd_37x61x83-KN-f16-f32out", GemmProblem(37, 61, 83, dtype=F16, trans_b=False, out_dtype=F32), small),
        Case("k0", GemmProblem(64, 64, 0, dtype=F32, bias=True), small),
        Case("batch3_shared_b", GemmProblem(45, 70, 96, dtype=F32, batch=3, stride_b=0, residual="after_activation"),
             big),
        Case("batch3_shared_a-KN", GemmProblem(45, 72, 96, dtype=F32, batch=3, stride_a=0, trans_b=False), small),
        Case("padded_lds", GemmProblem(100, 200, 64, dtype=F32, lda=67, ldb=72, ldd=203, ldz=210,
                                       residual="before_activation"), SIMT_TACTICS[1]),
    ]


def epilogue_cases() -> list[GemmProblem]:
    problems = []
    for i, (activation, residual) in enumerate(itertools.product(ACTIVATIONS, RESIDUALS)):
        if activation == "none" and residual == "none":
            problems.append(GemmProblem(37, 61, 83, dtype=F32, bias=True))  # bias alone
            continue
        dtype = (F32, F16, BF16)[i % 3]
        problems.append(GemmProblem(37, 61, 83, dtype=dtype, out_dtype=F32 if i % 4 == 1 else None, batch=1 + i % 3,
                                    bias=i % 2 == 0, activation=activation, activation_params=PARAMS.get(activation, ()),
                                    residual=residual, ldd=61 + i % 5, ldz=61 + i % 7))
    return problems


CASES: list[Case] = matrix_cases() + activation_cases() + edge_cases()
EPILOGUE_CASES = epilogue_cases()


# ---------------------------------------------------------------- compiling

def test_the_catalogues_cover_every_tactic_type_activation_and_residual():
    assert {c.tactic for c in CASES} == set(SIMT_TACTICS)
    assert {c.problem.dtype for c in CASES} == {F32, F16, BF16}
    assert {c.problem.activation for c in CASES} == set(ACTIVATIONS)
    assert {c.problem.residual for c in CASES} == set(RESIDUALS)
    assert {(p.activation, p.residual) for p in EPILOGUE_CASES} == set(itertools.product(ACTIVATIONS, RESIDUALS))
    assert {p.out_dtype for p in EPILOGUE_CASES} == {F32, F16, BF16}
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_kernel_compiles_for_every_supported_arch():
    started = time.perf_counter()
    kernels = [simt_gemm_kernel(c.problem, c.tactic) for c in CASES] + [epilogue_kernel(p) for p in EPILOGUE_CASES]
    jobs = {(k.name, arch): k.source for k, arch in itertools.product(kernels, SUPPORTED_ARCHS)}
    cubins = compile_jobs(jobs)
    assert all(c.startswith(b"\x7fELF") and len(c) > 2048 for c in cubins.values())
    assert {arch for _, arch in cubins} == set(SUPPORTED_ARCHS)
    print(f"\n{len(CASES)} SIMT GEMM and {len(EPILOGUE_CASES)} epilogue kernels -> {len(cubins)} cubins "
          f"in {time.perf_counter() - started:.1f} s")


def test_the_source_is_header_free_fma_and_uses_no_tensor_cores():
    kernel = simt_gemm_kernel(GemmProblem(256, 384, 512, dtype=F32, **FULL), SIMT_TACTICS[0])
    assert "#include" not in kernel.source and "mma" not in kernel.source and "fmaf(" in kernel.source
    assert f"__launch_bounds__(THREADS) {kernel.name}(" in kernel.source and "THREADS = 256" in kernel.source
    assert "const float* __restrict__ A, const float* __restrict__ B" in kernel.source
    half = simt_gemm_kernel(GemmProblem(256, 384, 512, dtype=BF16, out_dtype=F32), SIMT_TACTICS[0])
    assert "const unsigned short* __restrict__ A" in half.source and "rtx_bf2f(A[" in half.source


# ---------------------------------------------------------------- tactics and grids

def test_candidate_tactics_are_valid_distinct_and_fit_static_shared_memory():
    assert len(SIMT_TACTICS) >= 3 and len({t.label for t in SIMT_TACTICS}) == len(SIMT_TACTICS)
    for t in SIMT_TACTICS:
        assert t.smem_bytes <= 48 * 1024 and t.threads % 32 == 0 and t.threads <= 1024 and t.tm * t.tn <= 64
    t = SimtTactic(128, 64, 8, 8, 8)
    assert (t.threads, t.label, t.smem_bytes) == (128, "simt_128x64x8_t8x8", 2 * 4 * 8 * (132 + 68))


@pytest.mark.parametrize("args, message", [
    ((128, 128, 8, 6, 8), "groups of 4"),
    ((100, 128, 8, 8, 8), "does not split"),
    ((64, 64, 8, 4, 2), "groups of 4"),
    ((32, 32, 8, 8, 8), "whole number of warps"),
    ((256, 256, 8, 4, 4), "whole number of warps"),
    ((128, 128, 8, 16, 8), "accumulators"),
    ((128, 128, 64, 8, 8), "shared memory"),
    ((0, 64, 8, 4, 4), "positive"),
])
def test_invalid_tactics_are_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        SimtTactic(*args)


def test_candidates_drop_tiles_wider_than_the_problem_and_small_tiles_for_big_ones():
    assert simt_candidate_tactics() == SIMT_TACTICS
    big = simt_candidate_tactics(GemmProblem(4096, 4096, 4096, dtype=F32))
    assert big[0] == SimtTactic(128, 128, 8, 8, 8) and all(t.bm >= 64 for t in big)
    skinny = simt_candidate_tactics(GemmProblem(1, 768, 768, dtype=F32))
    assert all(t.bm <= 64 for t in skinny) and any(t.bm == 32 for t in skinny)
    narrow = simt_candidate_tactics(GemmProblem(4096, 16, 64, dtype=F32))
    assert narrow and all(t.bn <= 64 for t in narrow)
    assert SimtTactic(64, 64, 16, 4, 4) in simt_candidate_tactics(GemmProblem(1, 1, 1, dtype=F32))


def test_grid_covers_m_by_x_n_by_y_and_the_batch_by_z():
    t = SimtTactic(128, 64, 8, 8, 8)
    assert t.grid(GemmProblem(300, 129, 5, dtype=F32, batch=3)) == (3, 3, 3)
    assert t.grid(GemmProblem(0, 64, 7, dtype=F32)) == (0, 0, 0)
    kernel = simt_gemm_kernel(GemmProblem(300, 129, 0, dtype=F32), t)  # K = 0 still writes the epilogue
    assert kernel.launch == GridLaunch((3, 3, 1), (128, 1, 1), t.smem_bytes)
    with pytest.raises(CodegenError, match="grid"):
        t.grid(GemmProblem(64, 65536 * 64 + 1, 16, dtype=F32))


def test_the_default_tactic_is_the_first_candidate():
    p = GemmProblem(1, 768, 768, dtype=F32)
    assert simt_gemm_kernel(p).tactic == simt_candidate_tactics(p)[0]


# ---------------------------------------------------------------- kernels

def test_kernel_describes_its_arguments_in_fused_matmul_order():
    k = simt_gemm_kernel(GemmProblem(45, 70, 96, dtype=F32, batch=3, stride_b=0, bias=True,
                                     residual="after_activation"), SIMT_TACTICS[2])
    assert [(a.name, a.role, a.index, a.dtype, a.shape) for a in k.args] == [
        ("A", BufferRole.IN, 0, F32, (3, 45, 96)),
        ("B", BufferRole.IN, 1, F32, (70, 96)),  # shared by the batch
        ("bias", BufferRole.IN, 2, F32, (70,)),
        ("Z", BufferRole.IN, 3, F32, (3, 45, 70)),
        ("D", BufferRole.OUT, 0, F32, (3, 45, 70)),
    ]
    plain = simt_gemm_kernel(GemmProblem(8, 8, 16, dtype=F16, trans_b=False, out_dtype=F32), SIMT_TACTICS[2])
    assert [(a.name, a.dtype, a.shape) for a in plain.args] == [("A", F16, (8, 16)), ("B", F16, (16, 8)),
                                                                ("D", F32, (8, 8))]


def test_kernel_name_is_a_hash_of_the_source_and_the_same_for_the_same_work():
    t = SIMT_TACTICS[2]
    p = GemmProblem(64, 96, 128, dtype=F32, bias=True, activation="silu")
    a, b = simt_gemm_kernel(p, t), simt_gemm_kernel(p, t)
    assert a.name == b.name and a.name.startswith("rtx_sgemm_") and a.name in a.source
    assert "__RTX_KERNEL__" not in a.source
    others = [simt_gemm_kernel(GemmProblem(64, 96, 128, dtype=F32, bias=True, activation="gelu"), t),
              simt_gemm_kernel(GemmProblem(64, 96, 128, dtype=F32, bias=True, activation="silu", trans_b=False), t),
              simt_gemm_kernel(GemmProblem(64, 96, 128, dtype=F16, bias=True, activation="silu"), t),
              simt_gemm_kernel(p, SIMT_TACTICS[3])]
    assert len({a.name, *(k.name for k in others)}) == 1 + len(others)


# ---------------------------------------------------------------- the stand-alone epilogue

def test_epilogue_kernel_reads_and_writes_d_in_place_without_alpha():
    p = GemmProblem(37, 61, 83, dtype=F32, batch=2, alpha=0.5, bias=True, activation="relu",
                    residual="before_activation", ldd=64)
    k = epilogue_kernel(p)
    assert [(a.name, a.role, a.index, a.dtype, a.shape) for a in k.args] == [
        ("bias", BufferRole.IN, 2, F32, (61,)),
        ("Z", BufferRole.IN, 3, F32, (2, 37, 61)),
        ("D", BufferRole.OUT, 0, F32, (2, 37, 61)),
    ]
    assert k.launch == LaunchPolicy(2 * 37 * 61) and k.name.startswith("rtx_gemm_epilogue_")
    assert "x *=" not in k.source  # cuBLAS applied alpha
    assert "float x = D[o];" in k.source and "D[o] = x;" in k.source and "LDD = 64" in k.source
    half = epilogue_kernel(GemmProblem(8, 8, 8, dtype=BF16, activation="tanh"))
    assert [a.name for a in half.args] == ["D"] and "rtx_f2bf(x)" in half.source


def test_an_epilogue_kernel_needs_an_epilogue():
    assert not has_epilogue(GemmProblem(8, 8, 8, dtype=F32, alpha=2.0))
    assert all(has_epilogue(GemmProblem(8, 8, 8, **kw))
               for kw in ({"bias": True}, {"activation": "relu"}, {"residual": "after_activation"}))
    with pytest.raises(CodegenError, match="no epilogue"):
        epilogue_kernel(GemmProblem(8, 8, 8, dtype=F32, alpha=2.0))
