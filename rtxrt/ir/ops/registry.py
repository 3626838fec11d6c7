"""The op registry: what each operator accepts and how its output types follow from its inputs.

An ``OpSchema`` declares an operator's arity and its type inference function. Inference gets an
``InferenceContext`` (input types, attributes, compile-time constants) and returns one
``TensorType`` per output (``None`` where it cannot tell). Schemas live in the modules of this
package, one family per module, and register themselves on import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import GraphError
from ..graph import Node, TensorType
from .signature import Attribute, Signature, onnx_signature

VARIADIC = 1 << 30


@dataclass
class InferenceContext:
    node: Node
    opset: int
    input_types: list[TensorType | None]
    constants: list[np.ndarray | None]

    def attr(self, key: str, default: Any = None) -> Any:
        return self.node.attrs.get(key, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    def type(self, i: int) -> TensorType:
        """Type of input ``i``; raises if the input is absent or untyped."""
        t = self.input_types[i] if i < len(self.input_types) else None
        if t is None:
            raise GraphError(f"{self.node.label}: input {i} has no known type")
        return t

    def constant(self, i: int) -> np.ndarray | None:
        """Value of input ``i`` when it is known before run time (an initializer or folded)."""
        return self.constants[i] if i < len(self.constants) else None

    def fail(self, message: str) -> GraphError:
        return GraphError(f"{self.node.label}: {message}")


InferFn = Callable[[InferenceContext], list[TensorType | None]]
# For ops with subgraphs: the types of each subgraph attribute's inputs, from the node's.
SubgraphInputsFn = Callable[[InferenceContext], dict[str, list[TensorType | None]]]


@dataclass(frozen=True)
class OpSchema:
    op_type: str
    infer: InferFn
    min_inputs: int = 1
    max_inputs: int = 1
    min_outputs: int = 1
    max_outputs: int = 1
    domain: str = ""
    subgraph_inputs: SubgraphInputsFn | None = None
    # The attributes of an rtxrt operator; a standard one's come from ONNX's schema.
    attributes: Mapping[str, Attribute] | None = None

    def check_node(self, node: Node, opset: int) -> None:
        """Raise GraphError when ``node`` has too few or too many inputs or outputs, lacks an input
        or attribute its operator needs, or has an attribute value of the wrong kind."""
        self.check_arity(node)
        signature = self.signature(opset)
        if signature is not None:
            signature.check(node)

    def check_arity(self, node: Node) -> None:
        n_in = len(node.inputs)
        while n_in and not node.inputs[n_in - 1]:
            n_in -= 1  # trailing omitted optionals do not count
        if not self.min_inputs <= n_in <= self.max_inputs:
            raise GraphError(f"{node.label}: takes {_arity(self.min_inputs, self.max_inputs)} input(s), got {n_in}")
        n_out = len(node.outputs)
        if not self.min_outputs <= n_out <= self.max_outputs:
            raise GraphError(
                f"{node.label}: produces {_arity(self.min_outputs, self.max_outputs)} output(s), got {n_out}")

    def signature(self, opset: int) -> Signature | None:
        if not self.domain:
            return onnx_signature(self.op_type, opset)
        return None if self.attributes is None else Signature(self.attributes)


def _arity(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"at least {lo}" if hi >= VARIADIC else f"{lo} to {hi}"


_SCHEMAS: dict[tuple[str, str], OpSchema] = {}


def register(
    op_type: str,
    infer: InferFn,
    inputs: int | tuple[int, int] = 1,
    outputs: int | tuple[int, int] = 1,
    domain: str = "",
    subgraph_inputs: SubgraphInputsFn | None = None,
    attributes: Mapping[str, Attribute] | None = None,
) -> OpSchema:
    """Register an operator. ``inputs``/``outputs`` are a count or a (min, max) range;
    use ``VARIADIC`` as max for unbounded."""
    lo_in, hi_in = (inputs, inputs) if isinstance(inputs, int) else inputs
    lo_out, hi_out = (outputs, outputs) if isinstance(outputs, int) else outputs
    schema = OpSchema(op_type, infer, lo_in, hi_in, lo_out, hi_out, domain, subgraph_inputs, attributes)
    key = (domain, op_type)
    if key in _SCHEMAS:
        raise RuntimeError(f"operator {op_type!r} registered twice")
    _SCHEMAS[key] = schema
    return schema


def get_schema(op_type: str, domain: str = "") -> OpSchema | None:
    load_all()
    return _SCHEMAS.get((_canonical_domain(domain), op_type))


def all_schemas() -> dict[tuple[str, str], OpSchema]:
    load_all()
    return dict(_SCHEMAS)


def _canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain
