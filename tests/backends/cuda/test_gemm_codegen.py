"""The generated tensor-core GEMM (rtxrt/jit/codegen/gemm.py) compiles with NVRTC for every
supported arch (no GPU needed), and its pure parts (tactics, grids, problems, argument
layout) behave.

``CASES`` is the compile catalogue: every candidate tactic x fp16/bf16 x two epilogue
variants (none; alpha, bias, gelu and a residual, fp32 out) x both layouts of B, on a shape that allows 16-byte copies (so both the cp.async and
the element-wise load paths are in the source); each activation with its parameters once
(tactics, dtypes and layouts rotating); and edge shapes (odd M, N, K, batches with shared
operands, padded leading dims). bf16 is skipped on sm_75, where generation says why.
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
from rtxrt.backends.cuda.ops.gemm_source import (
    CANDIDATE_TACTICS,
    GemmProblem,
    GemmTactic,
    candidate_tactics,
    fused_matmul_problem,
    gemm_kernel,
    mma_instruction,
)
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS
from rtxrt.backends.cuda.compile.nvrtc import KernelCompileError, compile_cubin

from .helpers import compile_jobs

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32

EPILOGUES = {
    "plain": {},
    "alpha_bias_gelu_residual_after_f32": {"alpha": 0.5, "bias": True, "activation": "gelu",
                                               "residual": "after_activation", "out_dtype": F32},
}
PARAMS = {"leaky_relu": (0.2,), "clip": (-0.5, 0.75), "hard_sigmoid": (0.25, 0.4)}
ALIGNED = (256, 384, 512)  # M, N, K: every load and store may be vectorized


@dataclass(frozen=True)
class Case:
    id: str
    problem: GemmProblem
    tactic: GemmTactic


def matrix_cases() -> list[Case]:
    cases = []
    for tactic, dtype, (epi, kwargs), trans_b in itertools.product(
            CANDIDATE_TACTICS, (F16, BF16), EPILOGUES.items(), (True, False)):
        problem = GemmProblem(*ALIGNED, dtype=dtype, trans_b=trans_b, **kwargs)
        cases.append(Case(f"{tactic.label}-{dtype.short}-{epi}-{'NK' if trans_b else 'KN'}", problem, tactic))
    return cases


def activation_cases() -> list[Case]:
    cases = []
    for i, name in enumerate(ACTIVATIONS):
        tactic = CANDIDATE_TACTICS[i % len(CANDIDATE_TACTICS)]
        dtype = BF16 if i % 3 == 2 else F16
        problem = GemmProblem(*ALIGNED, dtype=dtype, trans_b=i % 2 == 0, bias=i % 2 == 1, activation=name,
                              activation_params=PARAMS.get(name, ()), residual=RESIDUALS[i % 3],
                              out_dtype=F32 if i % 4 == 3 else None)
        cases.append(Case(f"act_{name}-{tactic.label}-{dtype.short}", problem, tactic))
    return cases


def edge_cases() -> list[Case]:
    small, big = CANDIDATE_TACTICS[4], CANDIDATE_TACTICS[0]
    return [
        Case("odd_37x61x83", GemmProblem(37, 61, 83, bias=True, activation="relu"), small),
        Case("odd_37x61x83-KN-bf16", GemmProblem(37, 61, 83, dtype=BF16, trans_b=False, out_dtype=F32), big),
        Case("k5", GemmProblem(64, 64, 5, activation="tanh"), small),
        Case("batch3_shared_b", GemmProblem(45, 70, 96, batch=3, stride_b=0, residual="after_activation"), big),
        Case("batch3_shared_a-KN", GemmProblem(45, 72, 96, batch=3, stride_a=0, trans_b=False), small),
        Case("padded_lds", GemmProblem(100, 200, 64, lda=67, ldb=72, ldd=203, residual="before_activation",
                                       ldz=210), big),
    ]


CASES: list[Case] = matrix_cases() + activation_cases() + edge_cases()


# ---------------------------------------------------------------- compiling

def test_the_catalogue_covers_every_activation_residual_and_tactic():
    assert {c.problem.activation for c in CASES} == set(ACTIVATIONS)
    assert {c.problem.residual for c in CASES} == set(RESIDUALS)
    assert {c.tactic for c in CASES} == set(CANDIDATE_TACTICS)
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_kernel_compiles_for_every_supported_arch():
    """One thread pool over (kernel, arch) pairs; a kernel's source is the same for every arch
    and named by its hash, so each distinct (name, arch) compiles once."""
    started = time.perf_counter()
    jobs: dict[tuple[str, str], str] = {}
    refused = 0
    for case, arch in itertools.product(CASES, SUPPORTED_ARCHS):
        if case.problem.dtype == BF16 and arch == "sm_75":
            with pytest.raises(CodegenError, match="bf16 GEMM needs sm_80"):
                gemm_kernel(case.problem, case.tactic, arch)
            refused += 1
            continue
        kernel = gemm_kernel(case.problem, case.tactic, arch)
        jobs.setdefault((kernel.name, arch), kernel.source)
    generated = time.perf_counter() - started
    cubins = compile_jobs(jobs)
    assert all(c.startswith(b"\x7fELF") and len(c) > 4096 for c in cubins.values())
    assert {arch for _, arch in cubins} == set(SUPPORTED_ARCHS)
    print(f"\n{len(CASES)} cases -> {len({n for n, _ in jobs})} distinct kernels, generated in {generated:.2f} s; "
          f"{len(cubins)} cubins for {len(SUPPORTED_ARCHS)} archs in {time.perf_counter() - started:.1f} s; "
          f"{refused} bf16 x sm_75 refused")


def test_nvrtc_itself_refuses_bf16_for_sm_75_with_a_clear_message():
    case = next(c for c in CASES if c.problem.dtype == BF16)
    kernel = gemm_kernel(case.problem, case.tactic)  # no arch: the source is generated
    with pytest.raises(KernelCompileError, match="bf16 needs sm_80"):
        compile_cubin(kernel.source, kernel.name, "sm_75")


def test_mma_instructions_per_arch():
    assert mma_instruction("sm_75", F16) == "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32"
    assert mma_instruction("sm_86", F16) == "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
    assert mma_instruction("sm_120", BF16) == "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
    assert mma_instruction("sm_90a", BF16).endswith("bf16.bf16.f32")
    with pytest.raises(CodegenError, match="sm_80"):
        mma_instruction("sm_75", BF16)
    with pytest.raises(CodegenError, match="sm_75 or newer"):
        mma_instruction("sm_70", F16)
    with pytest.raises(CodegenError, match="float16 or bfloat16"):
        mma_instruction("sm_90", F32)
    with pytest.raises(ValueError, match="sm_86"):
        mma_instruction("86", F16)


def test_the_source_is_header_free_and_uses_ldmatrix_and_cp_async():
    kernel = gemm_kernel(GemmProblem(*ALIGNED, trans_b=False), CANDIDATE_TACTICS[0])
    assert "#include" not in kernel.source
    for text in ("ldmatrix.sync.aligned.m8n8.x4.shared.b16", "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
                 "cp.async.cg.shared.global", "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
                 "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32", "THREADS = 128;", f"__launch_bounds__(THREADS) {kernel.name}("):
        assert text in kernel.source, text


# ---------------------------------------------------------------- tactics and grids

def test_candidate_tactics_are_valid_distinct_and_fit_static_shared_memory():
    assert len(CANDIDATE_TACTICS) >= 3
    assert len({t.label for t in CANDIDATE_TACTICS}) == len(CANDIDATE_TACTICS)
    for t in CANDIDATE_TACTICS:
        assert t.smem_bytes <= 48 * 1024 and t.threads % 32 == 0 and t.threads <= 1024
        assert t.warp_m % 16 == 0 and t.warp_n % 16 == 0
    assert GemmTactic(128, 128, 32, 4, 2).label == "128x128x32_w4x2_s2"
    t = GemmTactic(128, 64, 32, 2, 2)
    assert (t.warp_m, t.warp_n, t.threads, t.accumulators) == (64, 32, 128, 64)
    assert t.smem_bytes == 2 * 2 * (128 * 40 + max(64 * 40, 32 * 72))


@pytest.mark.parametrize("args, message", [
    ((128, 128, 24, 2, 2), "multiple of 16"),
    ((96, 128, 32, 4, 2), "warp tiles"),
    ((128, 40, 32, 2, 2), "warp tiles"),
    ((128, 128, 32, 2, 2, 3), "stages must be 1 or 2"),
    ((256, 256, 64, 2, 2), "shared memory|accumulators"),
    ((256, 128, 64, 4, 2), "shared memory"),
    ((128, 128, 32, 0, 2), "positive"),
    ((512, 256, 16, 32, 2), "1024 threads"),
])
def test_invalid_tactics_are_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        GemmTactic(*args)


def test_grid_covers_m_by_x_n_by_y_and_the_batch_by_z():
    t = GemmTactic(128, 64, 32, 2, 2)
    assert t.grid(GemmProblem(300, 129, 5, batch=3)) == (3, 3, 3)
    assert t.grid(GemmProblem(128, 64, 7)) == (1, 1, 1)
    assert t.grid(GemmProblem(129, 65, 7)) == (2, 2, 1)
    assert t.grid(GemmProblem(0, 64, 7)) == (0, 0, 0)  # nothing to launch
    assert t.grid(GemmProblem(5, 64, 7, batch=0)) == (0, 0, 0)
    kernel = gemm_kernel(GemmProblem(300, 129, 0), t)  # K = 0 still writes the epilogue
    assert kernel.launch.grid == (3, 3, 1) and kernel.launch.block == (128, 1, 1)
    assert kernel.launch.smem_bytes == 2 * 2 * (128 * 40 + 64 * 40)
    with pytest.raises(CodegenError, match="grid"):
        t.grid(GemmProblem(64, 65536 * 64 + 1, 16))
    with pytest.raises(CodegenError, match="grid"):
        t.grid(GemmProblem(64, 64, 16, batch=70000))


def test_candidate_tactics_for_a_problem_drop_tiles_wider_than_it():
    assert candidate_tactics() == CANDIDATE_TACTICS
    skinny = candidate_tactics(GemmProblem(1, 768, 768))
    assert all(t.bm <= 64 for t in skinny) and any(t.bm == 32 for t in skinny)
    big = candidate_tactics(GemmProblem(4096, 4096, 4096))
    assert all(t.bm >= 64 for t in big) and any(t.bm == t.bn == 128 for t in big)
    narrow = candidate_tactics(GemmProblem(4096, 16, 64))
    assert narrow and all(t.bn <= 64 for t in narrow)


# ---------------------------------------------------------------- problems and kernels

def test_problem_defaults_are_dense_and_validated():
    p = GemmProblem(10, 20, 30, batch=2)
    assert (p.lda, p.ldb, p.ldz, p.ldd) == (30, 30, 20, 20)
    assert (p.stride_a, p.stride_b, p.stride_z, p.stride_d) == (300, 600, 200, 200)
    assert p.out_dtype == F16 and p.flops == 2 * 2 * 10 * 20 * 30
    q = GemmProblem(10, 20, 30, trans_b=False, activation="clip", activation_params=(0, 6))
    assert q.ldb == 20 and q.params == {"min": 0.0, "max": 6.0} and q.activation_params == (0.0, 6.0)
    assert GemmProblem(10, 20, 30, stride_b=0).stride_b == 600  # one matrix: no batch stride
    assert not GemmProblem(10, 20, 30).vector_a and GemmProblem(10, 20, 32).vector_a
    assert GemmProblem(10, 24, 30, trans_b=False).vector_b and not GemmProblem(10, 24, 32, ldb=36).vector_b
    assert GemmProblem(10, 24, 32, batch=2, stride_b=0).vector_b
    assert not GemmProblem(10, 21, 32).vector_d and GemmProblem(10, 22, 32).vector_d


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": DType.INT8}, "float16, bfloat16 or float32 A and B"),
    ({"out_dtype": DType.INT8}, "float32"),
    ({"activation": "swish"}, "unknown activation"),
    ({"activation": "relu", "activation_params": (1.0,)}, "parameter"),
    ({"residual": "sideways"}, "residual"),
    ({"lda": 10}, "lda=10"),
    ({"ldd": 5}, "ldd=5"),
    ({"batch": 2, "stride_a": -1}, "stride_a"),
    ({"alpha": float("nan")}, "alpha"),
])
def test_invalid_problems_are_codegen_errors(kwargs, message):
    with pytest.raises(CodegenError, match=message):
        GemmProblem(**{"m": 8, "n": 8, "k": 16, **kwargs})


def test_float32_problems_are_valid_but_not_for_tensor_cores():
    p = GemmProblem(8, 8, 16, dtype=F32, bias=True)
    assert p.out_dtype == F32 and p.describe().startswith("8x8x16 float32->float32")
    with pytest.raises(CodegenError, match="float16 or bfloat16 inputs, not float32.*simt_gemm_kernel"):
        gemm_kernel(p, CANDIDATE_TACTICS[0])
    with pytest.raises(CodegenError, match="float16 or bfloat16"):
        gemm_kernel(p, CANDIDATE_TACTICS[0], "sm_90")


def test_kernel_name_is_a_hash_of_the_source_and_the_same_for_the_same_work():
    t = CANDIDATE_TACTICS[2]
    a = gemm_kernel(GemmProblem(64, 96, 128, bias=True, activation="silu"), t)
    b = gemm_kernel(GemmProblem(64, 96, 128, bias=True, activation="silu"), t)
    assert a.name == b.name and a.source == b.source and a.name.startswith("rtx_gemm_")
    assert a.name in a.source and "__RTX_KERNEL__" not in a.source
    others = [gemm_kernel(GemmProblem(64, 96, 128, bias=True, activation="gelu"), t),
              gemm_kernel(GemmProblem(64, 96, 128, bias=True, activation="silu", trans_b=False), t),
              gemm_kernel(GemmProblem(64, 96, 128, bias=True, activation="silu", dtype=BF16), t),
              gemm_kernel(GemmProblem(64, 96, 136, bias=True, activation="silu"), t),
              gemm_kernel(GemmProblem(64, 96, 128, bias=True, activation="silu"), CANDIDATE_TACTICS[3])]
    assert len({a.name, *(k.name for k in others)}) == 1 + len(others)


def test_kernel_describes_its_arguments_in_fused_matmul_order():
    k = gemm_kernel(GemmProblem(45, 70, 96, batch=3, stride_b=0, bias=True, residual="after_activation",
                                out_dtype=F32), CANDIDATE_TACTICS[4])
    assert [(a.name, a.role, a.index, a.dtype, a.shape) for a in k.args] == [
        ("A", BufferRole.IN, 0, F16, (3, 45, 96)),
        ("B", BufferRole.IN, 1, F16, (70, 96)),  # shared by the batch
        ("bias", BufferRole.IN, 2, F32, (70,)),
        ("Z", BufferRole.IN, 3, F32, (3, 45, 70)),
        ("D", BufferRole.OUT, 0, F32, (3, 45, 70)),
    ]
    assert [a.name for a in k.inputs] == ["A", "B", "bias", "Z"] and [a.name for a in k.outputs] == ["D"]
    plain = gemm_kernel(GemmProblem(8, 8, 16, trans_b=False), CANDIDATE_TACTICS[4])
    assert [(a.name, a.shape) for a in plain.args] == [("A", (8, 16)), ("B", (16, 8)), ("D", (8, 8))]
    assert k.problem.batch == 3 and k.tactic == CANDIDATE_TACTICS[4]


def test_activation_parameters_and_constants_are_exact_literals():
    k = gemm_kernel(GemmProblem(64, 64, 64, activation="clip", activation_params=(-0.5, float("inf"))),
                    CANDIDATE_TACTICS[4])
    assert "(-0x1.0000000000000p-1f)" in k.source and "__uint_as_float(0x7f800000u)" in k.source
    k = gemm_kernel(GemmProblem(64, 64, 64, alpha=0.1), CANDIDATE_TACTICS[4])
    assert "x *= (0x1.99999a0000000p-4f);" in k.source  # 0.1 as the float32 the reference uses


def test_fused_matmul_shapes_become_gemm_problems():
    p = fused_matmul_problem((2, 128, 768), (768, 3072), F16, bias=True, activation="gelu")
    assert (p.m, p.n, p.k, p.batch, p.trans_b) == (256, 3072, 768, 1, False)
    p = fused_matmul_problem((4, 12, 128, 64), (4, 12, 128, 64), F16, trans_b=True)
    assert (p.m, p.n, p.k, p.batch, p.stride_a, p.stride_b) == (128, 128, 64, 48, 128 * 64, 128 * 64)
    p = fused_matmul_problem((128, 64), (3, 64, 32), F16)
    assert (p.m, p.n, p.k, p.batch, p.stride_a) == (128, 32, 64, 3, 0)
    p = fused_matmul_problem((64,), (64, 10), BF16)
    assert (p.m, p.n, p.k) == (1, 10, 64)
    p = fused_matmul_problem((5, 64), (64,), F16)
    assert (p.m, p.n, p.k) == (5, 1, 64)
    with pytest.raises(CodegenError, match="disagree on K"):
        fused_matmul_problem((5, 64), (63, 10), F16)
    with pytest.raises(CodegenError, match="broadcast"):
        fused_matmul_problem((2, 1, 5, 64), (1, 3, 64, 10), F16)
    with pytest.raises(CodegenError, match="not a GEMM"):
        fused_matmul_problem((5, 64), (64,), F16, trans_b=True)
