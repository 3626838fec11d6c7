"""Implicit-GEMM convolution: the tensor-core GEMM of rtxrt.backends.cuda.ops.gemm_source with an A operand
that is never written to memory.

A convolution is the GEMM ``Y[N*OH*OW, OC] = patches[N*OH*OW, K] @ W[OC, K]ᵀ`` (K = KH*KW*C in
(kh, kw, c) order, the weights packed by ``conv.pack_conv_weights``). The im2col tactic writes
the patch matrix to a workspace first: KH*KW times the activation, written once and read back.
Here the GEMM's A-tile loader gathers the patch rows straight from X (NHWC) while it stages
them into shared memory: row (n, oh, ow), column (kh, kw, c) is
``X[n, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW, c]``, zero where that pixel is padding. With
C % 8 == 0 each 16-byte chunk of a row is 8 channels of one pixel, so the chunk is one
``cp.async`` (its zero-fill form, source size 0, for padding taps and for rows or columns past
the edge of the tile). Everything else (B tiles, ldmatrix, mma, the fused epilogue with bias,
activation and residual Z as [N*OH*OW, OC]) is gemm.py's source, unchanged: only its
``LOAD_A`` part is replaced (``gemm.gemm_source``).

Covers X stored NHWC in fp16 or bf16, group 1, C % 8 == 0, any kernel size, stride, padding
and dilation (``why_not_implicit`` says what else there is); a first convolution (C = 3) or
an NCHW input keeps the im2col tactic.

``ConvGeometry`` (a convolution's shapes, baked into every conv kernel's source as constants)
lives here too, shared with conv.py's im2col and depthwise kernels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.dtypes import DType
from ....ir.ops.conv import Window
from ..codegen import CodegenError
from ..codegen.dynamic import dim_names, is_dynamic, lower, peek, upper
from ..codegen.kernel_source import KernelArg
from ..codegen.template import render
from .gemm_source import (
    MMA_DTYPES,
    GemmKernel,
    GemmProblem,
    GemmTactic,
    candidate_tactics,
    gemm_launch,
    gemm_source,
    mma_instruction,
)
from ..plan.program import BufferRole

UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class ConvGeometry:
    """The shapes of one 2-D convolution: X [n, c, h, w] (logical NCHW, stored in ``layout``),
    W [oc, c, kh, kw], output [n, oh, ow, oc]; ``pads`` are the begins (h, w), then the ends."""

    n: int
    c: int
    h: int
    w: int
    oc: int
    kh: int
    kw: int
    oh: int
    ow: int
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    layout: str

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        """X's shape as stored."""
        return (self.n, self.c, self.h, self.w) if self.layout == "NCHW" else (self.n, self.h, self.w, self.c)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.oh, self.ow, self.oc)

    def constants(self) -> str:
        """The shapes as the C++ constants every conv kernel reads: file-scope constexprs, less
        those that vary over a generic plan's profile (``dynamic_constants`` declares those
        inside the kernel)."""
        lines = self._constant_lines()
        if not any(is_dynamic(v) for line in lines for _, v in line):
            (sh, sw), (ph, pw), (dh, dw) = self.strides, self.pads[:2], self.dilations
            return render(_GEOMETRY, n=self.n, c=self.c, h=self.h, w=self.w, oc=self.oc, kh=self.kh, kw=self.kw,
                          oh=self.oh, ow=self.ow, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw)
        text = ""
        for line in lines:
            static = [f"{k} = {v}" for k, v in line if not is_dynamic(v)]
            text += f"constexpr int {', '.join(static)};\n" if static else ""
        return text

    def dynamic_constants(self, indent: str = "  ") -> str:
        """Declarations (one a line, for a kernel's or device function's body) of the constants
        that vary over the profile, each a C expression over the kernel's dim arguments; ""
        when every shape is fixed."""
        return "".join(f"{indent}const int {k} = {v};\n" for line in self._constant_lines() for k, v in line
                       if is_dynamic(v))

    @property
    def dynamic(self) -> bool:
        """Some shape varies over a generic plan's profile."""
        return any(is_dynamic(v) for line in self._constant_lines() for _, v in line)

    def _constant_lines(self) -> list[list[tuple[str, int]]]:
        (sh, sw), (ph, pw), (dh, dw) = self.strides, self.pads[:2], self.dilations
        return [[("NB", self.n), ("C", self.c), ("H", self.h), ("W", self.w), ("OC", self.oc)],
                [("KH", self.kh), ("KW", self.kw), ("OH", self.oh), ("OW", self.ow)],
                [("SH", sh), ("SW", sw), ("PH", ph), ("PW", pw), ("DH", dh), ("DW", dw)]]

    def x_index(self) -> str:
        """The offset of X[n, c, ih, iw] in its stored layout (64-bit)."""
        if self.layout == "NHWC":
            return "(((long long)n * H + ih) * W + iw) * C + c"
        return "(((long long)n * C + c) * H + ih) * W + iw"


def window_out(sizes: Sequence[int], window: Window, ceil_mode: bool = False) -> tuple[int, ...]:
    """The output sizes of ``window`` (``sliding_window`` over the spatial ``sizes``). Where a
    size varies over a generic plan's profile (a DimInt) the output size is the expression
    ``(size + pads - extent) / stride + 1`` over it, so a kernel of the window has the same
    source at every shape; where that is not sure to hold (ceil_mode, a span that may be
    negative) the value at the planned shape, which gives another source (a compile) at a
    shape where it differs, never a wrong result. The pads are the planned shape's values (for
    auto_pad SAME with a stride they follow the size, and so does the source)."""
    rank = len(sizes)
    pads = tuple(int(p) for p in window.pads)
    out = []
    for a, size in enumerate(sizes):
        if is_dynamic(size) and not ceil_mode:
            extent = (int(window.kernel[a]) - 1) * int(window.dilations[a]) + 1
            span = size + (pads[a] + pads[rank + a] - extent)
            if lower(span) >= 0:
                count = span // int(window.strides[a]) + 1
                if peek(count) == peek(window.out[a]):  # (a check of the expression, not a decision)
                    out.append(count)
                    continue
        out.append(int(window.out[a]))  # the value at the planned shape (noted as read)
    return tuple(out)


# The shapes every conv kernel (im2col, depthwise, implicit GEMM) bakes in.
_GEOMETRY = r"""constexpr int NB = ${n}, C = ${c}, H = ${h}, W = ${w}, OC = ${oc};
constexpr int KH = ${kh}, KW = ${kw}, OH = ${oh}, OW = ${ow};
constexpr int SH = ${sh}, SW = ${sw}, PH = ${ph}, PW = ${pw}, DH = ${dh}, DW = ${dw};
"""


@dataclass(frozen=True)
class ImplicitGemmTactic:
    """Implicit GEMM with the block, warp and stage layout of ``tiles``."""

    tiles: GemmTactic

    @property
    def label(self) -> str:
        return f"implicit_{self.tiles.label}"


# The tiles worth timing: gemm.py's double-buffered candidates (its single-stage one would
# leave the gathers' latency exposed), narrowed per problem as candidate_tactics does.
IMPLICIT_TILES: tuple[GemmTactic, ...] = (
    GemmTactic(128, 128, 32, 2, 2),
    GemmTactic(128, 128, 32, 4, 2),
    GemmTactic(128, 64, 32, 2, 2),
    GemmTactic(64, 64, 32, 2, 2),
    GemmTactic(32, 64, 64, 1, 2),  # few output pixels (batch 1, 7x7)
)


def implicit_tactics(problem: GemmProblem | None = None) -> tuple[ImplicitGemmTactic, ...]:
    """The implicit tactics worth timing for a convolution whose GEMM is ``problem`` (all of
    them without one)."""
    tiles = candidate_tactics(problem)
    return tuple(ImplicitGemmTactic(t) for t in IMPLICIT_TILES if t in tiles)


def why_not_implicit(layout: str, channels: int, dtype: DType) -> str | None:
    """Why the implicit GEMM cannot compute a group-1 convolution of X stored in ``layout``
    with ``channels`` channels, as ``dtype``; None when it can."""
    if layout != "NHWC":
        return f"X is stored {layout}; the implicit GEMM gathers channels-last (NHWC) pixels"
    if dtype not in MMA_DTYPES:
        return f"the implicit GEMM multiplies float16 or bfloat16 on tensor cores, not {dtype.short}"
    if channels % 8:
        return f"{channels} input channels: the implicit GEMM copies 8 channels of a pixel at a time (C % 8 == 0)"
    return None


