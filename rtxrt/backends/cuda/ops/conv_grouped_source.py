"""Grouped 2-D convolutions (1 < group, not depthwise: ResNeXt, RegNet, ShuffleNet, channel
multipliers) on the GPU: the plans ``conv_source.conv_plan`` makes for them.

A grouped convolution is G convolutions side by side: group g takes input channels
[g*CG, (g+1)*CG) to output channels [g*OCG, (g+1)*OCG) (CG = C/G, OCG = OC/G). As a GEMM it is
one product per group, ``Y[:, g] = patches[:, g] @ W[g]ᵀ``, M = N*OH*OW rows, K_g = KH*KW*CG
columns in (kh, kw, c) order. Three tactics:

- ``grouped_im2col_gemm``: an im2col kernel writes the patch matrix with its columns ordered
  group-major, ``[M, G, KGP]`` (KGP: K_g rounded up with zero columns to 16-byte rows), then
  one GEMM batched over the groups (blockIdx.z): A = the patches (lda = G*KGP, batch stride
  KGP), B = the weights packed ``[OC, KGP]`` by ``pack_conv_weights`` (group g's OCG rows
  start at row g*OCG: ldb = KGP, batch stride OCG*KGP), D = Y seen as ``[M, G, OCG]`` (ldd =
  OC, batch stride OCG), with the fused epilogue: the bias one vector per group
  (``GemmProblem.stride_bias``), the residual Z read like D. Tensor cores for fp16 and bf16,
  the SIMT GEMM for fp32, as for group 1.
- ``grouped_gemm``: a 1x1 convolution with stride 1 and no padding over NHWC: X already is
  the patch matrix ``[M, G, CG]`` (lda = C, batch stride CG): only the batched GEMM.
- ``grouped_direct``: one thread per output element (adjacent threads: adjacent output
  channels) summing its group's K_g products in fp32, then the epilogue: the depthwise
  kernel, generalized. Its weights are packed k-major, ``[K_g, OC]`` (``weight_layout``
  "HWIO"), so that adjacent threads read adjacent weights. The default where a group is narrow
  (``prefers_direct``): there the GEMM's tiles would be mostly padding and the im2col's
  KH*KW-fold copy of X would cost more than the products.

``ConvPlan.gemm`` is the batched problem (for the direct tactic too: the tactics an autotuner
times come from it). cuBLAS writes each batch's rows dense, and rtxrt's binding refuses
batches of C interleaved in Y, so a cuBLAS program writes the product as ``[G, M, OCG]`` to
a scratch buffer and ``scatter_epilogue_kernel`` moves it into Y with the epilogue.

Shapes are baked into every source; a dim that varies over a generic plan's profile (batch,
image size: codegen/dynamic.py) is a kernel argument, and the sources depend on the profile's
bounds only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, is_dynamic, upper
from ..codegen.epilogue import activation_functions, epilogue_statements
from ..codegen.kernel_source import (
    KERNEL_NAME,
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..codegen.template import render
from ..plan.program import BufferRole
from .conv_implicit_source import ConvGeometry, ImplicitGemmTactic
from .conv_plan_parts import (
    GEMM_BUFFERS,
    IM2COL_POSITION,
    ROW_ALIGN,
    ConvPlan,
    ConvStep,
    default_tactic,
    gemm_candidates,
    launch_step,
)
from .gemm_simt_source import SimtTactic, simt_gemm_kernel
from .gemm_source import GemmProblem, GemmTactic, gemm_kernel
from .tile_cost import worth_timing

DIRECT_MAX_OCG = 8  # output channels a group at most, for the direct kernel to be the default
DIRECT_MAX_K = 32  # or products per output at most (channel multipliers, few input channels)
MIN_BLOCKS = 132  # blocks the default GEMM tiles give, all groups together: about a wave on a big GPU


@dataclass(frozen=True)
class GroupedDirectTactic:
    """The direct kernel of ``grouped_direct`` (one thread per output element, no GEMM)."""

    @property
    def label(self) -> str:
        return "direct"


GROUPED_DIRECT = GroupedDirectTactic()
GroupedTactic = GemmTactic | SimtTactic | GroupedDirectTactic


def prefers_direct(ocg: int, k_g: int) -> bool:
    """Whether the direct kernel is the default for groups of ``ocg`` output channels and
    ``k_g`` products an output: a GEMM tile is at least 32 or 64 columns wide, so a narrow
    group leaves most of it empty, and with few products the im2col copy costs more than
    the products it feeds. (The autotuner times every tactic; this only picks the first.)"""
    return ocg <= DIRECT_MAX_OCG or k_g <= DIRECT_MAX_K


def grouped_conv_plan(geo: ConvGeometry, group: int, dtype: DType, epilogue: Mapping[str, Any],
                      epilogue_buffers: Mapping[str, tuple[tuple[int, ...], DType]],
                      tactic: GroupedTactic | None = None) -> ConvPlan:
    """The plan of the grouped convolution ``geo`` (``group`` groups, every tensor stored as
    ``dtype``) with ``epilogue`` (GemmProblem's bias, activation, activation_params,
    residual) and the epilogue's buffers (bias, Z, Y). ``tactic``: a GemmTactic or SimtTactic
    (im2col or the direct 1x1, then the batched GEMM with those tiles) or GROUPED_DIRECT
    (default: ``prefers_direct``, else the batched GEMM with ``default_tactic``'s tiles)."""
    if isinstance(tactic, ImplicitGemmTactic):
        raise CodegenError("the implicit-GEMM convolution handles group 1, not grouped convolutions")
    cg, ocg = geo.c // group, geo.oc // group
    k_g = geo.kh * geo.kw * cg
    direct_1x1 = ((geo.kh, geo.kw) == (1, 1) and geo.layout == "NHWC" and tuple(geo.strides) == (1, 1)
                  and not any(geo.pads))
    align = ROW_ALIGN // dtype.itemsize
    kgp = k_g if direct_1x1 else -(-k_g // align) * align
    m = geo.n * geo.oh * geo.ow
    lda = geo.c if direct_1x1 else group * kgp
    problem = GemmProblem(m, ocg, kgp, trans_b=True, batch=group, lda=lda, stride_a=kgp, ldb=kgp,
                          stride_b=ocg * kgp, ldz=geo.oc, stride_z=ocg, ldd=geo.oc, stride_d=ocg,
                          stride_bias=ocg, **epilogue)
    shapes = dict(x_layout=geo.layout, storage_dtype=dtype, x_shape=(geo.n, geo.c, geo.h, geo.w),
                  w_shape=(geo.oc, cg, geo.kh, geo.kw), out_shape=geo.out_shape)
    buffers: dict[str, tuple[tuple[int, ...], DType]] = {"X": (geo.x_shape, dtype)}
    if tactic is None and prefers_direct(ocg, k_g):
        tactic = GROUPED_DIRECT
    if isinstance(tactic, GroupedDirectTactic):
        kernel = grouped_direct_kernel(geo, group, problem)
        buffers["W"] = ((k_g, geo.oc), dtype)
        buffers.update(epilogue_buffers)
        return ConvPlan("grouped_direct", k_padded=k_g, steps=(launch_step(kernel),), buffers=buffers, gemm=problem,
                        weight_layout="HWIO", **shapes)
    tactic = tactic or _default_tiles(problem)
    gemm = simt_gemm_kernel(problem, tactic) if isinstance(tactic, SimtTactic) else gemm_kernel(problem, tactic)
    names = {**GEMM_BUFFERS, "A": "X" if direct_1x1 else "workspace"}
    gemm_step = ConvStep(gemm, tuple(names[a.name] for a in gemm.args), gemm.launch.grid, gemm.launch.block)
    buffers["W"] = ((geo.oc, kgp), dtype)
    if direct_1x1:
        buffers.update(epilogue_buffers)
        return ConvPlan("grouped_gemm", k_padded=kgp, steps=(gemm_step,), buffers=buffers, gemm=problem, **shapes)
    buffers["workspace"] = ((m, group * kgp), dtype)
    buffers.update(epilogue_buffers)
    steps = (launch_step(grouped_im2col_kernel(geo, group, kgp, dtype)), gemm_step)
    return ConvPlan("grouped_im2col_gemm", k_padded=kgp, steps=steps, buffers=buffers, gemm=problem, **shapes)


def grouped_tactics(plan: ConvPlan, pruned: bool = True) -> tuple[GroupedTactic, ...]:
    """The tactics worth timing for the grouped ``plan``: its batched GEMM's tiles (with
    ``pruned``, less those the cost model says cannot win, tile_cost.py), and the direct kernel."""
    tiles = gemm_candidates(plan.gemm)
    if pruned:
        tiles = worth_timing(plan.gemm, tiles, (_default_tiles(plan.gemm),))
    return (*tiles, GROUPED_DIRECT)


def gemm_tactic(plan: ConvPlan) -> GemmTactic | SimtTactic:
    """The tiles the default GEMM plan of the grouped ``plan``'s convolution uses."""
    return _default_tiles(plan.gemm)


def _default_tiles(problem: GemmProblem) -> GemmTactic | SimtTactic:
    """``default_tactic``'s choice, counting the blocks of every group (blockIdx.z) together."""
    return default_tactic(problem, -(-MIN_BLOCKS // problem.batch))


# ---------------------------------------------------------------- im2col, group-major

def grouped_im2col_kernel(g: ConvGeometry, group: int, kgp: int, dtype: DType) -> KernelSource:
    """Copies X into the patch matrix [N*OH*OW, G*KGP]: row (n, oh, ow), then per group its
    KGP columns (kh, kw, c) over the group's CG channels, zeros for padding pixels and for
    the columns past KH*KW*CG. Values are copied, never computed on: fp16 and bf16 share a
    kernel. With NHWC and CG a multiple of a 16-byte vector one vector a thread (KGP is K_g
    then); else one filter tap of one group (its CG channels) a thread, plus one thread per
    row and group for the zero columns."""
    cg = g.c // group
    m = g.n * g.oh * g.ow
    t = C.storage_type(dtype)
    vector = 16 // dtype.itemsize
    k_real = g.kh * g.kw * cg
    vectorized = g.layout == "NHWC" and cg % vector == 0
    slots = g.kh * g.kw + (kgp > k_real)
    per_row = group * kgp // vector if vectorized else group * slots
    threads = m * per_row
    index = "int" if upper(threads) < 2**30 else "long long"  # i + grid stride stays below 2**31
    if vectorized:
        position = render(IM2COL_POSITION, tap="const int tap = col / CG, c = g * CG + col % CG;")
        body = render(_VECTOR, position=position, x_index=g.x_index())
    else:
        body = render(_TAP, position=render(IM2COL_POSITION, tap="const int tap = s;"), t=t, x_index=g.x_index())
    count = f"({index}){m} * PER_ROW"
    static_threads = "" if is_dynamic(m) else f"constexpr I THREADS = {count};\n"
    local = g.dynamic_constants() + (f"  const I THREADS = {count};\n" if is_dynamic(m) else "")
    source = render(_IM2COL, constants=g.constants(), group=group, cg=cg, k_real=k_real, k=kgp, vector=vector,
                    slots=slots, per_row=per_row, index=index, threads=static_threads, locals=local,
                    kernel=KERNEL_NAME, t=t, body=body)
    args = (KernelArg("X", BufferRole.IN, 0, dtype, g.x_shape),
            KernelArg("workspace", BufferRole.OUT, 0, dtype, (m, group * kgp)))
    return KernelSource.named("rtx_gim2col_", source, LaunchPolicy(threads), args)


_IM2COL = r"""${constants}constexpr int G = ${group}, CG = ${cg}, KGC = ${k_real}, KGP = ${k}, VEC = ${vector};
constexpr int SLOTS = ${slots}, PER_ROW = ${per_row};
typedef ${index} I;
${threads}
extern "C" __global__ void __launch_bounds__(256) ${kernel}(const ${t}* __restrict__ X, ${t}* __restrict__ workspace) {
${locals}  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < THREADS; i += (I)gridDim.x * blockDim.x) {
${body}
  }
}
"""

# One 16-byte vector (VEC channels of one tap of group g) a thread; KGP == KGC here.
_VECTOR = r"""    const I row = i / PER_ROW;
    const int v = (int)(i - row * PER_ROW);
    const int g = v / (KGP / VEC), col = (v - g * (KGP / VEC)) * VEC;
    uint4 value = make_uint4(0u, 0u, 0u, 0u);
    {
${position}
      if (inside) value = *reinterpret_cast<const uint4*>(X + ${x_index});
    }
    reinterpret_cast<uint4*>(workspace)[i] = value;"""

# One tap of group g (its CG channels) a thread; slot KH*KW of a group writes its zero columns.
_TAP = r"""    const I row = i / PER_ROW;
    const int slot = (int)(i - row * PER_ROW);
    const int g = slot / SLOTS, s = slot - g * SLOTS;
    ${t}* out = workspace + (long long)row * (G * KGP) + g * KGP + s * CG;
    if (s == KH * KW) {  // the group's padding columns past KH*KW*CG
      for (int j = 0; j < KGP - KGC; ++j) out[j] = 0;
      continue;
    }
${position}
    for (int j = 0; j < CG; ++j) {
      const int c = g * CG + j;
      out[j] = inside ? X[${x_index}] : (${t})0;
    }"""


# ---------------------------------------------------------------- the direct kernel

def grouped_direct_kernel(g: ConvGeometry, group: int, p: GemmProblem) -> KernelSource:
    """One thread per output element of Y [N, OH, OW, OC]: the KH x KW taps of its group's CG
    channels summed in fp32, then ``p``'s epilogue (its bias per output channel). Reads the
    weights packed k-major, [KH*KW*CG, OC]."""
    dtype = p.dtype
    t = C.storage_type(dtype)
    cg, ocg = g.c // group, g.oc // group
    params = [f"const {t}* __restrict__ X", f"const {t}* __restrict__ Wt"]
    args = [KernelArg("X", BufferRole.IN, 0, dtype, g.x_shape),
            KernelArg("W", BufferRole.IN, 1, dtype, (g.kh * g.kw * cg, g.oc))]
    if p.bias:
        params.append(f"const {t}* __restrict__ bias")
        args.append(KernelArg("bias", BufferRole.IN, 2, dtype, (g.oc,)))
    if p.has_z:
        params.append(f"const {t}* Z")  # may alias Y: each element is read before it is written
        args.append(KernelArg("Z", BufferRole.IN, 3, dtype, g.out_shape))
    params.append(f"{t}* Y")
    args.append(KernelArg("Y", BufferRole.OUT, 0, dtype, g.out_shape))
    total = g.n * g.oh * g.ow * g.oc
    total_decl = "" if is_dynamic(total) else f"constexpr long long TOTAL = {total}LL;\n"
    local = g.dynamic_constants() + (f"  const long long TOTAL = (long long){total};\n" if is_dynamic(total) else "")
    source = render(_DIRECT, prelude=C.PRELUDE, constants=g.constants(), cg=cg, ocg=ocg, total=total_decl,
                    locals=local, activations=activation_functions(p.activation, p.params, one_output_per_thread=True),
                    kernel=KERNEL_NAME, params=", ".join(params), load_x=C.load(f"X[{g.x_index()}]", dtype),
                    load_w=C.load("wk[j * OC]", dtype), t=t,
                    epilogue=" ".join(epilogue_statements(p, "Z[i]", bias="bias[oc]")), store=C.store("x", dtype))
    return KernelSource.named("rtx_gconv_", source, LaunchPolicy(total), tuple(args))


_DIRECT = r"""${prelude}${constants}constexpr int CG = ${cg}, OCG = ${ocg};
${total}
${activations}
extern "C" __global__ void __launch_bounds__(256) ${kernel}(${params}) {
${locals}  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < TOTAL;
       i += (long long)gridDim.x * blockDim.x) {
    const int oc = (int)(i % OC);
    const long long p = i / OC;
    const int ow = (int)(p % OW);
    const long long rest = p / OW;
    const int oh = (int)(rest % OH), n = (int)(rest / OH);
    const int c0 = oc / OCG * CG;  // the group's first input channel
    float acc = 0.0f;
#pragma unroll
    for (int kh = 0; kh < KH; ++kh) {
      const int ih = oh * SH - PH + kh * DH;
      if (ih < 0 || ih >= H) continue;
#pragma unroll
      for (int kw = 0; kw < KW; ++kw) {
        const int iw = ow * SW - PW + kw * DW;
        if (iw < 0 || iw >= W) continue;
        const ${t}* wk = Wt + (kh * KW + kw) * CG * OC + oc;
#pragma unroll 4
        for (int j = 0; j < CG; ++j) {
          const int c = c0 + j;
          acc += ${load_x} * ${load_w};
        }
      }
    }
    float x = acc;
    ${epilogue}
    Y[i] = ${store};
  }
}
"""


# ---------------------------------------------------------------- after cuBLAS

def scatter_epilogue_kernel(plan: ConvPlan) -> ConvStep:
    """For the grouped ``plan``'s GEMM computed by cuBLAS into the scratch ``product``
    ``[G, M, OCG]`` (batches dense, alpha applied): Y [M, OC] = the epilogue (bias, activation,
    residual Z) of the product, computed in fp32, rounded once to Y's type. One thread per
    element of Y (writes coalesce). Its buffers: product, [bias], [Z], Y."""
    p = plan.gemm
    group, m, ocg = p.batch, p.m, p.n
    oc = group * ocg
    dtype = p.out_dtype
    t = C.storage_type(dtype)
    flat = GemmProblem(m, oc, p.k, dtype=p.dtype, out_dtype=dtype, alpha=p.alpha, bias=p.bias,
                       activation=p.activation, activation_params=p.activation_params, residual=p.residual)
    total = m * oc
    index, suffix = index_type(total)
    params = [f"const {t}* __restrict__ P"]
    args = [KernelArg("product", BufferRole.IN, 0, dtype, (group, m, ocg))]
    if p.bias:
        params.append(f"const {t}* __restrict__ bias")
        args.append(KernelArg("bias", BufferRole.IN, 2, dtype, (oc,)))
    if p.has_z:
        params.append(f"const {t}* Z")  # may alias Y: each element is read before it is written
        args.append(KernelArg("Z", BufferRole.IN, 3, dtype, (m, oc)))
    params.append(f"{t}* Y")
    args.append(KernelArg("Y", BufferRole.OUT, 0, dtype, (m, oc)))
    head = [f"// rtxrt grouped conv epilogue after cuBLAS: {group} groups of [{m}, {ocg}] -> [{m}, {oc}] "
            f"{dtype.short} bias={int(p.bias)} {p.activation} residual={p.residual}",
            C.PRELUDE.strip(), activation_functions(p.activation, p.params, one_output_per_thread=True)]
    body = [f"const {index} row = i / {oc}{suffix}, col = i - row * {oc}{suffix};",
            f"const {index} g = col / {ocg}{suffix}, o = col - g * {ocg}{suffix};",
            f"float x = {C.load(f'P[((long long)g * {c_int(m)} + row) * {ocg} + o]', dtype)};",
            *epilogue_statements(flat, "Z[i]", bias="bias[col]", alpha=False),
            f"Y[i] = {C.store('x', dtype)};"]
    source = loop_kernel(head, params, grid_stride_loop(index, suffix, total), body)
    kernel = KernelSource.named("rtx_gconv_epilogue_", source, LaunchPolicy(total), tuple(args))
    return launch_step(kernel)


__all__ = ["GROUPED_DIRECT", "GroupedDirectTactic", "GroupedTactic", "gemm_tactic", "grouped_conv_plan",
           "grouped_direct_kernel", "grouped_im2col_kernel", "grouped_tactics", "prefers_direct",
           "scatter_epilogue_kernel"]
