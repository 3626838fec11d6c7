"""The precision policy, as data: what each ``--precision`` mode makes of each precision class
(``Precision``, declared with each operator's schema in rtxrt.ir.ops, which documents the
classes). rtxrt.aot.passes.precision applies it.

Quantization later: an int8 or fp8 mode is one more ``Mode`` whose ``storage`` is the
quantized type; the values it narrows get ``Storage.scale``/``zero_point`` naming calibration
tensors, and GEMM nodes compute in it while the other classes compute as ``plain`` says. The
classes do not change.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.dtypes import DType
from ..ir.graph import Node
from ..ir.ops import Precision, all_schemas, facts_of
from ..op_table import op_key


@dataclass(frozen=True)
class Mode:
    """What one ``--precision`` value means."""

    # The type float32 activations and weights are stored in on the device (None: float32).
    storage: DType | None
    # Compute type of GEMM-class nodes and of PLAIN-class nodes.
    gemm: str
    plain: str


MODES: dict[str, Mode] = {
    "fp32": Mode(None, "fp32", "fp32"),
    "tf32": Mode(None, "tf32", "fp32"),
    "fp16": Mode(DType.FLOAT16, "fp16", "fp16"),
    "bf16": Mode(DType.BFLOAT16, "bf16", "bf16"),
    # The fastest each op allows. On tensor-core GPUs that is fp16 for GEMM and elementwise
    # nodes (bf16 is no faster and keeps fewer mantissa bits) and fp32 for the sensitive
    # classes, which is fp16's table; int8/fp8 will join here where calibration scales exist.
    "best": Mode(DType.FLOAT16, "fp16", "fp16"),
}

def op_class(node: Node) -> Precision:
    """The node's class as its schema declares it; an op rtxrt does not know is OPAQUE (left in
    fp32). A fused elementwise chain (rtxrt::Elementwise) is as sensitive as the most
    sensitive op of its body: a chain holding an Exp is WIDE, as the Exp alone would be."""
    if node.domain == "rtxrt" and node.op_type == "Elementwise":
        return max((op_class(n) for n in node.attrs["body"].nodes), key=_STRICTNESS.index, default=Precision.PLAIN)
    facts = facts_of(node)
    return Precision.OPAQUE if facts is None else facts.precision


# The more sensitive of two classes a fused chain's ops fall in wins.
_STRICTNESS = (Precision.NONE, Precision.PLAIN, Precision.STATS, Precision.WIDE, Precision.OPAQUE)


def exact_inputs(node: Node) -> tuple[int, ...]:
    """Positions of the node's inputs that are parameters (sizes, scales, coordinates): kept float32."""
    facts = facts_of(node)
    return () if facts is None else facts.exact_inputs


def known_ops() -> frozenset[str]:
    """Every op name ``--keep-fp32`` may give, in the model or not: fusion makes ops the
    imported model may lack (a LayerNormalization from its pieces, rtxrt::FusedConv from a Conv)."""
    return frozenset(name for (domain, op) in all_schemas() for name in (op, op_key(op, domain)))


def answers_to(node: Node) -> set[str]:
    """The names ``--keep-fp32`` may pin ``node`` by: its name, its op, and the ops a fused
    node was made from (``--keep-fp32 Conv`` still pins a Conv that fusion made rtxrt::FusedConv)."""
    facts = facts_of(node)
    fused_from = () if facts is None else facts.fused_from
    return {node.name, node.op_type, op_key(node.op_type, node.domain), *fused_from} - {""}