@dataclass(frozen=True)
class ImplicitConvKernel(GemmKernel):
    """A generated implicit-GEMM convolution: ``args`` are A (X, NHWC), B (the packed
    weights [OC, K]), [bias [OC]], [Z [N, OH, OW, OC]] and D (Y [N, OH, OW, OC]); ``problem``
    is the equivalent GEMM (M = N*OH*OW, N = OC, K = KH*KW*C, B as [N, K]), ``tactic`` its
    tiles."""

    geometry: ConvGeometry


def implicit_conv_kernel(g: ConvGeometry, problem: GemmProblem, tactic: ImplicitGemmTactic,
                         arch: str | None = None) -> ImplicitConvKernel:
    """The implicit-GEMM kernel of the convolution ``g`` with ``problem``'s epilogue (its
    shapes must be the convolution's GEMM: see ImplicitConvKernel). CodegenError where
    ``why_not_implicit`` objects, or for bf16 on an ``arch`` without bf16 mma (sm_75)."""
    reason = why_not_implicit(g.layout, g.c, problem.dtype)
    if reason:
        raise CodegenError(f"implicit-GEMM convolution: {reason}")
    k = g.kh * g.kw * g.c
    gemm_shape = (problem.m, problem.n, problem.k, problem.trans_b, problem.batch)
    if gemm_shape != (g.n * g.oh * g.ow, g.oc, k, True, 1) or problem.out_dtype != problem.dtype:
        raise CodegenError(f"implicit-GEMM convolution: GEMM {problem.describe()} is not the convolution's "
                           f"{g.n * g.oh * g.ow}x{g.oc}x{k} with B as [N, K]")
    if problem.lda != k or problem.ldd != g.oc or problem.ldz != g.oc or problem.ldb != k:
        raise CodegenError("implicit-GEMM convolution: leading dimensions must be dense")
    mma_instruction(arch or "sm_80", problem.dtype)
    # X offsets: unsigned arithmetic wraps (defined) where a row or column is not there and
    # the offset goes unused; those that are used lie in X
    index = "unsigned" if upper(g.n * g.h * g.w * g.c) <= UINT32_MAX else "long long"
    constants = f"{g.constants()}typedef {index} XI;\n"
    source = gemm_source(problem, tactic.tiles, load_a=_gather_a(g), constants=constants)
    dtype = problem.dtype
    args = [KernelArg("A", BufferRole.IN, 0, dtype, g.x_shape), KernelArg("B", BufferRole.IN, 1, dtype, (g.oc, k))]
    if problem.bias:
        args.append(KernelArg("bias", BufferRole.IN, 2, dtype, (g.oc,)))
    if problem.has_z:
        args.append(KernelArg("Z", BufferRole.IN, 3, dtype, g.out_shape))
    args.append(KernelArg("D", BufferRole.OUT, 0, dtype, g.out_shape))
    return ImplicitConvKernel.named("rtx_iconv_", source, gemm_launch(problem, tactic.tiles), args,
                                    problem=problem, tactic=tactic.tiles, geometry=g)


