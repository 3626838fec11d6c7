"""rtxrt::FusedConv (2-D) on the GPU: the kernels to launch, in order, with their buffers.

Two kinds of plan, picked by the convolution's group:

- group 1: an im2col kernel writes the patch matrix ``[N*OH*OW, K]`` (columns in (kh, kw, c)
  order, K = KH*KW*C rounded up with zero columns to 16-byte rows, so that the GEMM may copy
  16 bytes at a time) from X, then a GEMM multiplies it by the weights packed as ``[OC, K]``
  (``pack_conv_weights``: OIHW -> OHWI, flattened and zero-padded; B with trans_b) with
  FusedConv's epilogue (bias, activation, residual Z as ``[N*OH*OW, OC]``, i.e. NHWC): the
  tensor-core GEMM of rtxrt.backends.cuda.ops.gemm_source for fp16 and bf16, the SIMT GEMM of
  rtxrt.backends.cuda.ops.gemm_simt_source for fp32 (or for any type, given a SimtTactic). A 1x1
  convolution with stride 1, no padding and NHWC input needs no im2col: X already is the
  patch matrix. The GEMM step is the plan's last, its problem ``ConvPlan.gemm``, so a runtime
  may run it as a cuBLAS call plus ``epilogue.epilogue_kernel`` instead. Or, given an
  ImplicitGemmTactic (NHWC, fp16 or bf16, C % 8 == 0): one implicit-GEMM kernel
  (rtxrt.backends.cuda.ops.conv_implicit_source) that gathers the patch rows from X as it multiplies, no
  workspace; ``ConvPlan.gemm`` is still the equivalent GEMM and W is packed the same way.
  ``conv_gemm_tactics`` offers both kinds to the autotuner; the default stays im2col.
- depthwise (group == C == OC): a direct kernel, one thread per output element, fp32
  accumulation, the same epilogue. Its weights pack the same way (``[C, KH*KW]``).
- other groups (ResNeXt, RegNet, channel multipliers): rtxrt.backends.cuda.ops.conv_grouped_source,
  a group-major im2col and one GEMM batched over the groups, or a direct kernel.

Other ranks, dynamic channel counts or storage types other than fp16/bf16/fp32 raise
CodegenError (the runtime then runs the node elsewhere).

X is stored NHWC (the AOT layout pass stores conv regions channels-last) or NCHW (the first
conv of a network); Y and Z are always NHWC. Shapes are baked into every source, and each
kernel's name is a hash of its source, as for the other generated kernels.

Rounding: the result is rounded once to the storage type, after the epilogue. (The reference
backend rounds the conv + bias to the input's type before the epilogue, so fp16 results may
differ from it by one ulp.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ....ir.dtypes import DType
from ....ir.graph import TensorType
from ....ir.ops.conv import sliding_window
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import is_dynamic, upper
from ..codegen.epilogue import activation_functions, epilogue_statements
from ..codegen.kernel_source import KERNEL_NAME, KernelArg, KernelSource, LaunchPolicy
from ..codegen.template import render
from .conv_implicit_source import (
    ConvGeometry,
    ImplicitConvKernel,
    ImplicitGemmTactic,
    implicit_conv_kernel,
    implicit_tactics,
    why_not_implicit,
    window_out,
)
from .conv_grouped_source import grouped_conv_plan
from .conv_plan_parts import (
    GEMM_BUFFERS,
    IM2COL_POSITION,
    ROW_ALIGN,
    ConvPlan,
    ConvStep,
    default_tactic,
    gemm_candidates,
    launch_step,
    pack_conv_weights,
)
from .gemm_simt_source import SimtGemmKernel, SimtTactic, simt_gemm_kernel
from .gemm_source import GemmKernel, GemmProblem, GemmTactic, gemm_kernel
from .tile_cost import worth_timing
from ..plan.program import BufferRole

ConvTactic = GemmTactic | SimtTactic | ImplicitGemmTactic
LAYOUTS = ("NHWC", "NCHW")
STORAGE_DTYPES = (DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32)



def conv_plan(x_type: TensorType | Sequence[int], w_shape: Sequence[int], attrs: Mapping[str, Any],
              storage_dtype: DType, layout: str = "NHWC", *, bias: bool = False,
              tactic: ConvTactic | None = None) -> ConvPlan:
    """The kernels computing rtxrt::FusedConv of X (logical NCHW ``x_type``, stored in
    ``layout``) and weights ``w_shape`` (OIHW) with the node's ``attrs`` (Conv attributes,
    activation, activation_params, residual), every tensor stored as ``storage_dtype``.
    ``bias``: the node has its bias input. ``tactic``: the GEMM tactic, a GemmTactic (tensor
    cores; fp16 and bf16), a SimtTactic (CUDA cores; any type) or an ImplicitGemmTactic (no
    im2col: see conv_implicit; NHWC, fp16 and bf16, C % 8 == 0) (default: a heuristic among
    the GEMM tactics, always im2col or the direct 1x1 GEMM; ``conv_gemm_tactics`` lists
    those an autotuner times); for a grouped convolution also GROUPED_DIRECT (see
    conv_grouped_source). Ignored for depthwise convolutions. CodegenError for what this
    does not cover."""
    shape = x_type.shape if isinstance(x_type, TensorType) else tuple(x_type)
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        raise CodegenError(f"FusedConv codegen needs a static 4-D (2-D conv) input, got shape {shape}")
    if len(w_shape) != 4:
        raise CodegenError(f"FusedConv codegen handles 2-D convolutions only, got weights of shape {tuple(w_shape)}")
    if layout not in LAYOUTS:
        raise CodegenError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if storage_dtype not in STORAGE_DTYPES:
        raise CodegenError(f"FusedConv codegen stores float16, bfloat16 or float32 tensors, not {storage_dtype.short}")
    n, c, h, w = (d if is_dynamic(d) else int(d) for d in shape)  # a generic plan's DimInts stay
    oc, cg, kh, kw = (d if is_dynamic(d) else int(d) for d in w_shape)  # (a pointwise conv's sizes are DimInts)
    group = int(attrs.get("group", 1) or 1)
    depthwise = group > 1 and group == c == oc and cg == 1
    if c != cg * group:
        raise CodegenError(f"X has {c} channels but W {tuple(w_shape)} with group {group} expects {cg * group}")
    if group < 1 or oc % group:
        raise CodegenError(f"group {group} does not divide the {oc} output channels")
    if group != 1 and not depthwise and is_dynamic(c):
        raise CodegenError(f"grouped convolution codegen needs a fixed channel count, got {c!r}")
    if attrs.get("kernel_shape") and tuple(int(k) for k in attrs["kernel_shape"]) != (kh, kw):
        raise CodegenError(f"kernel_shape {list(attrs['kernel_shape'])} differs from the weights' {(kh, kw)}")
    try:
        window = sliding_window(attrs, (h, w), (kh, kw))
    except ValueError as exc:
        raise CodegenError(f"FusedConv: {exc}") from None
    oh, ow = window_out((h, w), window)
    if min(oh, ow) < 1:
        raise CodegenError(f"FusedConv: the output {oh}x{ow} is empty")
    residual = attrs.get("residual", "none") or "none"
    epilogue = {"dtype": storage_dtype, "bias": bias, "activation": attrs.get("activation", "none") or "none",
                "activation_params": tuple(attrs.get("activation_params") or ()), "residual": residual}
    geo = ConvGeometry(n, c, h, w, oc, kh, kw, oh, ow, window.strides, tuple(int(p) for p in window.pads),
                       window.dilations, layout)
    m = n * oh * ow
    out = (n, oh, ow, oc)
    buffers: dict[str, tuple[tuple[int, ...], DType]] = {"X": (geo.x_shape, storage_dtype)}
    epilogue_buffers = {"bias": ((oc,), storage_dtype)} if bias else {}
    if residual != "none":
        epilogue_buffers["Z"] = (out, storage_dtype)
    epilogue_buffers["Y"] = (out, storage_dtype)

    if depthwise:
        problem = GemmProblem(1, 1, 16, **epilogue)  # validates the epilogue; its source is ours
        kernel = _depthwise_kernel(geo, problem)
        buffers["W"] = ((c, kh * kw), storage_dtype)
        buffers.update(epilogue_buffers)
        return ConvPlan("depthwise", layout, storage_dtype, (n, c, h, w), (oc, cg, kh, kw), out, kh * kw,
                        (launch_step(kernel),), buffers, None)
    if group != 1:
        return grouped_conv_plan(geo, group, storage_dtype, epilogue, epilogue_buffers, tactic)

    direct = (kh, kw) == (1, 1) and layout == "NHWC" and window.strides == (1, 1) and not any(window.pads)
    k_real = kh * kw * c
    align = ROW_ALIGN // storage_dtype.itemsize
    k = k_real if direct else -(-k_real // align) * align
    problem = GemmProblem(m, oc, k, trans_b=True, **epilogue)
    if isinstance(tactic, ImplicitGemmTactic):
        kernel = implicit_conv_kernel(geo, problem, tactic)  # k == k_real: C % 8 == 0
        buffers["W"] = ((oc, k), storage_dtype)
        buffers.update(epilogue_buffers)
        step = ConvStep(kernel, tuple(_IMPLICIT_BUFFERS[a.name] for a in kernel.args), kernel.launch.grid,
                        kernel.launch.block)
        return ConvPlan("implicit_gemm", layout, storage_dtype, (n, c, h, w), (oc, cg, kh, kw), out, k, (step,),
                        buffers, problem)
    tactic = tactic or default_tactic(problem)
    gemm = simt_gemm_kernel(problem, tactic) if isinstance(tactic, SimtTactic) else gemm_kernel(problem, tactic)
    gemm_step = ConvStep(gemm, tuple(GEMM_BUFFERS[a.name] for a in gemm.args), gemm.launch.grid, gemm.launch.block)
    buffers["W"] = ((oc, k), storage_dtype)
    if direct:
        gemm_step = ConvStep(gemm, tuple("X" if b == "workspace" else b for b in gemm_step.buffers),
                             gemm_step.grid, gemm_step.block)
        buffers.update(epilogue_buffers)
        return ConvPlan("gemm", layout, storage_dtype, (n, c, h, w), (oc, cg, kh, kw), out, k, (gemm_step,),
                        buffers, problem)
    buffers["workspace"] = ((m, k), storage_dtype)
    buffers.update(epilogue_buffers)
    steps = (launch_step(_im2col_kernel(geo, k, storage_dtype)), gemm_step)
    return ConvPlan("im2col_gemm", layout, storage_dtype, (n, c, h, w), (oc, cg, kh, kw), out, k, steps, buffers,
                    problem)


def conv_gemm_tactics(plan: ConvPlan, pruned: bool = True) -> tuple[ConvTactic, ...]:
    """The tactics worth timing for ``plan`` (none for a depthwise plan): the GEMM's, and the
    implicit GEMM's where it applies and there is an im2col to save (not for a direct 1x1),
    pruned then to the im2col plan's own tile beside the implicit ones;
    for a grouped plan its batched GEMM's and the direct kernel (``grouped_tactics``). With
    ``pruned``, tiles the cost model says cannot win are left out (tile_cost.py), never
    ``plan``'s own; a tactic tuned at another shape is looked up among them all."""
    if plan.gemm is None:
        return ()
    if plan.grouped:
        from .conv_grouped_source import grouped_tactics

        return grouped_tactics(plan, pruned)
    own = getattr(plan.steps[-1].kernel, "tactic", None)
    tiles = gemm_candidates(plan.gemm)
    if pruned:
        tiles = worth_timing(plan.gemm, tiles, keep=(own,))
    implicit = plan.tactic in ("im2col_gemm", "implicit_gemm") and not why_not_implicit(
        plan.x_layout, plan.x_shape[1], plan.storage_dtype)
    if not implicit:
        return tiles
    implicit_tiles = tuple(t for t in implicit_tactics(plan.gemm) if not pruned or t.tiles in tiles or t.tiles == own)
    if pruned:  # the implicit GEMM beat im2col + GEMM on every ResNet-50 layer (H100, 1.3-4.9x), as it
        tiles = tuple(t for t in tiles if t == own)  # saves the patch matrix's round trip: its own tile stays
    return tiles + implicit_tiles

