"""Operator signatures: the inputs an operator cannot do without and the kinds of attribute
values it takes. ONNX's operator schemas give them for the standard operators (at the model's
opset); rtxrt's own operators give their attributes where they register.

A model from an untrusted file may leave any input out and carry any attribute value; checking
a node against its signature before type inference or a kernel reads it lets a wrong one fail
with a message naming it.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import GraphError
from ..graph import Graph, Node, TensorType

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Attribute:
    kind: str  # "int", "float", "string", "tensor", "graph", "type" or their plurals, as in the .rtxir format
    required: bool = False
    default: Any = None  # the value a node that leaves the attribute out has (None: no default)


@dataclass(frozen=True)
class Signature:
    attributes: Mapping[str, Attribute]
    required_inputs: tuple[tuple[int, str], ...] = ()  # (position, name) of each input that must be given

    def check(self, node: Node) -> None:
        """Raise GraphError for a required input or attribute that is missing, or an attribute
        value of the wrong kind. Attributes the signature does not know are left alone: kernels
        ignore them."""
        for i, name in self.required_inputs:
            if i >= len(node.inputs) or not node.inputs[i]:
                raise GraphError(f"{node.label}: input {i} ({name}) is required")
        for name, attribute in self.attributes.items():
            if attribute.required and name not in node.attrs:
                raise GraphError(f"{node.label}: attribute {name!r} is required")
        for name, value in node.attrs.items():
            attribute = self.attributes.get(name)
            if attribute is not None and not _is_kind(value, attribute.kind):
                raise GraphError(f"{node.label}: attribute {name!r} must be {_describe_kind(attribute.kind)}, "
                                 f"got {_describe_value(value)}")


_ONNX_KINDS = {  # by the name of onnx.defs.OpSchema.AttrType
    "INT": "int", "FLOAT": "float", "STRING": "string", "TENSOR": "tensor", "SPARSE_TENSOR": "tensor",
    "GRAPH": "graph", "TYPE_PROTO": "type", "INTS": "ints", "FLOATS": "floats", "STRINGS": "strings",
    "TENSORS": "tensors", "SPARSE_TENSORS": "tensors", "GRAPHS": "graphs", "TYPE_PROTOS": "types",
}


class LazyAttributes(Mapping[str, Attribute]):
    """Attributes made when first read: ``import rtxrt`` must not import onnx, whose schemas
    give some of them."""

    def __init__(self, make: Callable[[], Mapping[str, Attribute]]):
        self._make = make

    @functools.cached_property
    def _attributes(self) -> Mapping[str, Attribute]:
        return self._make()

    def __getitem__(self, name: str) -> Attribute:
        return self._attributes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)


@functools.cache
def newest_opset() -> int:
    """The newest version of the default domain, as the installed onnx knows it."""
    import onnx

    return onnx.defs.onnx_opset_version()


@functools.cache
def onnx_signature(op_type: str, opset: int, domain: str = "") -> Signature | None:
    """The signature of ONNX's schema of an operator at ``opset``, or of its newest version for
    an operator newer than that (AOT passes write ONNX's Attention into older models)."""
    import onnx  # here, not at import: importing onnx is a third of ``import rtxrt``'s time

    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for version in (opset, newest_opset()):
        try:
            schema = onnx.defs.get_schema(op_type, version, domain)
        except onnx.defs.SchemaError:
            continue
        return Signature({name: Attribute(_ONNX_KINDS[a.type.name], a.required, _onnx_default(a))
                          for name, a in schema.attributes.items()},
                         tuple((i, p.name) for i, p in enumerate(schema.inputs) if p.option == single))
    return None


def _onnx_default(attribute: onnx.defs.OpSchema.Attribute) -> Any:
    """The default ONNX's schema gives an attribute, as the IR holds attribute values."""
    import onnx

    proto = attribute.default_value
    if proto.type == onnx.AttributeProto.UNDEFINED:
        return None
    value = onnx.helper.get_attribute_value(proto)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


_IS_ITEM = {
    "int": _is_int, "float": _is_float, "string": lambda v: isinstance(v, str),
    "tensor": lambda v: isinstance(v, np.ndarray), "graph": lambda v: isinstance(v, Graph),
    "type": lambda v: isinstance(v, TensorType),
}
_NAMES = {"int": "an int", "float": "a float", "string": "a string", "tensor": "a tensor", "graph": "a graph",
          "type": "a type"}


def _is_kind(value: Any, kind: str) -> bool:
    if kind in _IS_ITEM:
        return _IS_ITEM[kind](value)
    return isinstance(value, list) and all(_IS_ITEM[kind[:-1]](v) for v in value)


def _describe_kind(kind: str) -> str:
    return _NAMES[kind] if kind in _NAMES else f"a list of {kind}"


def _describe_value(value: Any) -> str:
    if isinstance(value, list):
        kinds = sorted({_describe_value(v) for v in value})
        return f"a list holding {' and '.join(kinds)}" if kinds else "an empty list"
    for kind, is_item in _IS_ITEM.items():
        if is_item(value) and not (kind == "float" and _is_int(value)):
            return _NAMES[kind]
    return "nothing" if value is None else type(value).__name__