def _gather_a(g: ConvGeometry) -> str:
    """_GATHER_A for ``g``. Where shapes vary over a generic plan's profile they are kernel
    dim arguments (``rtxd_*``), which the device functions here cannot see: rtx_patch and the
    loader take them as parameters of the same names and declare the shapes from them, and a
    macro ``rtx_load_tiles(...)`` appends them to the GEMM's calls (made where the kernel's dim
    arguments are in scope under their names)."""
    if not g.dynamic:
        return _GATHER_A
    local = g.dynamic_constants()
    names = list(dim_names(local))
    params, passed = ", ".join(f"int {n}" for n in names), ", ".join(names)
    local += "  const int PM = NB * OH * OW;  // rows of the patch matrix (the GEMM's M)\n"
    source = _GATHER_A
    for old, new in (
            ("rtx_patch(int gm, int gk, XI& offset) {\n", f"rtx_patch(int gm, int gk, XI& offset, {params}) {{\n{local}"),
            ("gm < M ?", "gm < PM ?"),
            ("rtx_patch(m0 + r, k0 + kc, offset)", f"rtx_patch(m0 + r, k0 + kc, offset, {passed})"),
            ("rtx_patch(m0 + r, k0 + kk, offset)", f"rtx_patch(m0 + r, k0 + kk, offset, {passed})"),
            ("__device__ __forceinline__ void rtx_load_tiles(",
             f"#define rtx_load_tiles(...) rtx_load_tiles_dims(__VA_ARGS__, {passed})\n"
             "__device__ __forceinline__ void rtx_load_tiles_dims("),
            ("int m0, int n0, int k0, int tid, bool va, bool vb) {",
             f"int m0, int n0, int k0, int tid, bool va, bool vb, {params}) {{")):
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


# gemm.LOAD_A's replacement: the same rtx_load_tiles signature (A is X), the A tile gathered.
_GATHER_A = r"""// Where row gm, column gk of the patch matrix lives in X (NHWC): its offset, and whether it
// is there at all (not padding, not past M or K). The row's part (its window's corner, maybe
// in the padding; far above the image past M) does not change along K.
__device__ __forceinline__ bool rtx_patch(int gm, int gk, XI& offset) {
  const int ow = gm % OW, rest = gm / OW;
  const int oh = rest % OH, n = rest / OH;
  const int ih0 = gm < M ? oh * SH - PH : -(1 << 24), iw0 = ow * SW - PW;
  const XI corner = (((XI)n * H + ih0) * W + iw0) * C;
  const int tap = gk / C, c = gk - tap * C;
  const int kh = tap / KW, kw = tap - kh * KW;
  offset = corner + (XI)(kh * DH * W + kw * DW) * C + c;
  return gk < K && (unsigned)(ih0 + kh * DH) < (unsigned)H && (unsigned)(iw0 + kw * DW) < (unsigned)W;
}

// Gathers the A tile (rows m0.., columns k0.. of the patch matrix) from X and copies the B
// tile of one K step into shared memory. va: X is 16-byte aligned, so each 16-byte chunk of a
// row (8 channels of one pixel, C % 8 == 0) is one copy, zero-filled where rtx_patch says
// it is not there; otherwise element by element. vb as for the GEMM.
__device__ __forceinline__ void rtx_load_tiles(unsigned short* sa, unsigned short* sb,
                                               const unsigned short* __restrict__ A,
                                               const unsigned short* __restrict__ B,
                                               int m0, int n0, int k0, int tid, bool va, bool vb) {
  if (va) {
    constexpr int CHUNKS = BM * BK / 8, PER_ROW = BK / 8;
#pragma unroll
    for (int i = 0; i < (CHUNKS + THREADS - 1) / THREADS; ++i) {
      const int ch = tid + i * THREADS;
      if (CHUNKS % THREADS == 0 || ch < CHUNKS) {
        // where THREADS is a multiple of PER_ROW a thread's chunks share their columns (and taps)
        const int r = ch / PER_ROW, kc = ((THREADS % PER_ROW == 0 ? tid : ch) % PER_ROW) * 8;
        XI offset;
        const bool valid = rtx_patch(m0 + r, k0 + kc, offset);
        rtx_copy16(sa + r * AS + kc, valid ? A + offset : A, valid);
      }
    }
  } else {
    constexpr int ELEMS = BM * BK;
#pragma unroll 4
    for (int i = 0; i < (ELEMS + THREADS - 1) / THREADS; ++i) {
      const int e = tid + i * THREADS;
      if (ELEMS % THREADS == 0 || e < ELEMS) {
        const int r = e / BK, kk = e % BK;
        XI offset;
        sa[r * AS + kk] = rtx_patch(m0 + r, k0 + kk, offset) ? A[offset] : (unsigned short)0;
      }
    }
  }
"""


__all__ = ["IMPLICIT_TILES", "ConvGeometry", "ImplicitConvKernel", "ImplicitGemmTactic", "implicit_conv_kernel",
           "implicit_tactics", "why_not_implicit"]
