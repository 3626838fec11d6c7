"""A GEMM on the CUDA cores (fp32 FMA, no tensor cores), for float32 models: the same
``GemmProblem`` and epilogue as the tensor-core kernel of rtxrt.backends.cuda.ops.gemm_source, and the same
arguments (A, B, [bias], [Z], D), for A and B of float32, float16 or bfloat16 (computed in
fp32 either way; fp16 and bf16 run on every arch from sm_75 here).

Data path (the classic register-tiled SGEMM): each block computes a BM x BN tile of D, each of
its threads a TM x TN part of it in registers. Per step of BK along K, every thread loads a
few elements of the A and B tiles from global memory into registers (zeros beyond the edges),
converts them to fp32 and stores them k-major into shared memory: A as [BK][BM], B as
[BK][BN], rows padded by 4 floats so that the transposing stores spread over the banks. Two
shared-memory buffers: the next step's loads are issued before this step's products and
stored after them, one barrier a step. A thread's rows (and columns) are groups of 4
adjacent ones, the groups BM / (TM / 4) apart, so it reads them as float4 and a quarter-warp's
float4 reads of B cover 128 contiguous bytes (no bank conflicts). Products are explicit fmaf:
NVRTC runs with --fmad=false, which would split ``acc += a * b`` in two.

Shapes, leading dimensions and batch strides are baked into the source: the parameters are
pointers only, as for every generated kernel; in a generic plan, the dims that vary over the
profile are kernel arguments, as gemm_source makes them (``declare``, ``dim_mirror``). The epilogue (rtxrt.backends.cuda.codegen.epilogue) is
the fused GEMM's: alpha, + bias[col], the activation with the residual before or after it,
one rounding to D's type.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.epilogue import activation_functions, epilogue_statements
from ..codegen.kernel_source import KERNEL_NAME, GridLaunch, KernelSource
from ..codegen.template import render
from ..codegen.dynamic import is_dynamic, lower, upper
from .gemm_source import MAX_GRID_X, MAX_GRID_YZ, MAX_STATIC_SMEM, GemmProblem, declare, dim_mirror, gemm_args

PAD = 4  # floats of padding per shared-memory row: keeps rows 16-byte aligned, spreads banks
MAX_ACCUMULATORS = 64  # per thread; beyond 8 x 8 the registers spill


@dataclass(frozen=True)
class SimtTactic:
    """A ``bm x bn`` block tile stepping through K by ``bk``, each thread computing a
    ``tm x tn`` part of it (so ``(bm / tm) * (bn / tn)`` threads)."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    def __post_init__(self) -> None:
        problems = []
        if min(self.bm, self.bn, self.bk, self.tm, self.tn) <= 0:
            problems.append("tile sizes must be positive")
        else:
            if self.tm % 4 or self.tn % 4:
                problems.append(f"a thread tile of {self.tm}x{self.tn} is not made of groups of 4 (float4 reads)")
            if self.bm % self.tm or self.bn % self.tn:
                problems.append(f"the block tile {self.bm}x{self.bn} does not split into {self.tm}x{self.tn} "
                                "thread tiles")
            elif self.threads % 32 or self.threads > 1024:
                problems.append(f"{self.threads} threads is not a whole number of warps up to 1024")
            if self.tm * self.tn > MAX_ACCUMULATORS:
                problems.append(f"{self.tm * self.tn} accumulators per thread (at most {MAX_ACCUMULATORS})")
        if not problems and self.smem_bytes > MAX_STATIC_SMEM:
            problems.append(f"needs {self.smem_bytes} bytes of shared memory (at most {MAX_STATIC_SMEM})")
        if problems:
            raise ValueError(f"invalid SIMT GEMM tactic {self.bm}x{self.bn}x{self.bk} "
                             f"thread tile {self.tm}x{self.tn}: " + "; ".join(problems))

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def smem_bytes(self) -> int:
        """Two buffers of the k-major A and B tiles, in fp32."""
        return 2 * 4 * self.bk * (self.bm + PAD + self.bn + PAD)

    @property
    def label(self) -> str:
        return f"simt_{self.bm}x{self.bn}x{self.bk}_t{self.tm}x{self.tn}"

    def grid(self, problem: GemmProblem) -> tuple[int, int, int]:
        """(M tiles, N tiles, batch), as GemmTactic.grid: (0, 0, 0) when there is nothing to
        do, CodegenError beyond CUDA's limits."""
        grid = (-(-problem.m // self.bm), -(-problem.n // self.bn), problem.batch)
        if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
            raise CodegenError(f"GEMM {problem.describe()} needs a grid of {grid} blocks with tactic "
                               f"{self.label}, beyond CUDA's limits")
        return grid if all(grid) else (0, 0, 0)


# Largest tiles first: 8x8 per thread where the problem is big, 4x4 with deeper K steps where
# it is small (more blocks to fill the SMs).
SIMT_TACTICS: tuple[SimtTactic, ...] = (
    SimtTactic(128, 128, 8, 8, 8),  # 256 threads
    SimtTactic(128, 64, 8, 8, 8),  # 128 threads
    SimtTactic(64, 64, 16, 4, 4),  # 256 threads
    SimtTactic(32, 32, 16, 4, 4),  # 64 threads: small problems, many blocks
)


def simt_candidate_tactics(problem: GemmProblem | None = None) -> tuple[SimtTactic, ...]:
    """The tactics worth timing for ``problem`` (all without one): 128-wide tiles only where
    the problem is wider than 64 that way, the 32x32 tile only where 64x64 tiles would give
    fewer than 256 blocks. The 64x64 tile always stays. A dim that varies over the profile
    prunes by its bounds (a tile stays if it is worth timing at any shape), so the list is the
    same at every shape."""
    if problem is None:
        return SIMT_TACTICS

    def fewest_blocks(size: int) -> int:
        return -(-lower(problem.m) // size) * -(-lower(problem.n) // size) * lower(problem.batch)

    return tuple(t for t in SIMT_TACTICS
                 if not (t.bm > 64 and upper(problem.m) <= 64) and not (t.bn > 64 and upper(problem.n) <= 64)
                 and not (t.bm < 64 and fewest_blocks(64) >= 256))


@dataclass(frozen=True)
class SimtGemmKernel(KernelSource):
    """A generated SIMT GEMM: ``args`` as GemmKernel's (A, B, [bias], [Z], D); 3-D launch."""

    launch: GridLaunch
    problem: GemmProblem
    tactic: SimtTactic


def simt_gemm_kernel(problem: GemmProblem, tactic: SimtTactic | None = None) -> SimtGemmKernel:
    """The CUDA C++ of ``problem`` on the CUDA cores with ``tactic`` (default: the first
    candidate for the problem). Compiles for every arch from sm_75, any input type."""
    tactic = tactic or simt_candidate_tactics(problem)[0]
    launch = GridLaunch(tactic.grid(problem), (tactic.threads, 1, 1), tactic.smem_bytes)
    return SimtGemmKernel.named("rtx_sgemm_", _source(problem, tactic), launch, gemm_args(problem),
                                problem=problem, tactic=tactic)


def _source(p: GemmProblem, t: SimtTactic) -> str:
    in_c, out_c = C.storage_type(p.dtype), C.storage_type(p.out_dtype)
    params = [f"const {in_c}* __restrict__ A", f"const {in_c}* __restrict__ B"]
    if p.bias:
        params.append(f"const {out_c}* __restrict__ bias")
    if p.has_z:
        params.append(f"const {out_c}* Z")  # may alias D (an in-place residual)
    params.append(f"{out_c}* D")
    fields = dict(
        prelude=C.PRELUDE, problem=p.describe(), tactic=t.label, trans_b=int(p.trans_b), in_t=in_c,
        shape=declare("int", [("M", p.m), ("N", p.n), ("K", p.k)]),
        lds=declare("long long", [("LDA", p.lda), ("LDB", p.ldb), ("LDZ", p.ldz), ("LDD", p.ldd)]),
        strides=declare("long long", [("SA", p.stride_a), ("SB", p.stride_b), ("SZ", p.stride_z),
                                      ("SD", p.stride_d)]),
        k_tiles="#define KT ((K + BK - 1) / BK)" if is_dynamic(p.k) else "constexpr int KT = (K + BK - 1) / BK;",
        bm=t.bm, bn=t.bn, bk=t.bk, tm=t.tm, tn=t.tn, threads=t.threads, pad=PAD,
        activations=activation_functions(p.activation, p.params),
        load_a=C.load("A[(long long)gm * LDA + gk]", p.dtype),
        load_b_nk=C.load("B[(long long)gn * LDB + gk]", p.dtype),
        load_b_kn=C.load("B[(long long)gk * LDB + gn]", p.dtype),
        kernel=KERNEL_NAME, params=", ".join(params),
        batch_offsets=p.batch_offsets(),
        epilogue=" ".join(epilogue_statements(p, "Z[(long long)row * LDZ + col]")),
        store=C.store("x", p.out_dtype))
    source = render(_SOURCE, dims="", dims_setup="", **fields)
    decls, setup = dim_mirror(source)
    return render(_SOURCE, dims=decls, dims_setup=setup, **fields) if decls else source


# The whole source: the problem's constants, the activations the epilogue calls, the kernel.
_SOURCE = r"""${prelude}${dims}
// rtxrt SIMT GEMM ${problem}, tactic ${tactic}
#define RTX_TRANS_B ${trans_b}
typedef ${in_t} rtx_in_t;
${shape}
${lds}
${strides}
constexpr int BM = ${bm}, BN = ${bn}, BK = ${bk}, TM = ${tm}, TN = ${tn}, THREADS = ${threads}, PAD = ${pad};
${activations}
constexpr int TX = BN / TN, TY = BM / TM;  // threads along N and along M
constexpr int AS = BM + PAD, BS = BN + PAD;  // padded rows of the k-major tiles (floats)
constexpr int A_ELEMS = BM * BK, B_ELEMS = BN * BK;
constexpr int A_LOADS = (A_ELEMS + THREADS - 1) / THREADS, B_LOADS = (B_ELEMS + THREADS - 1) / THREADS;
${k_tiles}

// This thread's share of the A and B tiles at k0, from global memory into registers as fp32.
// Consecutive threads read consecutive elements of a row of A (and of B as [N, K]) or of B
// as [K, N].
__device__ __forceinline__ void rtx_fetch(float (&ra)[A_LOADS], float (&rb)[B_LOADS],
                                          const rtx_in_t* __restrict__ A, const rtx_in_t* __restrict__ B,
                                          int m0, int n0, int k0, int tid) {
#pragma unroll
  for (int i = 0; i < A_LOADS; ++i) {
    const int e = tid + i * THREADS;
    const int gm = m0 + e / BK, gk = k0 + e % BK;
    ra[i] = ((A_ELEMS % THREADS == 0 || e < A_ELEMS) && gm < M && gk < K) ? ${load_a} : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < B_LOADS; ++i) {
    const int e = tid + i * THREADS;
#if RTX_TRANS_B  // B is [N, K]
    const int gn = n0 + e / BK, gk = k0 + e % BK;
    rb[i] = ((B_ELEMS % THREADS == 0 || e < B_ELEMS) && gn < N && gk < K) ? ${load_b_nk} : 0.0f;
#else  // B is [K, N]
    const int gk = k0 + e / BN, gn = n0 + e % BN;
    rb[i] = ((B_ELEMS % THREADS == 0 || e < B_ELEMS) && gk < K && gn < N) ? ${load_b_kn} : 0.0f;
#endif
  }
}

// The fetched registers into one shared-memory buffer, k-major.
__device__ __forceinline__ void rtx_stash(float (*as)[AS], float (*bs)[BS], const float (&ra)[A_LOADS],
                                          const float (&rb)[B_LOADS], int tid) {
#pragma unroll
  for (int i = 0; i < A_LOADS; ++i) {
    const int e = tid + i * THREADS;
    if (A_ELEMS % THREADS == 0 || e < A_ELEMS) as[e % BK][e / BK] = ra[i];
  }
#pragma unroll
  for (int i = 0; i < B_LOADS; ++i) {
    const int e = tid + i * THREADS;
#if RTX_TRANS_B
    if (B_ELEMS % THREADS == 0 || e < B_ELEMS) bs[e % BK][e / BK] = rb[i];
#else
    if (B_ELEMS % THREADS == 0 || e < B_ELEMS) bs[e / BN][e % BN] = rb[i];
#endif
  }
}

// acc += this buffer's A tile times its B tile: thread (tx, ty) owns rows g * 4 * TY + 4 * ty
// + (0..3) for g < TM / 4, and columns likewise.
__device__ __forceinline__ void rtx_multiply(float (&acc)[TM][TN], const float (*as)[AS], const float (*bs)[BS],
                                             int tx, int ty) {
#pragma unroll
  for (int kk = 0; kk < BK; ++kk) {
    float a[TM], b[TN];
#pragma unroll
    for (int g = 0; g < TM / 4; ++g) {
      const float4 v = *reinterpret_cast<const float4*>(&as[kk][g * 4 * TY + 4 * ty]);
      a[4 * g] = v.x; a[4 * g + 1] = v.y; a[4 * g + 2] = v.z; a[4 * g + 3] = v.w;
    }
#pragma unroll
    for (int g = 0; g < TN / 4; ++g) {
      const float4 v = *reinterpret_cast<const float4*>(&bs[kk][g * 4 * TX + 4 * tx]);
      b[4 * g] = v.x; b[4 * g + 1] = v.y; b[4 * g + 2] = v.z; b[4 * g + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

extern "C" __global__ void __launch_bounds__(THREADS) ${kernel}(${params}) {
  __shared__ __align__(16) float As[2][BK][AS];
  __shared__ __align__(16) float Bs[2][BK][BS];
${dims_setup}  const long long z = blockIdx.z;
  A += z * SA;
  B += z * SB;
  ${batch_offsets}
  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

  float ra[A_LOADS], rb[B_LOADS];
  if (KT > 0) {
    rtx_fetch(ra, rb, A, B, m0, n0, 0, tid);
    rtx_stash(As[0], Bs[0], ra, rb, tid);
  }
  __syncthreads();
  for (int kt = 0; kt < KT; ++kt) {
    // The next step's loads are in flight while this step multiplies; they go into the other
    // buffer, last read before the previous barrier.
    if (kt + 1 < KT) rtx_fetch(ra, rb, A, B, m0, n0, (kt + 1) * BK, tid);
    rtx_multiply(acc, As[kt & 1], Bs[kt & 1], tx, ty);
    if (kt + 1 < KT) rtx_stash(As[(kt + 1) & 1], Bs[(kt + 1) & 1], ra, rb, tid);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int row = m0 + (i / 4) * 4 * TY + 4 * ty + i % 4;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int col = n0 + (j / 4) * 4 * TX + 4 * tx + j % 4;
      if (col >= N) continue;
      float x = acc[i][j];
      ${epilogue}
      D[(long long)row * LDD + col] = ${store};
    }
  }
}
"""
