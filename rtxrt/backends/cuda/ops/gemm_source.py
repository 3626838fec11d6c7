"""A tensor-core GEMM with a fused epilogue, for rtxrt::FusedMatMul (and MatMul, Gemm).

    D[b] = epilogue(alpha * A[b] @ B[b]')     A: [M, K] row-major, fp16 or bf16
                                              B': B as [K, N], or given as [N, K] (trans_b)
    epilogue: + bias[N], then the activation, with the residual Z[b] ([M, N]) added before
    or after it (rtxrt.ir.activations; the semantics of the reference backend's FusedMatMul:
    fp32 arithmetic, one rounding to D's type at the end).

Accumulation is fp32 on tensor cores through inline PTX, header-free (no <mma.h>, which
NVRTC from the pip wheels cannot include):

- sm_80 and newer: ``mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32``;
- sm_75: ``mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32``, twice per k16 step (fp16 only:
  Turing has no bf16 mma, which ``gemm_kernel(..., arch="sm_75")`` and the source's own
  ``#error`` both say).

One source serves every arch (``__CUDA_ARCH__`` picks the instruction and the loads), so a
kernel's name, a hash of its source, does not depend on the arch.

Data path: each block computes a BM x BN tile of D; its warps (warps_m x warps_n) a WM x WN
part each. Tiles of A and B are copied from global memory into shared memory in their own
layout (rows of K for A and for B as [N, K], rows of N for B as [K, N], so the copies are
coalesced either way), 16 bytes at a time with ``cp.async`` (sm_80+, double-buffered when
``stages == 2``) or with plain loads (sm_75), element by element where a leading dimension
or base address does not allow 16-byte copies. Rows are padded by 8 elements, which makes
``ldmatrix`` conflict-free. ``ldmatrix.x4`` (``.trans`` for B as [K, N]) gives the mma
fragments directly. Edges (M, N, K not multiples of the tile) are zero-filled on load and
guarded on store.

Shapes, leading dimensions and batch strides are baked into the source, as they are for the
elementwise kernels: the kernel's parameters are pointers only (``KernelSource.args``). In a
generic plan (codegen/dynamic.py) a dim that varies over the profile is a kernel argument
instead: the constants made of it become macros over it (``declare``), the device functions
read it from a namespace-scope ``__shared__`` copy that the kernel fills at its start
(``dim_mirror``), and what the shapes decided (16-byte copies, paired stores) is tested at
run time where they vary; the tactics offered are chosen by the bounds of the dims.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ....ir.activations import RESIDUALS, activation_params
from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dim_names, is_dynamic, lower, upper
from ..codegen.epilogue import activation_functions, epilogue_statements
from ..codegen.kernel_source import KERNEL_NAME, GridLaunch, KernelArg, KernelSource
from ..codegen.template import render
from ..codegen.ptx import CP_ASYNC, MMA_SM75, MMA_SM80, SHARED_AND_LDMATRIX
from ..plan.program import BufferRole

MMA_DTYPES = (DType.FLOAT16, DType.BFLOAT16)  # what the tensor-core kernel multiplies
INPUT_DTYPES = (*MMA_DTYPES, DType.FLOAT32)  # GemmProblem's A and B (float32: gemm_simt only)
OUTPUT_DTYPES = (DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32)
MAX_STATIC_SMEM = 48 * 1024  # bytes of static shared memory a block may declare
MAX_GRID_X, MAX_GRID_YZ = 2**31 - 1, 65535
MAX_DIM = 2**31 - 1 - 256  # M, N, K: 32-bit row and column indexes, a tile beyond the edge
PAD = 8  # elements of padding per shared-memory row (16 bytes): conflict-free ldmatrix
F32 = DType.FLOAT32


def mma_instruction(arch: str, dtype: DType) -> str:
    """The PTX mma the kernel uses on ``arch`` ("sm_86") for inputs of ``dtype``; CodegenError
    where the arch has none (bf16 before sm_80, archs before sm_75)."""
    cc = _arch_number(arch)
    if dtype not in MMA_DTYPES:
        raise CodegenError(f"tensor-core GEMM takes float16 or bfloat16 inputs, not {dtype.short} "
                           "(gemm_simt.simt_gemm_kernel multiplies float32)")
    ty = "bf16" if dtype == DType.BFLOAT16 else "f16"
    if cc >= 80:
        return f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32"
    if cc < 75:
        raise CodegenError(f"tensor-core GEMM needs sm_75 or newer, not {arch}")
    if dtype == DType.BFLOAT16:
        raise CodegenError(f"bf16 GEMM needs sm_80 (Ampere) or newer: {arch} has no bf16 tensor-core mma; "
                           "run this node in fp16 or fp32 on this GPU")
    return "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32"


def _arch_number(arch: str) -> int:
    digits = arch.removeprefix("sm_").rstrip("af")
    if not arch.startswith("sm_") or not digits.isdigit():
        raise ValueError(f"arch must look like 'sm_86', got {arch!r}")
    return int(digits)


@dataclass(frozen=True)
class GemmTactic:
    """One implementation choice: a ``bm x bn`` block tile stepping through K by ``bk``,
    split among ``warps_m x warps_n`` warps (each owning a ``warp_m x warp_n`` tile), with
    ``stages`` shared-memory buffers (2: the next tile is copied by cp.async while this
    one is multiplied, sm_80+; sm_75 copies synchronously either way)."""

    bm: int
    bn: int
    bk: int
    warps_m: int
    warps_n: int
    stages: int = 2

    def __post_init__(self) -> None:
        problems = []
        if min(self.bm, self.bn, self.bk, self.warps_m, self.warps_n) <= 0:
            problems.append("tile sizes and warp counts must be positive")
        else:
            if self.bk % 16:
                problems.append(f"bk={self.bk} is not a multiple of 16 (the mma's k)")
            if self.bm % self.warps_m or (self.bm // self.warps_m) % 16:
                problems.append(f"bm={self.bm} does not split into {self.warps_m} warp tiles of a multiple of 16 rows")
            if self.bn % self.warps_n or (self.bn // self.warps_n) % 16:
                problems.append(f"bn={self.bn} does not split into {self.warps_n} warp tiles of a multiple of 16 columns")
            if self.warps_m * self.warps_n > 32:
                problems.append(f"{self.warps_m * self.warps_n} warps exceed 1024 threads per block")
            if not problems and self.accumulators > 256:
                problems.append(f"a {self.warp_m}x{self.warp_n} warp tile needs {self.accumulators} fp32 "
                                "accumulators per thread (at most 256)")
        if self.stages not in (1, 2):
            problems.append(f"stages must be 1 or 2, got {self.stages}")
        if not problems and self.smem_bytes > MAX_STATIC_SMEM:
            problems.append(f"needs {self.smem_bytes} bytes of shared memory (at most {MAX_STATIC_SMEM})")
        if problems:
            raise ValueError(f"invalid GEMM tactic {self.bm}x{self.bn}x{self.bk} "
                             f"warps {self.warps_m}x{self.warps_n} stages {self.stages}: " + "; ".join(problems))

    @property
    def warp_m(self) -> int:
        return self.bm // self.warps_m

    @property
    def warp_n(self) -> int:
        return self.bn // self.warps_n

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    @property
    def accumulators(self) -> int:
        """fp32 accumulators per thread: (warp_m/16) x (warp_n/8) mma tiles of 4."""
        return (self.warp_m // 16) * (self.warp_n // 8) * 4

    @property
    def smem_bytes(self) -> int:
        """Static shared memory per block, for the larger of the two B layouts."""
        return 2 * self.stages * (_a_tile(self) + max(_b_tile(self, True), _b_tile(self, False)))

    @property
    def label(self) -> str:
        return f"{self.bm}x{self.bn}x{self.bk}_w{self.warps_m}x{self.warps_n}_s{self.stages}"

    def grid(self, problem: GemmProblem) -> tuple[int, int, int]:
        """(M tiles, N tiles, batch): blockIdx.x walks M, y walks N, z the batch. A zero in
        it means there is nothing to do (do not launch). CodegenError beyond CUDA's limits."""
        grid = (-(-problem.m // self.bm), -(-problem.n // self.bn), problem.batch)
        if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
            raise CodegenError(f"GEMM {problem.describe()} needs a grid of {grid} blocks with tactic "
                               f"{self.label}, beyond CUDA's limits")
        return grid if all(grid) else (0, 0, 0)


def _a_tile(t: GemmTactic) -> int:
    return t.bm * (t.bk + PAD)


def _b_tile(t: GemmTactic, trans_b: bool) -> int:
    return t.bn * (t.bk + PAD) if trans_b else t.bk * (t.bn + PAD)


# The autotuner's search space: big tiles for big GEMMs, small ones where big tiles would
# leave SMs idle (few tiles) or waste work on edges, one single-stage tactic.
CANDIDATE_TACTICS: tuple[GemmTactic, ...] = (
    GemmTactic(128, 128, 32, 2, 2),  # 64x64 warp tiles, 128 threads
    GemmTactic(128, 128, 32, 4, 2),  # 32x64 warp tiles, 256 threads
    GemmTactic(128, 64, 32, 2, 2),
    GemmTactic(64, 128, 32, 2, 2),
    GemmTactic(64, 64, 32, 2, 2),
    GemmTactic(32, 64, 64, 1, 2),  # skinny M (batch-1 inference)
    GemmTactic(64, 64, 32, 2, 2, stages=1),
)


def candidate_tactics(problem: GemmProblem | None = None) -> tuple[GemmTactic, ...]:
    """The tactics worth timing for ``problem`` (all of them without one): 128-wide tiles
    only where the problem is wider than 64 that way, the 32-row tile only up to 512 rows.
    The 64x64 tiles always stay. A dim that varies over the profile prunes by its bounds (a
    tile stays if it is worth timing at any shape), so the list is the same at every shape."""
    if problem is None:
        return CANDIDATE_TACTICS
    return tuple(t for t in CANDIDATE_TACTICS
                 if not (t.bm > 64 and upper(problem.m) <= 64) and not (t.bn > 64 and upper(problem.n) <= 64)
                 and not (t.bm < 64 and lower(problem.m) > 512))


@dataclass(frozen=True)
class GemmProblem:
    """One (batched) matrix product with its epilogue, shapes concrete.

    ``dtype``: A and B (float16 or bfloat16; float32 too for gemm_simt); ``out_dtype``: D,
    bias and Z (default ``dtype``; float32 too). ``trans_b``: B is stored as [N, K] (Gemm with transB, Linear
    weights), else [K, N]. Leading dimensions (elements between rows) default to the dense
    ones; batch strides (elements between matrices, 0: one matrix for the whole batch) to
    dense batches; the bias is one vector for all, unless ``stride_bias`` (elements between
    the bias vectors of consecutive batches: a grouped convolution's per-group bias) says
    otherwise. ``activation_params`` in the order of rtxrt.ir.activations.ACTIVATIONS;
    ``residual`` one of its RESIDUALS."""

    m: int
    n: int
    k: int
    dtype: DType = DType.FLOAT16
    out_dtype: DType | None = None
    trans_b: bool = True
    batch: int = 1
    alpha: float = 1.0
    bias: bool = False
    activation: str = "none"
    activation_params: tuple[float, ...] = ()
    residual: str = "none"
    lda: int | None = None
    ldb: int | None = None
    ldz: int | None = None
    ldd: int | None = None
    stride_a: int | None = None
    stride_b: int | None = None
    stride_z: int | None = None
    stride_d: int | None = None
    stride_bias: int = 0
    params: dict[str, float] = field(init=False, repr=False, compare=False, hash=False)
    dense_strides: frozenset[str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        def put(key: str, value: object) -> None:
            object.__setattr__(self, key, value)

        if self.dtype not in INPUT_DTYPES:
            raise CodegenError(f"GEMM takes float16, bfloat16 or float32 A and B, not {self.dtype.short}")
        put("out_dtype", self.out_dtype or self.dtype)
        if self.out_dtype not in OUTPUT_DTYPES:
            raise CodegenError(f"GEMM writes float16, bfloat16 or float32, not {self.out_dtype.short}")
        if min(lower(self.m), lower(self.n), lower(self.k), lower(self.batch)) < 0 or \
                max(upper(self.m), upper(self.n), upper(self.k)) > MAX_DIM:
            raise CodegenError(f"GEMM dimensions must be 0 to {MAX_DIM}: {self.m}x{self.n}x{self.k}, batch {self.batch}")
        try:
            put("params", activation_params(self.activation, self.activation_params))
        except ValueError as exc:
            raise CodegenError(str(exc)) from None
        put("activation_params", tuple(float(p) for p in self.activation_params))
        if self.residual not in RESIDUALS:
            raise CodegenError(f"residual must be one of {', '.join(RESIDUALS)}, got {self.residual!r}")
        if not math.isfinite(self.alpha):
            raise CodegenError(f"alpha must be finite, got {self.alpha}")
        put("alpha", float(self.alpha))
        rows_b, cols_b = (self.n, self.k) if self.trans_b else (self.k, self.n)
        for key, dense, rows in (("lda", self.k, self.m), ("ldb", cols_b, rows_b), ("ldz", self.n, self.m),
                                 ("ldd", self.n, self.m)):
            value = dense if getattr(self, key) is None else _int(getattr(self, key))
            if value < dense:
                raise CodegenError(f"{key}={value} is less than the {dense} elements of a row")
            put(key, value)
        dense_strides = set()
        for key, dense in (("stride_a", self.m * self.lda), ("stride_b", rows_b * self.ldb),
                           ("stride_z", self.m * self.ldz), ("stride_d", self.m * self.ldd)):
            value = dense if getattr(self, key) is None or upper(self.batch) <= 1 else _int(getattr(self, key))
            if value < 0:
                raise CodegenError(f"{key} must not be negative, got {value}")
            put(key, value)
            if getattr(self, key) is dense:
                dense_strides.add(key)
        put("dense_strides", frozenset(dense_strides))
        if lower(self.stride_bias) < 0:
            raise CodegenError(f"stride_bias must not be negative, got {self.stride_bias}")
        put("stride_bias", _int(self.stride_bias) if upper(self.batch) > 1 else 0)

    @property
    def has_z(self) -> bool:
        return self.residual != "none"

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k

    def describe(self) -> str:
        b = f"{self.batch}x" if is_dynamic(self.batch) or self.batch != 1 else ""
        layout = "NK" if self.trans_b else "KN"
        bias = f"{int(self.bias)}/{self.stride_bias}" if self.batch_bias else f"{int(self.bias)}"
        return (f"{b}{self.m}x{self.n}x{self.k} {self.dtype.short}->{self.out_dtype.short} B:{layout} "
                f"alpha={self.alpha:g} bias={bias} {self.activation} residual={self.residual}")

    @property
    def batch_bias(self) -> bool:
        """Each batch has a bias vector of its own (``stride_bias``)."""
        return self.bias and (is_dynamic(self.stride_bias) or self.stride_bias != 0)

    def batch_offsets(self) -> str:
        """C statements moving the bias (where each batch has its own), Z and D pointers to
        batch ``z`` (the kernels' blockIdx.z); A and B move in the kernels' own code."""
        bias = f"bias += z * {c_int(self.stride_bias, '', 'LL')}; " if self.batch_bias else ""
        return bias + ("Z += z * SZ; " if self.has_z else "") + "D += z * SD;"

    # 16-byte copies need rows (and batches) that start 16-byte aligned and chunks of 8
    # elements that are wholly inside or outside the matrix. A dim that varies over the
    # profile makes the property False (not known to hold at every shape); the kernel's
    # source checks it at run time instead (``vector_flags``).
    @property
    def vector_a(self) -> bool:
        return _flag(self._vector_a) == "true"

    @property
    def vector_b(self) -> bool:
        return _flag(self._vector_b) == "true"

    @property
    def vector_d(self) -> bool:
        """Pairs of adjacent outputs stored as one 4- or 8-byte word."""
        return _flag(self._vector_d) == "true"

    # (a dense batch stride, rows x the leading dimension, is a multiple where the leading
    # dimension is, and with one matrix the stride is never used: no test of their own)
    @property
    def _vector_a(self) -> tuple[tuple[int, int], ...]:
        return (self.k, 8), (self.lda, 8), *self._stride("stride_a", 8)

    @property
    def _vector_b(self) -> tuple[tuple[int, int], ...]:
        return (self.k if self.trans_b else self.n, 8), (self.ldb, 8), *self._stride("stride_b", 8)

    @property
    def _vector_d(self) -> tuple[tuple[int, int], ...]:
        return (self.n, 2), (self.ldd, 2), *self._stride("stride_d", 2)

    def _stride(self, key: str, quantum: int) -> tuple[tuple[int, int], ...]:
        if upper(self.batch) <= 1 or key in self.dense_strides:
            return ()
        return ((getattr(self, key), quantum),)

    def vector_flags(self) -> tuple[str, str, str]:
        """VEC_A, VEC_B, VEC_D as C: "true" or "false" where the shapes decide it at every
        shape of the profile, else a run-time test of the dims that vary."""
        return _flag(self._vector_a), _flag(self._vector_b), _flag(self._vector_d)


def _int(value: int) -> int:
    """A plain int of ``value``, a dim that varies over the profile left as it is."""
    return value if is_dynamic(value) else int(value)


def _flag(multiples: tuple[tuple[int, int], ...]) -> str:
    """C for "every value is a multiple of its quantum": "true", "false", or a test at run time
    of the values that vary over the profile."""
    tests = []
    for value, quantum in multiples:
        if lower(value) == upper(value):  # (a fixed size, a DimInt of a shape-agnostic kernel too: decided here)
            if value % quantum != 0:
                return "false"
        elif f"({value.expr}) % {quantum} == 0" not in tests:
            tests.append(f"({value.expr}) % {quantum} == 0")
    return "(" + " && ".join(tests) + ")" if tests else "true"


def declare(ctype: str, values: list[tuple[str, int | str]]) -> str:
    """The C declaration of constants ``values`` (name, value) of ``ctype``:
    ``constexpr ctype A = 1, B = 2;`` where all are known, else that line for those known and a
    macro for each value that varies over the profile (an expression over the kernel's dim
    arguments, mirrored for device functions by ``dim_mirror``). No newline at the end."""
    def varies(v: int | str) -> bool:  # a DimInt, or C text testing one (vector_flags)
        return is_dynamic(v) or (isinstance(v, str) and v not in ("true", "false"))

    if not any(varies(v) for _, v in values):
        return f"constexpr {ctype} " + ", ".join(f"{name} = {v}" for name, v in values) + ";"
    known = [(name, v) for name, v in values if not varies(v)]
    lines = [f"constexpr {ctype} " + ", ".join(f"{name} = {v}" for name, v in known) + ";"] if known else []
    cast = "" if ctype in ("int", "bool") else f"({ctype})"
    lines += [f"#define {name} ({cast}{v})" for name, v in values if varies(v)]
    return "\n".join(lines)


def dim_mirror(source: str) -> tuple[str, str]:
    """For a source whose device functions read dims that vary over the profile (kernel
    arguments ``rtxd_*``, seen only in the kernel's body): the namespace-scope ``__shared__``
    copies those functions read (declarations, after the prelude) and the statements at the
    start of the kernel that fill them (thread 0, then a barrier). Two empty strings for a
    source without such dims."""
    names = list(dim_names(source))
    if not names:
        return "", ""
    decls = "\n// the kernel's dim arguments, for the device functions (filled at the kernel's start)\n" + \
        "".join(f"__shared__ int {n};\n" for n in names)
    setup = ("  if (threadIdx.x == 0) { " + " ".join(f"::{n} = {n};" for n in names) + " }\n"
             "  __syncthreads();\n")
    return decls, setup


def fused_matmul_problem(a_shape: tuple[int, ...], b_shape: tuple[int, ...], dtype: DType, *,
                         trans_b: bool = False, alpha: float = 1.0, bias: bool = False,
                         activation: str = "none", activation_params: tuple[float, ...] = (),
                         residual: str = "none", out_dtype: DType | None = None) -> GemmProblem:
    """The GemmProblem of rtxrt::FusedMatMul (numpy matmul rules) on dense tensors of these
    shapes. A's batch dims fold into M where B is one matrix; equal batch dims become the
    batch, as do B's where A is one matrix (read by every batch); other broadcasts raise
    CodegenError."""
    if not a_shape or not b_shape or (trans_b and len(b_shape) < 2):
        raise CodegenError(f"FusedMatMul of shapes {a_shape} and {b_shape} (trans_b={int(trans_b)}) is not a GEMM")
    a = (1, *a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b = (*b_shape, 1) if len(b_shape) == 1 else tuple(b_shape)
    m, k = a[-2:]
    n, kb = b[-2:] if trans_b else b[:-3:-1]
    if k != kb:
        raise CodegenError(f"FusedMatMul: A {tuple(a_shape)} and B {tuple(b_shape)} (trans_b={int(trans_b)}) "
                           "disagree on K")
    batch_a, batch_b = a[:-2], b[:-2]
    common = {"dtype": dtype, "out_dtype": out_dtype, "trans_b": trans_b, "alpha": alpha, "bias": bias,
              "activation": activation, "activation_params": tuple(activation_params), "residual": residual}
    if upper(math.prod(batch_b)) == 1:  # (dims that vary are batches, even where they are 1)
        return GemmProblem(math.prod(batch_a) * m, n, k, **common)
    if batch_a == batch_b:
        return GemmProblem(m, n, k, batch=math.prod(batch_b), **common)
    if upper(math.prod(batch_a)) == 1:
        return GemmProblem(m, n, k, batch=math.prod(batch_b), stride_a=0, **common)
    raise CodegenError(f"FusedMatMul: batch dims {batch_a} and {batch_b} broadcast in a way the GEMM does not handle")


@dataclass(frozen=True)
class GemmKernel(KernelSource):
    """A generated GEMM: ``args`` are A, B, [bias], [Z] (inputs 0 to 3 of FusedMatMul, the
    omitted ones absent) and D (output 0), all pointers; ``launch`` is 3-D."""

    launch: GridLaunch
    problem: GemmProblem
    tactic: GemmTactic


def gemm_kernel(problem: GemmProblem, tactic: GemmTactic, arch: str | None = None) -> GemmKernel:
    """The CUDA C++ of ``problem`` computed with ``tactic``. The source compiles for every
    arch from sm_75 (sm_80 for bf16); ``arch``, when given, is checked here so that a bf16
    GEMM for sm_75 fails with a clear CodegenError before NVRTC is asked; so does a float32
    problem, whatever the arch (tensor cores take 16-bit inputs here)."""
    mma_instruction(arch or "sm_80", problem.dtype)
    return GemmKernel.named("rtx_gemm_", gemm_source(problem, tactic), gemm_launch(problem, tactic),
                            gemm_args(problem), problem=problem, tactic=tactic)


def gemm_launch(problem: GemmProblem, tactic: GemmTactic) -> GridLaunch:
    """The launch of ``problem``'s GEMM with ``tactic``: grid, threads, shared memory."""
    return GridLaunch(tactic.grid(problem), (tactic.threads, 1, 1),
                      2 * tactic.stages * (_a_tile(tactic) + _b_tile(tactic, problem.trans_b)))


def gemm_args(p: GemmProblem) -> tuple[KernelArg, ...]:
    """A GEMM kernel's pointer arguments: A, B, [bias], [Z] (FusedMatMul inputs 0-3) and D."""
    def shape(batched: bool, *dims: int) -> tuple[int, ...]:
        return (p.batch, *dims) if batched and (is_dynamic(p.batch) or p.batch != 1) else dims

    b_dims = (p.n, p.k) if p.trans_b else (p.k, p.n)
    args = [KernelArg("A", BufferRole.IN, 0, p.dtype, shape(p.stride_a != 0, p.m, p.k)),
            KernelArg("B", BufferRole.IN, 1, p.dtype, shape(p.stride_b != 0, *b_dims))]
    if p.bias:
        args.append(KernelArg("bias", BufferRole.IN, 2, p.out_dtype, shape(p.batch_bias, p.n)))
    if p.has_z:
        args.append(KernelArg("Z", BufferRole.IN, 3, p.out_dtype, shape(p.stride_z != 0, p.m, p.n)))
    args.append(KernelArg("D", BufferRole.OUT, 0, p.out_dtype, shape(True, p.m, p.n)))
    return tuple(args)


# ---------------------------------------------------------------- the source

def gemm_source(p: GemmProblem, t: GemmTactic, load_a: str | None = None, constants: str = "") -> str:
    """The kernel's source, named KERNEL_NAME. ``load_a`` opens ``rtx_load_tiles`` and copies
    the A tile (default LOAD_A, A as a matrix; another A operand brings its own);
    ``constants`` follow the GEMM's (the shapes that operand needs). The defaults give
    gemm_kernel's source."""
    out_c = C.storage_type(p.out_dtype)
    params = ["const unsigned short* __restrict__ A", "const unsigned short* __restrict__ B"]
    call = ["A", "B"]
    if p.bias:
        params.append(f"const {out_c}* __restrict__ bias")
        call.append("bias")
    if p.has_z:
        params.append(f"const {out_c}* Z")  # may alias D (an in-place residual)
        call.append("Z")
    params.append(f"{out_c}* D")
    call.append("D")

    if p.out_dtype == F32:
        pair_store = "float2 w; w.x = v0; w.y = v1; *reinterpret_cast<float2*>(D + o) = w;"
    else:
        cvt = "rtx_f2bf" if p.out_dtype == DType.BFLOAT16 else "rtx_f2h"
        pair_store = (f"*reinterpret_cast<unsigned int*>(D + o) = (unsigned int){cvt}(v0) | "
                      f"((unsigned int){cvt}(v1) << 16);")

    vec_a, vec_b, vec_d = p.vector_flags()
    fields = dict(
        prelude=C.PRELUDE, bf16=int(p.dtype == DType.BFLOAT16), stages=t.stages, trans_b=int(p.trans_b),
        shape=declare("int", [("M", p.m), ("N", p.n), ("K", p.k)]),
        lds=declare("long long", [("LDA", p.lda), ("LDB", p.ldb), ("LDZ", p.ldz), ("LDD", p.ldd)]),
        strides=declare("long long", [("SA", p.stride_a), ("SB", p.stride_b), ("SZ", p.stride_z),
                                      ("SD", p.stride_d)]),
        bm=t.bm, bn=t.bn, bk=t.bk, warps_m=t.warps_m, warps_n=t.warps_n, wm=t.warp_m, wn=t.warp_n, threads=t.threads,
        vectors=declare("bool", [("VEC_A", vec_a), ("VEC_B", vec_b), ("VEC_D", vec_d)]),
        d_align=2 * p.out_dtype.itemsize,
        constants=constants, activations=activation_functions(p.activation, p.params), load_a=load_a or LOAD_A,
        params=", ".join(params), args=", ".join(call), kernel=KERNEL_NAME,
        batch_offsets=p.batch_offsets(),
        epilogue=" ".join(epilogue_statements(p, "Z[(long long)row * LDZ + col]")),
        pair_store=pair_store, store=C.store("v", p.out_dtype),
        k_tiles="const" if is_dynamic(p.k) else "constexpr")
    source = render(_SOURCE, dims="", dims_setup="", **fields)
    decls, setup = dim_mirror(source)
    return render(_SOURCE, dims=decls, dims_setup=setup, **fields) if decls else source


# The source, in five parts, placeholders ${like_this} filled in by gemm_source: the
# problem's constants; the primitives (the epilogue's activation among them); LOAD_A, which
# opens rtx_load_tiles (its comment, signature and the copy of the A tile) and which another A
# operand may replace (conv_implicit gathers A from an image); _LOAD_B, which copies the B tile
# and closes rtx_load_tiles; the main loop, the epilogue and the kernel.
_CONSTANTS = r"""${prelude}${dims}
#define RTX_BF16 ${bf16}
#define RTX_STAGES ${stages}
#define RTX_TRANS_B ${trans_b}
${shape}
${lds}
${strides}
constexpr int BM = ${bm}, BN = ${bn}, BK = ${bk}, WARPS_M = ${warps_m}, WARPS_N = ${warps_n};
constexpr int WM = ${wm}, WN = ${wn}, THREADS = ${threads};
${vectors}
constexpr int D_ALIGN = ${d_align};  // bytes, for paired stores
${constants}"""

_HEAD = r"""
#if RTX_BF16 && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "rtxrt GEMM: bf16 needs sm_80 (Ampere) or newer; sm_75 has no bf16 tensor-core mma"
#endif

constexpr int MI = WM / 16, NI = WN / 8;  // mma tiles per warp (16 rows, 8 columns each)
constexpr int AS = BK + 8;  // padded row of an A tile (elements)
constexpr int BS = RTX_TRANS_B ? BK + 8 : BN + 8;  // padded row of a B tile
constexpr int A_TILE = BM * AS;
constexpr int B_TILE = RTX_TRANS_B ? BN * BS : BK * BS;
constexpr int STAGE = A_TILE + B_TILE;

${activations}
""" + SHARED_AND_LDMATRIX + r"""// c += a * b for one 16x8 tile over k = 16 (fragments as the PTX ISA lays them out).
__device__ __forceinline__ void rtx_mma(float* c, const unsigned* a, const unsigned* b) {
""" + MMA_SM80 + r"""""" + MMA_SM75 + r"""}

""" + CP_ASYNC + r""""""

LOAD_A = r"""// Copies the A tile (rows m0.., columns k0..) and the B tile of one K step into shared memory.
// va, vb: 16-byte copies allowed (the shapes allow them, VEC_A / VEC_B, and the pointers
// are aligned); otherwise element by element.
__device__ __forceinline__ void rtx_load_tiles(unsigned short* sa, unsigned short* sb,
                                               const unsigned short* __restrict__ A,
                                               const unsigned short* __restrict__ B,
                                               int m0, int n0, int k0, int tid, bool va, bool vb) {
  if (VEC_A && va) {
    constexpr int CHUNKS = BM * BK / 8, PER_ROW = BK / 8;
#pragma unroll
    for (int i = 0; i < (CHUNKS + THREADS - 1) / THREADS; ++i) {
      const int c = tid + i * THREADS;
      if (CHUNKS % THREADS == 0 || c < CHUNKS) {
        const int r = c / PER_ROW, kc = (c % PER_ROW) * 8;
        const int gm = m0 + r, gk = k0 + kc;
        const bool valid = gm < M && gk < K;
        rtx_copy16(sa + r * AS + kc, valid ? A + (long long)gm * LDA + gk : A, valid);
      }
    }
  } else {
    constexpr int ELEMS = BM * BK;
#pragma unroll 4
    for (int i = 0; i < (ELEMS + THREADS - 1) / THREADS; ++i) {
      const int e = tid + i * THREADS;
      if (ELEMS % THREADS == 0 || e < ELEMS) {
        const int r = e / BK, kk = e % BK;
        const int gm = m0 + r, gk = k0 + kk;
        sa[r * AS + kk] = (gm < M && gk < K) ? A[(long long)gm * LDA + gk] : (unsigned short)0;
      }
    }
  }
"""

_LOAD_B = r"""#if RTX_TRANS_B  // B is [N, K]: a tile of BN rows of BK
  if (VEC_B && vb) {
    constexpr int CHUNKS = BN * BK / 8, PER_ROW = BK / 8;
#pragma unroll
    for (int i = 0; i < (CHUNKS + THREADS - 1) / THREADS; ++i) {
      const int c = tid + i * THREADS;
      if (CHUNKS % THREADS == 0 || c < CHUNKS) {
        const int r = c / PER_ROW, kc = (c % PER_ROW) * 8;
        const int gn = n0 + r, gk = k0 + kc;
        const bool valid = gn < N && gk < K;
        rtx_copy16(sb + r * BS + kc, valid ? B + (long long)gn * LDB + gk : B, valid);
      }
    }
  } else {
    constexpr int ELEMS = BN * BK;
#pragma unroll 4
    for (int i = 0; i < (ELEMS + THREADS - 1) / THREADS; ++i) {
      const int e = tid + i * THREADS;
      if (ELEMS % THREADS == 0 || e < ELEMS) {
        const int r = e / BK, kk = e % BK;
        const int gn = n0 + r, gk = k0 + kk;
        sb[r * BS + kk] = (gn < N && gk < K) ? B[(long long)gn * LDB + gk] : (unsigned short)0;
      }
    }
  }
#else  // B is [K, N]: a tile of BK rows of BN
  if (VEC_B && vb) {
    constexpr int CHUNKS = BK * BN / 8, PER_ROW = BN / 8;
#pragma unroll
    for (int i = 0; i < (CHUNKS + THREADS - 1) / THREADS; ++i) {
      const int c = tid + i * THREADS;
      if (CHUNKS % THREADS == 0 || c < CHUNKS) {
        const int r = c / PER_ROW, nc = (c % PER_ROW) * 8;
        const int gk = k0 + r, gn = n0 + nc;
        const bool valid = gk < K && gn < N;
        rtx_copy16(sb + r * BS + nc, valid ? B + (long long)gk * LDB + gn : B, valid);
      }
    }
  } else {
    constexpr int ELEMS = BK * BN;
#pragma unroll 4
    for (int i = 0; i < (ELEMS + THREADS - 1) / THREADS; ++i) {
      const int e = tid + i * THREADS;
      if (ELEMS % THREADS == 0 || e < ELEMS) {
        const int r = e / BN, nn = e % BN;
        const int gk = k0 + r, gn = n0 + nn;
        sb[r * BS + nn] = (gk < K && gn < N) ? B[(long long)gk * LDB + gn] : (unsigned short)0;
      }
    }
  }
#endif
}

"""

_COMPUTE = r"""// acc += the A tile times the B tile of one stage (shared-memory byte address sbase).
__device__ __forceinline__ void rtx_mma_tiles(float (&acc)[MI][NI][4], unsigned sbase,
                                              int warp_m, int warp_n, int lane) {
  const unsigned sa = sbase, sb = sbase + 2u * A_TILE;
#pragma unroll
  for (int kk = 0; kk < BK; kk += 16) {
    unsigned a[MI][4], b[NI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
      // lanes 0-15 give rows 0-15 at k 0-7, lanes 16-31 the same rows at k 8-15
      const int row = warp_m * WM + mi * 16 + (lane & 15), col = kk + (lane >> 4) * 8;
      rtx_ldmatrix_x4(a[mi], sa + 2u * (row * AS + col));
    }
#pragma unroll
    for (int nj = 0; nj < NI / 2; ++nj) {  // two 8-column mma tiles per ldmatrix.x4
      unsigned r[4];
#if RTX_TRANS_B  // rows of N: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
      const int n = warp_n * WN + nj * 16 + (lane & 7) + (lane >> 4) * 8, k = kk + ((lane >> 3) & 1) * 8;
      rtx_ldmatrix_x4(r, sb + 2u * (n * BS + k));
#else  // rows of K, transposed: the same four matrices
      const int k = kk + (lane & 7) + ((lane >> 3) & 1) * 8, n = warp_n * WN + nj * 16 + (lane >> 4) * 8;
      rtx_ldmatrix_x4_trans(r, sb + 2u * (k * BS + n));
#endif
      b[2 * nj][0] = r[0]; b[2 * nj][1] = r[1]; b[2 * nj + 1][0] = r[2]; b[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) rtx_mma(acc[mi][ni], a[mi], b[ni]);
  }
}

__device__ __forceinline__ void rtx_gemm(unsigned short* smem, ${params}, bool va, bool vb, bool vd) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / WARPS_N, warp_n = warp % WARPS_N;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const unsigned sbase = rtx_smem_addr(smem);
  float acc[MI][NI][4];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mi][ni][j] = 0.0f;

  ${k_tiles} int KT = (K + BK - 1) / BK;
#if RTX_STAGES == 1
  for (int kt = 0; kt < KT; ++kt) {
    rtx_load_tiles(smem, smem + A_TILE, A, B, m0, n0, kt * BK, tid, va, vb);
    rtx_commit();
    rtx_wait<0>();
    __syncthreads();
    rtx_mma_tiles(acc, sbase, warp_m, warp_n, lane);
    __syncthreads();
  }
#else
  if (KT > 0) rtx_load_tiles(smem, smem + A_TILE, A, B, m0, n0, 0, tid, va, vb);
  rtx_commit();
  for (int kt = 0; kt < KT; ++kt) {
    if (kt + 1 < KT) {  // the next tile into the other buffer, read last before the previous barrier
      unsigned short* next = smem + ((kt + 1) & 1) * STAGE;
      rtx_load_tiles(next, next + A_TILE, A, B, m0, n0, (kt + 1) * BK, tid, va, vb);
    }
    rtx_commit();
    rtx_wait<1>();  // this tile's copies (all but the newest group) have landed
    __syncthreads();
    rtx_mma_tiles(acc, sbase + 2u * ((kt & 1) * STAGE), warp_m, warp_n, lane);
    __syncthreads();
  }
#endif

  // Epilogue: thread (lane) holds rows g and g + 8, columns 2t and 2t + 1 of each mma tile.
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + warp_m * WM + mi * 16 + (lane >> 2) + h * 8;
        const int col0 = n0 + warp_n * WN + ni * 8 + (lane & 3) * 2;
        if (row >= M || col0 >= N) continue;
        float v0 = 0.0f, v1 = 0.0f;
        {
          const int col = col0;
          float x = acc[mi][ni][2 * h];
          ${epilogue}
          v0 = x;
        }
        if (col0 + 1 < N) {
          const int col = col0 + 1;
          float x = acc[mi][ni][2 * h + 1];
          ${epilogue}
          v1 = x;
        }
        const long long o = (long long)row * LDD + col0;
        bool paired = false;
        if (VEC_D && vd && col0 + 1 < N) { ${pair_store} paired = true; }
        if (!paired) {
          { const float v = v0; D[o] = ${store}; }
          if (col0 + 1 < N) { const float v = v1; D[o + 1] = ${store}; }
        }
      }
}

extern "C" __global__ void __launch_bounds__(THREADS) ${kernel}(${params}) {
  __shared__ __align__(16) unsigned short smem[RTX_STAGES * STAGE];
${dims_setup}  const long long z = blockIdx.z;
  A += z * SA;
  B += z * SB;
  ${batch_offsets}
  // 16-byte copies and paired stores where the shapes allow them and the pointers are aligned
  const bool va = (reinterpret_cast<unsigned long long>(A) & 15) == 0;
  const bool vb = (reinterpret_cast<unsigned long long>(B) & 15) == 0;
  const bool vd = (reinterpret_cast<unsigned long long>(D) & (D_ALIGN - 1)) == 0;
  rtx_gemm(smem, ${args}, va, vb, vd);
}
"""

_SOURCE = _CONSTANTS + _HEAD + "${load_a}" + _LOAD_B + _COMPUTE