_IMPLICIT_BUFFERS = {**GEMM_BUFFERS, "A": "X"}


def _im2col_kernel(g: ConvGeometry, k: int, dtype: DType) -> KernelSource:
    """Copies X into the patch matrix [N*OH*OW, k]: row (n, oh, ow), column (kh, kw, c);
    zeros for padding and for columns past KH*KW*C. Values are copied, never computed on:
    fp16 and bf16 (both ``unsigned short`` bits) share a kernel.

    Each thread copies a run of columns, so the index arithmetic (divisions) is paid once per
    run, not per element: with NHWC and C a multiple of a 16-byte vector, one vector per
    thread; else one filter tap (its C channels) per thread, plus one thread per row for the
    zero padding columns. Indexes are 32-bit where the thread count allows."""
    m = g.n * g.oh * g.ow
    t = C.storage_type(dtype)
    vector = 16 // dtype.itemsize
    k_real = g.kh * g.kw * g.c
    vectorized = g.layout == "NHWC" and g.c % vector == 0 and k % vector == 0
    per_row = k // vector if vectorized else g.kh * g.kw + (k > k_real)
    threads = m * per_row
    index = "int" if upper(threads) < 2**30 else "long long"  # i + grid stride stays below 2**31
    if vectorized:
        body = render(_IM2COL_VECTOR, position=render(IM2COL_POSITION, tap="const int tap = col / C, c = col % C;"),
                      x_index=g.x_index())
    else:
        body = render(_IM2COL_TAP, position=render(IM2COL_POSITION, tap="const int tap = slot;"), t=t,
                      x_index=g.x_index())
    # the thread count: a file-scope constant, or where it varies over the profile one computed
    # in the kernel (with the other shapes that vary), from the kernel's dim arguments
    count = f"({index}){m} * PER_ROW"
    static_threads = "" if is_dynamic(m) else f"constexpr I THREADS = {count};\n"
    local = g.dynamic_constants() + (f"  const I THREADS = {count};\n" if is_dynamic(m) else "")
    source = render(_IM2COL, constants=g.constants(), k_real=k_real, k=k, vector=vector, per_row=per_row,
                    index=index, threads=static_threads, locals=local, kernel=KERNEL_NAME, t=t, body=body)
    args = (KernelArg("X", BufferRole.IN, 0, dtype, g.x_shape), KernelArg("workspace", BufferRole.OUT, 0, dtype, (m, k)))
    return KernelSource.named("rtx_im2col_", source, LaunchPolicy(threads), args)


