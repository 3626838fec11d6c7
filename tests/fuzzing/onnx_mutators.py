"""Structure-aware mutations of ONNX models: any field of any message of the ModelProto, by
what the field means (op types and domains, value names, attribute kinds and values, dims,
element types, opset versions, initializer dims and bytes) and by protobuf structure (repeated
fields lose, repeat or reorder items; messages and subgraphs disappear), plus flips of raw
bytes of the serialized model.
"""
from __future__ import annotations

import copy
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx import helper

from tests.fuzzing import pick, short

# Besides the extremes, sizes a machine could just about allocate: those must be refused too.
LARGE = [1 << 16, 1 << 20, 1 << 24, 1 << 30]
INTS = [0, 1, -1, 2, 3, 7, 64, -64, 2**31 - 1, -(2**31), 2**40, 2**62, -(2**62), 2**63 - 1, -(2**63), *LARGE]
FLOATS = [0.0, -0.0, 0.5, -3.5, 1e38, -1e38, float("nan"), float("inf"), float("-inf")]
DIMS = [0, 1, 2, 3, 5, -1, -7, 2**31, 2**40, 2**62, *LARGE]
ELEMENT_TYPES = list(range(0, 28)) + [99, -1]
OPSET_VERSIONS = [1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 22, 23, 24, 99, 2**40]
IR_VERSIONS = [0, 1, 3, 4, 7, 8, 10, 11, 12, 99]
DOMAINS = ["", "ai.onnx", "ai.onnx.ml", "com.microsoft", "rtxrt", "no.such.domain"]
OP_TYPES = sorted({s.name for s in onnx.defs.get_all_schemas() if s.domain == ""}) + [
    "FusedConv", "FusedMatMul", "Elementwise", "NoSuchOp", ""]
TEXTS = ["", "undefined_value", "a b", "\u00e9", "x" * 1000]
BYTES = [b"", b"NOTSET", b"SAME_UPPER", b"VALID", b"relu", b"none", b"linear", b"DCR", b"\xff\xfe\x00"]
ATTRIBUTE_NAMES = ["axis", "axes", "perm", "pads", "strides", "kernel_shape", "dilations", "group", "keepdims",
                   "alpha", "beta", "transA", "transB", "mode", "to", "value", "body", "then_branch", "split",
                   "blocksize", "epsilon", "allowzero", "auto_pad", "output_shape", "dtype", "direction"]
EXTERNAL_LOCATIONS = ["", "weights.bin", "../../etc/passwd", "/dev/zero", "\x00"]


@dataclass(frozen=True)
class Field:
    """One field of one message in the tree (``index`` set for an item of a repeated field)."""

    message: Message
    descriptor: FieldDescriptor
    index: int | None = None

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def is_list(self) -> bool:
        return self.descriptor.is_repeated and self.index is None


def fields(root: Message) -> list[Field]:
    """Every set field of every message under ``root``, repeated fields as a whole and item by item."""
    found = []
    stack = [root]
    while stack:
        message = stack.pop()
        for descriptor, value in message.ListFields():
            found.append(Field(message, descriptor))
            if descriptor.is_repeated:
                found.extend(Field(message, descriptor, i) for i in range(len(value)))
            if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                stack.extend(value if descriptor.is_repeated else [value])
    return found


def value_names(model: onnx.ModelProto) -> list[str]:
    """Every value name of the model: declared, initializers, node inputs and outputs."""
    names = set()
    for f in fields(model):
        if isinstance(f.message, (onnx.ValueInfoProto, onnx.TensorProto)):
            names.add(f.message.name)
        elif isinstance(f.message, onnx.NodeProto) and f.name in ("input", "output") and f.is_list:
            names.update(getattr(f.message, f.name))
    return sorted(names)


# --- mutating one field ------------------------------------------------------------------------


def mutate_field(field: Field, model: onnx.ModelProto, rng: np.random.Generator) -> str:
    if field.is_list:
        return _mutate_list(field, rng)
    if field.descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return _drop_message(field)
    value = _new_value(field, model, rng)
    if field.index is None:
        setattr(field.message, field.name, value)
    else:
        getattr(field.message, field.name)[field.index] = value
    return f"{type(field.message).__name__}.{field.name} = {short(value)}"


def _mutate_list(field: Field, rng: np.random.Generator) -> str:
    items = getattr(field.message, field.name)
    where = f"{type(field.message).__name__}.{field.name}"
    action = pick(rng, ["drop", "duplicate", "swap", "clear"])
    if action == "clear" or not items:
        field.message.ClearField(field.name)
    elif action == "drop":
        del items[int(rng.integers(len(items)))]
    elif action == "duplicate":
        item = items[int(rng.integers(len(items)))]
        if field.descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            items.add().CopyFrom(item)
        else:
            items.append(item)
    else:
        i, j = (int(k) for k in rng.integers(len(items), size=2))
        if field.descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            a, b = copy.deepcopy(items[i]), copy.deepcopy(items[j])
            items[i].CopyFrom(b)
            items[j].CopyFrom(a)
        else:
            items[i], items[j] = items[j], items[i]
    return f"{action} {where}"


