"""ONNX Attention: one fused (flash-style) kernel per node; its tactics are tuned."""
from __future__ import annotations

from ....ir.graph import TensorType
from .attention_source import (
    attention_kernel,
    attention_problem,
    candidate_tactics,
    default_tactic,
)
from ..plan.forms import TensorForm
from ..plan.program import NodeProgram
from .context import LowerContext, single_kernel
from .lowering import LOWERINGS


def lower_attention(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    types = [None if f is None else TensorType(f.dtype, f.shape) for f in ctx.inputs]
    problem = attention_problem(ctx.node, types, [None if f is None else f.dtype for f in ctx.inputs])
    out = [TensorForm(problem.dtype, ctx.outputs[0].shape)]
    first = default_tactic(problem)
    tactics = ctx.tactics([first] + [t for t in candidate_tactics(problem) if t != first], lambda t: f"attention {t}")
    return [single_kernel(attention_kernel(problem, t), out, f"attention {t}") for t in tactics]

LOWERINGS.add("Attention", lower_attention)
