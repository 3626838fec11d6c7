"""Operator signatures: the inputs an operator cannot do without and the kinds of attribute
values it takes. ONNX's operator schemas give them for the standard operators (at the model's
opset); rtxrt's own operators give their attributes where they register.

A model from an untrusted file may leave any input out and carry any attribute value; checking
a node against its signature before type inference or a kernel reads it lets a wrong one fail
with a message naming it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx

from ...errors import GraphError
from ..graph import Graph, Node, TensorType


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


_A = onnx.defs.OpSchema.AttrType
_ONNX_KINDS = {
    _A.INT: "int", _A.FLOAT: "float", _A.STRING: "string", _A.TENSOR: "tensor", _A.SPARSE_TENSOR: "tensor",
    _A.GRAPH: "graph", _A.TYPE_PROTO: "type", _A.INTS: "ints", _A.FLOATS: "floats", _A.STRINGS: "strings",
    _A.TENSORS: "tensors", _A.SPARSE_TENSORS: "tensors", _A.GRAPHS: "graphs", _A.TYPE_PROTOS: "types",
}


_SINGLE = onnx.defs.OpSchema.FormalParameterOption.Single
NEWEST_OPSET = onnx.defs.onnx_opset_version()  # of the default domain, as the installed onnx knows it


@functools.cache
def onnx_signature(op_type: str, opset: int, domain: str = "") -> Signature | None:
    """The signature of ONNX's schema of an operator at ``opset``, or of its newest version for
    an operator newer than that (AOT passes write ONNX's Attention into older models)."""
    for version in (opset, NEWEST_OPSET):
        try:
            schema = onnx.defs.get_schema(op_type, version, domain)
        except onnx.defs.SchemaError:
            continue
        return Signature({name: Attribute(_ONNX_KINDS[a.type], a.required, _onnx_default(a))
                          for name, a in schema.attributes.items()},
                         tuple((i, p.name) for i, p in enumerate(schema.inputs) if p.option == _SINGLE))
    return None


def _onnx_default(attribute: onnx.defs.OpSchema.Attribute) -> Any:
    """The default ONNX's schema gives an attribute, as the IR holds attribute values."""
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
