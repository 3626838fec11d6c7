"""Operators rtxrt computes as their ONNX function bodies (``OpFacts.function_body``: the
losses, RotaryEmbedding): when a model is imported, each such node is replaced by the body
onnx itself defines for it (context-dependent bodies built for the node's input types), so the
backends run ops they have kernels for, and the semantics are the standard's own."""
from __future__ import annotations

from collections.abc import Collection

import onnx
import onnx.inliner
from onnx import helper

from ..ir.ops import function_body_ops

_DOMAIN = "rtxrt.expanded"  # the local functions made here, inlined before the import goes on
_MAX_DEPTH = 4  # bodies holding such ops, expanded in turn


def expand_function_ops(proto: onnx.ModelProto, ops: Collection[str] | None = None) -> onnx.ModelProto:
    """``proto`` with every main-graph node of ``ops`` (default: function_body_ops()) replaced
    by its ONNX function body, and again for such nodes in those bodies (SoftmaxCrossEntropyLoss
    holds a NegativeLogLikelihoodLoss); nodes whose body cannot be built (an input of unknown
    type) stay as they are. The caller's model is not changed."""
    ops = function_body_ops() if ops is None else ops
    for _ in range(_MAX_DEPTH):
        expanded = _expand_once(proto, ops)
        if expanded is proto:
            break
        proto = expanded
    return proto


def _expand_once(proto: onnx.ModelProto, ops: Collection[str]) -> onnx.ModelProto:
    if not any(n.op_type in ops and n.domain in ("", "ai.onnx") for n in proto.graph.node):
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    types = _value_types(proto)
    expanded = False
    for index, node in enumerate(proto.graph.node):
        if node.op_type not in ops or node.domain not in ("", "ai.onnx"):
            continue
        body = _body(node, opset, types)
        if body is None:
            continue
        body.domain, body.name = _DOMAIN, f"{node.op_type}_{len(proto.functions)}_{index}"
        node.domain, node.op_type = _DOMAIN, body.name
        proto.functions.append(body)
        expanded = True
    if not expanded:
        return proto
    proto.opset_import.append(helper.make_opsetid(_DOMAIN, 1))
    inlined = onnx.inliner.inline_local_functions(proto)
    del inlined.opset_import[:]
    inlined.opset_import.extend(o for o in proto.opset_import if o.domain != _DOMAIN)
    return inlined


def _body(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto]) -> onnx.FunctionProto | None:
    """The function body of ``node`` as onnx defines it for the model's opset, where onnx's
    newest definition at or below that opset is for exactly that opset."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:  # not an op at this opset: the import names the problem
        return None
    if schema.has_context_dependent_function:
        version = _newest(schema.context_dependent_function_opset_versions, opset)
        if version is None or any(name and name not in types for name in node.input):
            return None
        given = [(types[name] if name else onnx.TypeProto()).SerializeToString() for name in node.input]
        try:
            raw = schema.get_context_dependent_function_with_opset_version(version, node.SerializeToString(), given)
        except Exception:  # onnx could not build it for these types: the node stays
            return None
        body = onnx.FunctionProto.FromString(raw) if raw else None
    else:
        version = _newest(schema.function_opset_versions, opset) if schema.has_function else None
        if version is None:
            return None
        body = onnx.FunctionProto.FromString(schema.get_function_with_opset_version(version).SerializeToString())
    # onnx's version converter does not convert bodies faithfully (reduction axes went wrong
    # in a test): a body defined for another opset than the model's leaves the node as it is.
    return body if version == opset else None


def _newest(versions, opset: int) -> int | None:
    return max((v for v in versions if v <= opset), default=None)


def _value_types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every value's type onnx's shape inference knows (graph inputs, initializers, values)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # a model onnx cannot infer: declared types only
        inferred = proto
    graph = inferred.graph
    types = {vi.name: vi.type for vi in [*graph.input, *graph.value_info, *graph.output]}
    for tensor in graph.initializer:
        types.setdefault(tensor.name, helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims)))
    return types