_IM2COL = r"""${constants}constexpr int KC = ${k_real}, KP = ${k}, VEC = ${vector}, PER_ROW = ${per_row};
typedef ${index} I;
${threads}
extern "C" __global__ void __launch_bounds__(256) ${kernel}(const ${t}* __restrict__ X, ${t}* __restrict__ workspace) {
${locals}  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < THREADS; i += (I)gridDim.x * blockDim.x) {
${body}
  }
}
"""

# One 16-byte vector (VEC channels of one tap) a thread.
_IM2COL_VECTOR = r"""    const I row = i / PER_ROW;
    const int col = (int)(i - row * PER_ROW) * VEC;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (KC == KP || col < KC) {
${position}
      if (inside) v = *reinterpret_cast<const uint4*>(X + ${x_index});
    }
    reinterpret_cast<uint4*>(workspace)[i] = v;"""

# One tap (its C channels) a thread; the row's last slot writes the zero padding columns.
_IM2COL_TAP = r"""    const I row = i / PER_ROW;
    const int slot = (int)(i - row * PER_ROW);
    ${t}* out = workspace + (long long)row * KP + slot * C;
    if (slot == KH * KW) {  // the padding columns past KH*KW*C
      for (int j = 0; j < KP - KC; ++j) out[j] = 0;
      continue;
    }
    const int col = slot * C;
${position}
    for (int c = 0; c < C; ++c) out[c] = inside ? X[${x_index}] : (${t})0;"""


