"""2-D convolutions (rtxrt::FusedConv, Conv): implicit GEMM through an im2col kernel and a
tensor-core (or, for float32, SIMT) GEMM with the fused epilogue, a direct depthwise kernel,
and the same im2col followed by cuBLAS and an epilogue kernel; grouped convolutions the same
way with a GEMM batched over the groups, or a direct kernel. Writes NHWC."""
from __future__ import annotations

import numpy as np

from .conv_grouped_source import gemm_tactic, scatter_epilogue_kernel
from .conv_source import ConvPlan, conv_gemm_tactics, conv_plan
from ..codegen.dynamic import fixed_as_ints
from ..codegen.epilogue import epilogue_kernel
from ..plan.forms import NHWC, TensorForm, numpy_dtype
from ..plan.program import Gemm, Launch, NodeProgram, Ref
from .context import LowerContext, Unsupported, WrongForm, kernel_args, launch_of
from .matmul import cublas_compute
from .lowering import LOWERINGS, SHAPE_AGNOSTIC

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def lower_conv(ctx: LowerContext) -> list[NodeProgram]:
    node = ctx.node
    x = ctx.input(0)
    w = ctx.const(1, "the weights")
    if w.ndim != 4:
        raise Unsupported(f"{node.label}: only 2-D convolutions run on the GPU")
    bias = ctx.const(2, "the bias") if ctx.has(2) else None
    out = TensorForm(x.dtype, ctx.outputs[0].shape, NHWC)
    if ctx.has(3):
        z = ctx.input(3)
        if z.dtype != x.dtype or not (z.layout == NHWC or z.same_bytes(TensorForm(z.dtype, z.shape, NHWC))):
            raise WrongForm(f"{node.label}: the residual must be stored like the output ({out.describe()})",
                            {3: TensorForm(x.dtype, z.shape, NHWC)})
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS or node.op_type == "FusedConv"}
    layout = "NHWC" if x.layout == NHWC else "NCHW"
    x_shape, w_shape = x.shape, (ctx.outputs[0].shape[1], *w.shape[1:])  # (a pointwise conv's sizes are DimInts)
    if layout != "NHWC":  # only the direct GEMM takes its sizes as arguments; an im2col keeps them in its source
        x_shape, w_shape = fixed_as_ints(x_shape), fixed_as_ints(w_shape)
    base = conv_plan(x_shape, w_shape, attrs, x.dtype, layout, bias=bias is not None)
    dtype = numpy_dtype(x.dtype)

    def consts(plan: ConvPlan) -> dict[str, np.ndarray]:
        """W as ``plan`` packs it (every plan of a group-1 conv packs it alike), and the bias."""
        key = f"W {plan.k_padded} {dtype}" if plan.weight_layout == "OHWI" else f"W {plan.weight_layout} {dtype}"
        packed = {"W": ctx.model_constant(key, lambda: plan.pack_weights(w).astype(dtype))}
        if bias is not None:
            packed["bias"] = ctx.model_constant(f"bias {dtype}", lambda: np.ascontiguousarray(bias.astype(dtype)))
        return packed

    def cublas_base() -> ConvPlan:  # the plan whose im2col (if any) cuBLAS's GEMM follows
        if base.tactic != "grouped_direct":
            return base
        return conv_plan(x_shape, w_shape, attrs, x.dtype, layout, bias=bias is not None, tactic=gemm_tactic(base))

    if not ctx.tune and ctx.wanted and ctx.wanted != _label(base):  # the tactic tuned at another shape
        if base.gemm is not None and ctx.wanted.endswith(" cublas"):
            plan = cublas_base()
            if ctx.wanted == f"{plan.tactic} cublas":
                return [_cublas_program(plan, out, consts(plan), node)]
        for t in conv_gemm_tactics(base, pruned=False):
            if not ctx.wanted.endswith(f" {t.label}"):  # a plan's label ends with its GEMM tactic's
                continue
            plan = conv_plan(x_shape, w_shape, attrs, x.dtype, layout, bias=bias is not None, tactic=t)
            if _label(plan) == ctx.wanted:
                return [_program(plan, out, consts(plan))]
    tactics = conv_gemm_tactics(base) if ctx.tune else ()
    plans = [base] + [p for p in (conv_plan(x_shape, w_shape, attrs, x.dtype, layout, bias=bias is not None, tactic=t)
                                  for t in tactics) if p.steps != base.steps]
    programs = [_program(p, out, consts(p)) for p in plans]
    if base.gemm is not None:
        plan = cublas_base()
        programs.append(_cublas_program(plan, out, consts(plan), node))
    return programs


_REFS = {"X": Ref.input(0), "W": Ref.const("W"), "bias": Ref.const("bias"), "Z": Ref.input(3),
         "Y": Ref.output(0), "workspace": Ref.scratch("workspace"), "product": Ref.scratch("product")}


def _program(plan: ConvPlan, out: TensorForm, consts: dict) -> NodeProgram:
    steps = [_launch(s) for s in plan.steps if all(s.grid)]
    return NodeProgram(steps, [out], {s.kernel.name: s.kernel.source for s in plan.steps},
                       _scratch(plan), dict(consts), label=_label(plan))


def _cublas_program(plan: ConvPlan, out: TensorForm, consts: dict, node) -> NodeProgram:
    """im2col (when the plan has it), cuBLAS ``Y = patches @ Wᵀ``, then the epilogue."""
    if plan.grouped:
        return _grouped_cublas_program(plan, out, consts, node)
    p = plan.gemm
    steps = [_launch(s) for s in plan.steps[:-1]]
    a = Ref.scratch("workspace") if "workspace" in plan.buffers else Ref.input(0)
    steps.append(Gemm(a, Ref.const("W"), Ref.output(0), p.m, p.n, p.k, p.dtype, p.out_dtype,
                      cublas_compute(node, p.dtype), trans_b=True, alpha=p.alpha))
    kernels = {s.kernel.name: s.kernel.source for s in plan.steps[:-1]}
    if p.bias or p.activation != "none" or p.residual != "none":
        kernel = epilogue_kernel(p)
        steps.append(launch_of(kernel, kernel_args(kernel, {Ref.input(2): Ref.const("bias")})))  # bias is packed
        kernels[kernel.name] = kernel.source
    return NodeProgram([s for s in steps if not isinstance(s, Launch) or all(s.grid)], [out], kernels,
                       _scratch(plan), dict(consts), label=f"{plan.tactic} cublas")


def _grouped_cublas_program(plan: ConvPlan, out: TensorForm, consts: dict, node) -> NodeProgram:
    """im2col (when the plan has it), one cuBLAS GEMM batched over the groups into the scratch
    ``product`` [G, M, OC/G] (cuBLAS batches are dense), then the epilogue moving it into Y."""
    p = plan.gemm
    steps = [_launch(s) for s in plan.steps[:-1]]
    a = Ref.scratch("workspace") if "workspace" in plan.buffers else Ref.input(0)
    steps.append(Gemm(a, Ref.const("W"), Ref.scratch("product"), p.m, p.n, p.k, p.dtype, p.out_dtype,
                      cublas_compute(node, p.dtype), trans_b=True, lda=p.lda, ldb=p.ldb, alpha=p.alpha,
                      batch=p.batch, stride_a=p.stride_a, stride_b=p.stride_b))
    epilogue = scatter_epilogue_kernel(plan)
    steps.append(_launch(epilogue))
    kernels = {s.kernel.name: s.kernel.source for s in (*plan.steps[:-1], epilogue)}
    scratch = {**_scratch(plan), "product": p.batch * p.m * p.n * p.out_dtype.itemsize}
    return NodeProgram([s for s in steps if not isinstance(s, Launch) or all(s.grid)], [out], kernels,
                       scratch, dict(consts), label=f"{plan.tactic} cublas")


def _launch(step) -> Launch:
    return Launch(step.kernel.name, tuple(step.grid), tuple(step.block),
                  tuple(_REFS[b] for b in step.buffers), step.kernel.dims)


def _scratch(plan: ConvPlan) -> dict[str, int]:
    return {"workspace": plan.workspace_bytes} if plan.workspace_bytes else {}


def _label(plan: ConvPlan) -> str:
    return f"{plan.tactic} {_tactic_label(plan)}"


def _tactic_label(plan: ConvPlan) -> str:
    kernel = plan.steps[-1].kernel
    tactic = getattr(kernel, "tactic", None)
    return getattr(tactic, "label", "") if tactic is not None else "direct"


def _pointwise(node) -> bool:
    """A 1x1 convolution of stride 1 without padding or groups: a GEMM over the pixels, whose
    kernels take their sizes as arguments (ops/lowering.py: SHAPE_AGNOSTIC)."""
    attrs = node.attrs
    return (tuple(attrs.get("kernel_shape") or ()) == (1, 1) and all(s == 1 for s in attrs.get("strides") or ())
            and int(attrs.get("group", 1) or 1) == 1 and not any(attrs.get("pads") or ())
            and (attrs.get("auto_pad") or "NOTSET") in ("NOTSET", "VALID"))


LOWERINGS.add("FusedConv", lower_conv, domain="rtxrt")
SHAPE_AGNOSTIC.add("FusedConv", _pointwise, domain="rtxrt")
LOWERINGS.add("Conv", lower_conv)
SHAPE_AGNOSTIC.add("Conv", _pointwise)
