"""What an ONNX protobuf must be before anything reads it (rtxrt, or onnx's own C++ inference).

Protobuf decodes a damaged file into fields of the wrong kind rather than failing: a name that
is not UTF-8 comes back as bytes, an element type may be any integer, a tensor may claim
negative dims (onnx's shape inference then aborts the whole process). One walk over every
message, driven by the protobuf descriptors, refuses each of these with a ModelError naming
the node, initializer or value it is in and the field's path.
"""
from __future__ import annotations

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..errors import ModelError
from ..ir.dtypes import DType

_KNOWN_TYPES = {int(t) for t in DType}
_STRING, _MESSAGE = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE


def check_proto(proto: onnx.ModelProto, label: str) -> None:
    """Raise ModelError at the first text field that is not valid UTF-8, element type rtxrt
    does not know, or tensor with a negative dim."""
    _check(proto, _Place(label, "", ""))


class _Place:
    """Where a message sits: the file's label, the protobuf path, and the nearest thing a user
    knows by name ("Conv node 'conv1'", "initializer 'w'")."""

    def __init__(self, label: str, path: str, named: str):
        self.label, self.path, self.named = label, path, named

    def child(self, field: str, index: int | None, item: object) -> _Place:
        path = (f"{self.path}.{field}" if self.path else field) + ("" if index is None else f"[{index}]")
        return _Place(self.label, path, _name_of(field, item) or self.named)

    def fail(self, problem: str) -> ModelError:
        where = f"{self.named} ({self.path})" if self.named else self.path
        return ModelError(f"{self.label}: {where} {problem}")


def _name_of(field: str, item: object) -> str:
    """How messages name ``item``, found in ``field``; "" when it has no readable name."""
    name = getattr(item, "name", None)
    if not isinstance(name, str) or not name:
        return ""
    if isinstance(item, onnx.NodeProto):
        return f"{item.op_type} node {name!r}" if isinstance(item.op_type, str) else f"node {name!r}"
    if isinstance(item, onnx.AttributeProto):
        return ""  # named with its node below, in _check
    if field == "initializer":
        return f"initializer {name!r}"
    if isinstance(item, onnx.ValueInfoProto):
        return f"value {name!r}"
    return ""


def _check(message: Message, place: _Place) -> None:
    _check_values(message, place)
    for field, value in message.ListFields():
        if field.type not in (_STRING, _MESSAGE):
            continue  # numbers and bytes (tensor data) need no walk
        repeated = not isinstance(value, (str, bytes, Message))  # a container (any protobuf version)
        for i, item in enumerate(value if repeated else [value]):
            inner = place.child(field.name, i if repeated else None, item)
            if field.type == _STRING:
                if not isinstance(item, str):
                    raise inner.fail("is not valid UTF-8 text (a damaged file?)")
                continue
            if isinstance(item, onnx.AttributeProto) and isinstance(item.name, str) and place.named:
                inner = _Place(inner.label, inner.path, f"{place.named} attribute {item.name!r}")
            _check(item, inner)


def _check_values(message: Message, place: _Place) -> None:
    """The checks on one message's own numbers."""
    if isinstance(message, onnx.TensorProto):
        if message.data_type not in _KNOWN_TYPES:
            raise place.fail(f"has element type {message.data_type}, which rtxrt does not know")
        if any(d < 0 for d in message.dims):
            raise place.fail(f"has negative dims {list(message.dims)}")
    elif isinstance(message, onnx.TypeProto.Tensor):
        if message.elem_type and message.elem_type not in _KNOWN_TYPES:  # 0: not stated
            raise place.fail(f"has element type {message.elem_type}, which rtxrt does not know")