def _depthwise_kernel(g: ConvGeometry, p: GemmProblem) -> KernelSource:
    """One thread per output element of Y [N, OH, OW, C] (adjacent threads: adjacent
    channels, so NHWC reads coalesce): the KH x KW taps summed in fp32, then the epilogue."""
    dtype = p.dtype
    t = C.storage_type(dtype)
    params = [f"const {t}* __restrict__ X", f"const {t}* __restrict__ Wt"]
    names = ["X", "W"]
    if p.bias:
        params.append(f"const {t}* __restrict__ bias")
        names.append("bias")
    if p.has_z:
        params.append(f"const {t}* Z")  # may alias Y: each element is read before it is written
        names.append("Z")
    params.append(f"{t}* Y")
    names.append("Y")
    total = g.n * g.oh * g.ow * g.c
    total_decl = "" if is_dynamic(total) else f"constexpr long long TOTAL = {total}LL;\n"
    local = g.dynamic_constants() + (f"  const long long TOTAL = (long long){total};\n" if is_dynamic(total) else "")
    source = render(_DEPTHWISE, prelude=C.PRELUDE, constants=g.constants(), total=total_decl, locals=local,
                    activations=activation_functions(p.activation, p.params, one_output_per_thread=True),
                    kernel=KERNEL_NAME, params=", ".join(params),
                    load_x=C.load(f"X[{g.x_index()}]", dtype),
                    load_w=C.load("Wt[c * (KH * KW) + kh * KW + kw]", dtype),
                    epilogue=" ".join(epilogue_statements(p, "Z[i]", bias="bias[c]")),
                    store=C.store("x", dtype))
    out = (g.n, g.oh, g.ow, g.c)
    args = [KernelArg("X", BufferRole.IN, 0, dtype, g.x_shape), KernelArg("W", BufferRole.IN, 1, dtype, (g.c, g.kh * g.kw))]
    if p.bias:
        args.append(KernelArg("bias", BufferRole.IN, 2, dtype, (g.c,)))
    if p.has_z:
        args.append(KernelArg("Z", BufferRole.IN, 3, dtype, out))
    args.append(KernelArg("Y", BufferRole.OUT, 0, dtype, out))
    assert [a.name for a in args] == names
    return KernelSource.named("rtx_dwconv_", source, LaunchPolicy(total), args)


