"""Shape-generic GEMM kernels (codegen/dynamic.py): where M, N, K or the batch vary over a
profile, the tensor-core and SIMT GEMM generators write one source for every shape of it (the
varying dims are kernel arguments), offer the same tactics at every shape, and the source
compiles with NVRTC. A problem of plain ints keeps its all-literal source."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.ops.gemm_simt_source import SIMT_TACTICS, simt_candidate_tactics, simt_gemm_kernel
from rtxrt.backends.cuda.ops.gemm_source import (
    CANDIDATE_TACTICS,
    GemmProblem,
    GemmTactic,
    candidate_tactics,
    fused_matmul_problem,
    gemm_kernel,
)
from rtxrt.ir.dtypes import DType

F16, F32 = DType.FLOAT16, DType.FLOAT32
ROWS = "rtxd_i0_0"  # input 0, axis 0: the rows of A (batch x sequence, or N x OH x OW)


def rows_problem(value: int, **kw) -> GemmProblem:
    """A BERT-like linear layer, [M, 768] @ [768, 3072]^T + bias, gelu; M from 1 to 4096."""
    return GemmProblem(dim(value, ROWS, 1, 4096), 3072, 768, bias=True, activation="gelu", **kw)


def at(value: int, make):
    with dim_bindings({ROWS: value}):
        return make(value)


@pytest.mark.parametrize("tactic", [CANDIDATE_TACTICS[0], CANDIDATE_TACTICS[5], CANDIDATE_TACTICS[-1]],
                         ids=lambda t: t.label)
def test_a_tensor_core_gemm_over_varying_rows_is_one_kernel_taking_the_rows(tactic):
    kernels = {m: at(m, lambda v: gemm_kernel(rows_problem(v), tactic)) for m in (1, 37, 4096)}
    assert len({k.source for k in kernels.values()}) == 1
    assert len({k.name for k in kernels.values()}) == 1
    for m, kernel in kernels.items():
        assert kernel.dims == (m,)
        assert kernel.launch.grid == (-(-m // tactic.bm), -(-3072 // tactic.bn), 1)
    source = kernels[1].source
    assert f"int {ROWS})" in source  # the kernel's last parameter
    assert f"__shared__ int {ROWS};" in source and f"::{ROWS} = {ROWS};" in source  # the device functions' copy
    assert "#define M (rtxd_i0_0)" in source and "constexpr int N = 3072, K = 768;" in source


def test_a_gemm_of_plain_ints_keeps_literal_shapes_and_takes_no_dims():
    kernel = gemm_kernel(GemmProblem(37, 3072, 768, bias=True), CANDIDATE_TACTICS[0])
    assert kernel.dims == () and "rtxd_" not in kernel.source and "__shared__ int" not in kernel.source
    assert "constexpr int M = 37, N = 3072, K = 768;" in kernel.source
    assert "constexpr bool VEC_A = true, VEC_B = true, VEC_D = true;" in kernel.source


def test_what_the_shapes_decided_is_tested_at_run_time_where_they_vary():
    # a batched product over a varying sequence S (attention's P @ V): K = S, so whether rows of
    # A allow 16-byte copies is only known at run time; B's rows (N = 64) always do
    s = dim(100, "rtxd_i0_2", 1, 128)
    b = dim(3, "rtxd_i0_0", 1, 96)
    problem = GemmProblem(s, 64, s, batch=b, trans_b=False)
    assert not problem.vector_a and problem.vector_b
    with dim_bindings({"rtxd_i0_0": 3, "rtxd_i0_2": 100}):
        kernel = gemm_kernel(problem, CANDIDATE_TACTICS[4])
    assert kernel.dims == (100,) and "rtxd_i0_0" not in kernel.source  # the batch is the grid's z alone
    assert kernel.launch.grid[2] == 3
    assert "constexpr bool VEC_B = true, VEC_D = true;" in kernel.source
    assert "#define VEC_A (((rtxd_i0_2) % 8 == 0))" in kernel.source  # K and LDA are S
    assert "const int KT = (K + BK - 1) / BK;" in kernel.source  # K varies: not a constexpr


def test_candidate_tactics_are_chosen_by_the_bounds_of_varying_dims():
    # at 37 rows the static rules drop the 128-row tiles; over 1..4096 rows they stay
    assert [t.label for t in candidate_tactics(GemmProblem(37, 3072, 768))] != \
        [t.label for t in CANDIDATE_TACTICS]
    labels = {tuple(t.label for t in candidate_tactics(rows_problem(m))) for m in (1, 37, 600, 4096)}
    assert labels == {tuple(t.label for t in CANDIDATE_TACTICS)}
    # rows always above 512: the 32-row tile is dropped at every shape
    big = [candidate_tactics(GemmProblem(dim(m, ROWS, 513, 4096), 3072, 768)) for m in (513, 4096)]
    assert big[0] == big[1] and GemmTactic(32, 64, 64, 1, 2) not in big[0]
    simt = {tuple(simt_candidate_tactics(rows_problem(m, dtype=F32))) for m in (1, 37, 4096)}
    assert simt == {SIMT_TACTICS}


def test_a_varying_batch_of_b_is_a_batch_even_where_it_is_one():
    # A [B, M, K] @ B [B, K, N] with B varying from 1: batched at B = 1 too (same source)
    def problem(v: int) -> GemmProblem:
        b = dim(v, "rtxd_i0_0", 1, 8)
        return fused_matmul_problem((b, 12, 64), (b, 64, 12), F16)

    one, three = problem(1), problem(3)
    assert (int(one.batch), int(one.m)) == (1, 12) and (int(three.batch), int(three.m)) == (3, 12)
    sources = {at(v, lambda v: gemm_kernel(problem(v), CANDIDATE_TACTICS[4])).source for v in (1, 3)}
    assert len(sources) == 1


@pytest.mark.parametrize("tactic", [SIMT_TACTICS[0], SIMT_TACTICS[-1]], ids=lambda t: t.label)
def test_a_simt_gemm_over_varying_rows_is_one_kernel_taking_the_rows(tactic):
    kernels = {m: at(m, lambda v: simt_gemm_kernel(rows_problem(v, dtype=F32), tactic)) for m in (1, 37, 4096)}
    assert len({k.source for k in kernels.values()}) == 1
    for m, kernel in kernels.items():
        assert kernel.dims == (m,)
        assert kernel.launch.grid == (-(-m // tactic.bm), -(-3072 // tactic.bn), 1)
    assert f"__shared__ int {ROWS};" in kernels[1].source
    assert "constexpr int KT = (K + BK - 1) / BK;" in kernels[1].source  # K is fixed


def test_generic_gemm_kernels_compile_with_nvrtc():
    compile_many = pytest.importorskip("rtxrt.backends.cuda.compile.nvrtc").compile_many
    s = dim(100, "rtxd_i0_2", 1, 128)
    b = dim(3, "rtxd_i0_0", 1, 96)
    with dim_bindings({"rtxd_i0_0": 3, "rtxd_i0_2": 100}):
        batched = GemmProblem(s, 64, s, batch=b, trans_b=False, residual="after_activation", out_dtype=F32)
        kernels = [gemm_kernel(batched, CANDIDATE_TACTICS[4]), gemm_kernel(batched, CANDIDATE_TACTICS[-1]),
                   simt_gemm_kernel(GemmProblem(s, 64, s, dtype=F32, batch=b, trans_b=False), SIMT_TACTICS[2])]
    kernels.append(at(37, lambda v: gemm_kernel(rows_problem(v), CANDIDATE_TACTICS[0])))
    kernels.append(at(37, lambda v: simt_gemm_kernel(rows_problem(v, dtype=F32), SIMT_TACTICS[0])))
    try:
        cubins = compile_many([(k.name, k.source) for k in kernels], "sm_86")
    except (OSError, RuntimeError) as exc:  # no NVRTC library here
        if "nvrtc" in str(exc).lower() and "error" not in str(exc).lower():
            pytest.skip(str(exc))
        raise
    assert set(cubins) == {k.name for k in kernels} and all(cubins.values())