def _drop_message(field: Field) -> str:
    if field.index is not None:
        del getattr(field.message, field.name)[field.index]
    else:
        field.message.ClearField(field.name)
    return f"dropped {type(field.message).__name__}.{field.name}"


def _new_value(field: Field, model: onnx.ModelProto, rng: np.random.Generator) -> Any:
    """A value for this field that means something else: by the field's name first, else by its type."""
    d = field.descriptor
    name, owner = d.name, type(field.message).__name__
    if d.type == FieldDescriptor.TYPE_ENUM:
        return pick(rng, [v.number for v in d.enum_type.values])
    if d.type == FieldDescriptor.TYPE_BOOL:
        return not getattr(field.message, name) if field.index is None else True
    if name == "op_type":
        return pick(rng, OP_TYPES)
    if name == "domain":
        return pick(rng, DOMAINS)
    if name in ("input", "output") or (name == "name" and owner in ("ValueInfoProto", "TensorProto")):
        return pick(rng, value_names(model) + TEXTS)
    if name == "location" or (name == "value" and owner == "StringStringEntryProto"):
        return pick(rng, EXTERNAL_LOCATIONS)
    if name in ("dim_value", "dims"):
        return pick(rng, DIMS)
    if name in ("elem_type", "data_type"):
        return pick(rng, ELEMENT_TYPES)
    if name == "version":
        return pick(rng, OPSET_VERSIONS)
    if name == "ir_version":
        return pick(rng, IR_VERSIONS)
    if name == "raw_data":
        return _mutate_bytes(getattr(field.message, name), rng)
    return _by_type(d, rng)


def _by_type(d: FieldDescriptor, rng: np.random.Generator) -> Any:
    if d.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return pick(rng, FLOATS)
    if d.type == FieldDescriptor.TYPE_STRING:
        return pick(rng, TEXTS)
    if d.type == FieldDescriptor.TYPE_BYTES:
        return pick(rng, BYTES)
    if d.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return pick(rng, [v for v in INTS if -(2**31) <= v < 2**31])
    if d.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return pick(rng, INTS) % 2**64
    return pick(rng, INTS)


def _mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Tensor bytes with extreme values (NaN, infinities, huge and negative integers), a flip,
    or a wrong length."""
    data = bytearray(data)
    action = pick(rng, ["special", "special", "flip", "truncate", "extend"])
    if action == "truncate":
        return bytes(data[:int(rng.integers(len(data) + 1))])
    if action == "extend":
        return bytes(data + bytes(int(rng.integers(1, 65))))
    if not data:
        return bytes(data)
    if action == "flip":
        data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        return bytes(data)
    special = pick(rng, [struct.pack("<f", float("nan")), struct.pack("<f", float("inf")),
                         struct.pack("<q", 2**62), struct.pack("<q", -1), struct.pack("<q", 2**63 - 1),
                         struct.pack("<q", 1 << 20), struct.pack("<q", 1 << 30)])
    at = int(rng.integers(len(data))) // len(special) * len(special)
    data[at:at + len(special)] = special[:len(data) - at]
    return bytes(data)


# --- whole-model mutations -----------------------------------------------------------------------


def add_attribute(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """A node gets an attribute it does not expect, or one it does of another kind."""
    nodes = [f.message for f in fields(model) if isinstance(f.message, onnx.NodeProto)]
    if not nodes:
        return "no nodes"
    node = pick(rng, nodes)
    name = pick(rng, ATTRIBUTE_NAMES)
    value = pick(rng, [pick(rng, INTS), [int(v) for v in rng.choice(DIMS, int(rng.integers(0, 5)))],
                       pick(rng, FLOATS), pick(rng, BYTES).decode("latin-1"), np.array([1.5], np.float32)])
    kept = [a for a in node.attribute if a.name != name]
    node.ClearField("attribute")
    kind = onnx.AttributeProto.INTS if isinstance(value, list) else None  # [] says no kind of its own
    node.attribute.extend([*kept, helper.make_attribute(name, value, attr_type=kind)])
    return f"attribute {name} of {node.name or node.op_type} = {short(value)}"


def mutate_model(model: onnx.ModelProto, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    """One to three mutations of a model, serialized; or a few flipped bytes of the serialized
    seed. Returns the bytes to compile and what was done."""
    model = copy.deepcopy(model)
    if rng.random() < 0.15:
        return _flip_serialized_bytes(model.SerializeToString(), rng)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.15:
            done.append(add_attribute(model, rng))
            continue
        found = fields(model)
        done.append(mutate_field(pick(rng, found), model, rng) if found else "an empty model")
    return model.SerializeToString(), done


def _flip_serialized_bytes(data: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    data = bytearray(data)
    count = int(rng.integers(1, 9))
    for _ in range(count):
        data[rng.integers(len(data))] = int(rng.integers(256))
    if rng.random() < 0.2:
        del data[int(rng.integers(len(data))):]
        return bytes(data), [f"overwrote {count} byte(s) of the serialized model and truncated it"]
    return bytes(data), [f"overwrote {count} byte(s) of the serialized model"]