_DEPTHWISE = r"""${prelude}${constants}${total}
${activations}
extern "C" __global__ void __launch_bounds__(256) ${kernel}(${params}) {
${locals}  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < TOTAL;
       i += (long long)gridDim.x * blockDim.x) {
    const int c = (int)(i % C);
    const long long p = i / C;
    const int ow = (int)(p % OW);
    const long long rest = p / OW;
    const int oh = (int)(rest % OH), n = (int)(rest / OH);
    float acc = 0.0f;
#pragma unroll
    for (int kh = 0; kh < KH; ++kh) {
      const int ih = oh * SH - PH + kh * DH;
      if (ih < 0 || ih >= H) continue;
#pragma unroll
      for (int kw = 0; kw < KW; ++kw) {
        const int iw = ow * SW - PW + kw * DW;
        if (iw < 0 || iw >= W) continue;
        acc += ${load_x} * ${load_w};
      }
    }
    float x = acc;
    ${epilogue}
    Y[i] = ${store};
  }
}
"""


__all__ = ["ConvPlan", "ConvStep", "ConvTactic", "GemmKernel", "ImplicitConvKernel", "ImplicitGemmTactic",
           "SimtGemmKernel", "conv_gemm_tactics", "conv_plan", "default_tactic", "pack_conv_weights"]
