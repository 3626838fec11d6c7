"""ONNX Attention: one fused (flash-style) kernel per node, whose tactics are tuned; before it
the KV cache copies (present = concat(past, new)), after it the qk_matmul_output kernel, each
only where the node has them."""
from __future__ import annotations

from ....ir.graph import TensorType
from .attention_source import (
    PRESENT,
    AttentionProblem,
    AttentionTactic,
    attention_kernel,
    attention_problem,
    cache_kernel,
    candidate_tactics,
    default_tactic,
    scores_kernel,
)
from ..codegen.kernel_source import KernelSource
from ..plan.forms import TensorForm
from ..plan.program import NodeProgram, Ref
from .context import LowerContext, kernel_args, launch_of
from .lowering import LOWERINGS


def lower_attention(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    types = [None if f is None else TensorType(f.dtype, f.shape) for f in ctx.inputs]
    problem = attention_problem(ctx.node, types, [None if f is None else f.dtype for f in ctx.inputs])
    written = [i < len(ctx.outputs) and ctx.outputs[i] is not None for i in range(4)]
    out = [TensorForm(problem.dtype, f.shape) if f is not None else None for f in ctx.outputs]
    # with a cache the attention reads present: a node without that output keeps it in scratch
    scratch = {PRESENT[x]: problem.batch * problem.kv_heads * problem.kv_len * size * problem.dtype.itemsize
               for x, size, i in (("K", problem.head_size, 1), ("V", problem.v_head_size, 2))
               if problem.cache and not written[i]}
    before = [cache_kernel(problem, x) for x, i in (("K", 1), ("V", 2)) if problem.cache or written[i]]
    after = [scores_kernel(problem)] if problem.qk_mode is not None else []
    first = default_tactic(problem)
    tactics = ctx.tactics([first] + [t for t in candidate_tactics(problem) if t != first], lambda t: f"attention {t}")
    return [_program(problem, t, before, after, out, scratch) for t in tactics]


def _program(p: AttentionProblem, t: AttentionTactic, before: list[KernelSource], after: list[KernelSource],
             out: list[TensorForm | None], scratch: dict[str, int]) -> NodeProgram:
    """The launches of ``before``, the attention kernel of tactic ``t`` and ``after`` (none where
    there is nothing to do); a kernel argument named for a scratch buffer points at it."""
    program = NodeProgram([], out, scratch=dict(scratch), label=f"attention {t}")
    for kernel in [*before, attention_kernel(p, t), *after]:
        launch = launch_of(kernel, kernel_args(kernel, {a.ref: Ref.scratch(a.name) for a in kernel.args
                                                        if a.name in scratch}))
        if all(launch.grid):
            program.steps.append(launch)
        program.kernels[kernel.name] = kernel.source
    return program


LOWERINGS.add("Attention", lower_attention)
