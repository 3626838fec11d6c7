"""The op registry: what each operator accepts, how its output types follow from its inputs,
and what passes and backends need to know of it.

An ``OpSchema`` declares an operator's arity, its type inference function and its facts
(``OpFacts``: precision class, layouts, pointwise or not). Inference gets an
``InferenceContext`` (input types, attributes, compile-time constants) and returns one
``TensorType`` per output (``None`` where it cannot tell). Schemas live in the modules of this
package, one family per module, and register themselves on import into ``SCHEMAS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import GraphError
from ...op_table import OpTable
from ..graph import Node, TensorType
from .facts import OpFacts
from .signature import Attribute, Signature, onnx_signature

VARIADIC = 1 << 30
SCHEMA_DEFAULT: Any = object()  # attr() without a default: the schema's


@dataclass
class InferenceContext:
    node: Node
    opset: int
    input_types: list[TensorType | None]
    constants: list[np.ndarray | None]

    def attr(self, key: str, default: Any = SCHEMA_DEFAULT) -> Any:
        """The node's attribute ``key``; left out, ``default`` if given, else the default its
        operator's schema declares (None where it has none)."""
        if key in self.node.attrs:
            return self.node.attrs[key]
        return attribute_default(self.node, key, self.opset) if default is SCHEMA_DEFAULT else default

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
    facts: OpFacts
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


SCHEMAS: OpTable[OpSchema] = OpTable("operator schema", __name__.rpartition(".")[0])


def register(
    op_type: str,
    infer: InferFn,
    *,
    facts: OpFacts,
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
    schema = OpSchema(op_type, infer, facts, lo_in, hi_in, lo_out, hi_out, domain, subgraph_inputs, attributes)
    _OPS_WITH.clear()  # a new schema may have the fact
    return SCHEMAS.add(op_type, schema, domain)


def get_schema(op_type: str, domain: str = "") -> OpSchema | None:
    return SCHEMAS.get(op_type, domain)


def all_schemas() -> dict[tuple[str, str], OpSchema]:
    return dict(SCHEMAS.entries())


# Fact name -> the default-domain operators that have it; passes ask per node, so each set is
# made once (after every schema module is imported: ``register`` clears it).
_OPS_WITH: dict[str, frozenset[str]] = {}


def _ops_with(fact: str) -> frozenset[str]:
    entries = SCHEMAS.entries()
    if fact not in _OPS_WITH:
        _OPS_WITH[fact] = frozenset(op for (domain, op), s in entries.items() if not domain and getattr(s.facts, fact))
    return _OPS_WITH[fact]


def elementwise_ops() -> frozenset[str]:
    """The default-domain operators computed element by element: an rtxrt::Elementwise body's ops."""
    return _ops_with("elementwise")


def view_ops() -> frozenset[str]:
    """The default-domain operators whose output is their input's bytes under another shape."""
    return _ops_with("view")


def function_body_ops() -> frozenset[str]:
    """The default-domain operators computed as their ONNX function bodies (expanded on import)."""
    return _ops_with("function_body")


def facts_of(node: Node) -> OpFacts | None:
    """The facts of ``node``'s operator; None for an operator rtxrt does not know."""
    schema = SCHEMAS.get(node.op_type, node.domain)
    return None if schema is None else schema.facts


def attribute_default(node: Node, key: str, opset: int) -> Any:
    """The value attribute ``key`` of ``node`` takes when the node leaves it out, as its
    operator's schema declares it (None: no default)."""
    schema = SCHEMAS.get(node.op_type, node.domain)
    signature = None if schema is None else schema.signature(opset)
    attribute = None if signature is None else signature.attributes.get(key)
    return None if attribute is None else attribute.default
