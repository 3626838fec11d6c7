"""Matrix products (rtxrt::FusedMatMul, MatMul, Gemm): generated tensor-core kernels with
the fused epilogue, a SIMT kernel for float32, and cuBLAS followed by an epilogue kernel.
Every candidate is offered to the autotuner."""
from __future__ import annotations

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen.dynamic import is_dynamic
from ..codegen.epilogue import epilogue_kernel
from .gemm_source import (
    GemmProblem,
    candidate_tactics,
    fused_matmul_problem,
    gemm_kernel,
)
from .gemm_simt_source import simt_candidate_tactics, simt_gemm_kernel
from ..plan.forms import TensorForm
from ..plan.program import Gemm, NodeProgram, Ref
from .context import LowerContext, Unsupported, kernel_args, launch_of, single_kernel
from .tile_cost import worth_timing
from .lowering import LOWERINGS, SHAPE_AGNOSTIC

TENSOR_CORE = (DType.FLOAT16, DType.BFLOAT16)


def lower_matmul(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    node = ctx.node
    a, b = ctx.input(0), ctx.input(1)
    attrs = _epilogue(ctx)
    out = TensorForm(ctx.out_dtype(0) if ctx.out_dtype(0) in (*TENSOR_CORE, DType.FLOAT32) else a.dtype,
                     ctx.outputs[0].shape)
    for i in (2, 3):
        if ctx.has(i) and ctx.input(i).dtype != out.dtype:
            raise Unsupported(f"{node.label}: bias and residual must be stored as the output ({out.dtype.short})")
    if ctx.has(2) and ctx.input(2).shape != out.shape[-1:]:
        raise Unsupported(f"{node.label}: the bias must be a vector of the output's last dim")
    if ctx.has(3) and ctx.input(3).shape != out.shape:
        raise Unsupported(f"{node.label}: the residual must have the output's shape")
    if b.dtype != a.dtype:
        raise Unsupported(f"{node.label}: A is {a.dtype.short} but B is {b.dtype.short}")
    problem = fused_matmul_problem(a.shape, b.shape, a.dtype, out_dtype=out.dtype, bias=ctx.has(2), **attrs)
    compute = cublas_compute(node, a.dtype)
    programs: list[NodeProgram] = []
    if problem.m * problem.n * problem.batch == 0:
        return [NodeProgram([], [out], label="empty")]
    offers_cublas = problem.k > 0 or is_dynamic(problem.k)  # the same candidates at every shape of a profile
    if not ctx.tune and ctx.wanted == "cublas" and offers_cublas:
        return [cublas_program(problem, compute, Ref.input(0), Ref.input(1), [out])]
    if a.dtype in TENSOR_CORE:
        tiles = candidate_tactics(problem)  # the first is the untuned plan's: always offered
        tiles = worth_timing(problem, tiles, tiles[:1]) if ctx.tune else tiles
        for t in ctx.tactics(tiles, lambda t: f"mma {t.label}"):
            try:
                programs.append(single_kernel(gemm_kernel(problem, t, ctx.arch), [out], f"mma {t.label}"))
            except CodegenError:
                continue
    if a.dtype not in TENSOR_CORE or not programs:
        simt = simt_candidate_tactics(problem)
        tactics = worth_timing(problem, simt, simt[:1]) if ctx.tune else simt if not programs else []
        wanted = [t for t in tactics if f"simt {t.label}" == ctx.wanted]
        for t in wanted if wanted and not ctx.tune else tactics:
            programs.append(single_kernel(simt_gemm_kernel(problem, t), [out], f"simt {t.label}"))
    if offers_cublas:
        programs.append(cublas_program(problem, compute, Ref.input(0), Ref.input(1), [out]))
    return programs


def cublas_compute(node, dtype: DType) -> str:
    """cuBLAS's math for ``dtype`` operands: fp32 accumulation always; TF32 tensor cores for
    float32 operands only where the node's precision annotation allows it."""
    if dtype in TENSOR_CORE:
        return "fp16acc32"
    return "tf32" if node.precision is not None and node.precision.compute == "tf32" else "fp32"


def cublas_program(problem: GemmProblem, compute: str, a: Ref, b: Ref, outputs: list[TensorForm | None],
                   prologue: NodeProgram | None = None) -> NodeProgram:
    """cuBLAS computes ``alpha * A @ B`` into D, an epilogue kernel adds the rest. A
    ``prologue`` (an im2col step) runs first. The cuBLAS call takes the sizes at the planned
    shapes (in a generic plan DimInts, which the plan builder makes plain ints: it compiles nothing)."""
    p = problem
    batched = p.batch > 1
    gemm = Gemm(a, b, Ref.output(0), p.m, p.n, p.k, p.dtype, p.out_dtype, compute,
                trans_b=p.trans_b, lda=p.lda, ldb=p.ldb, ldc=p.ldd, alpha=p.alpha, batch=p.batch,
                stride_a=p.stride_a if batched else None, stride_b=p.stride_b if batched else None,
                stride_c=p.stride_d if batched else None)
    program = NodeProgram(list(prologue.steps) if prologue else [], outputs,
                          dict(prologue.kernels) if prologue else {}, dict(prologue.scratch) if prologue else {},
                          label="cublas")
    program.steps.append(gemm)
    if p.bias or p.activation != "none" or p.residual != "none":
        kernel = epilogue_kernel(p)
        program.steps.append(launch_of(kernel, kernel_args(kernel)))
        program.kernels[kernel.name] = kernel.source
    return program


def _epilogue(ctx: LowerContext) -> dict:
    node = ctx.node
    if node.op_type == "FusedMatMul":
        return {"trans_b": bool(node.attr("trans_b", 0)), "alpha": float(node.attr("alpha", 1.0)),
                "activation": node.attr("activation", "none") or "none",
                "activation_params": tuple(node.attr("activation_params") or ()),
                "residual": node.attr("residual", "none") or "none"}
    if node.op_type == "MatMul":
        return {}
    # Gemm: C joins as the bias when it is a vector over N and beta is one
    if node.attr("transA", 0):
        raise Unsupported(f"{node.label}: Gemm with transA")
    n = ctx.outputs[0].shape[-1] if ctx.outputs[0] is not None else -1
    if ctx.has(2) and (float(node.attr("beta", 1.0)) != 1.0 or ctx.input(2).shape != (n,)):
        raise Unsupported(f"{node.label}: Gemm's C must be a vector of N={n} added with beta 1")
    return {"trans_b": bool(node.attr("transB", 0)), "alpha": float(node.attr("alpha", 1.0))}

LOWERINGS.add("FusedMatMul", lower_matmul, domain="rtxrt")
LOWERINGS.register("MatMul", "Gemm")(lower_matmul)
SHAPE_AGNOSTIC.add("FusedMatMul", lambda node: True, domain="rtxrt")
SHAPE_AGNOSTIC.register("MatMul", "Gemm")(lambda node: True)
