"""Type inference for standard ONNX operators without a hand-written rule: run ONNX's own
shape inference on a one-node model built from the node and its input types."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..graph import Graph, TensorType
from .registry import InferenceContext

if TYPE_CHECKING:
    import onnx


def onnx_inference(ctx: InferenceContext) -> list[TensorType | None]:
    import onnx  # here, not at import: the registry's modules load with ``import rtxrt``
    from onnx import helper

    from ..onnx_codec import attr_to_proto, numpy_to_tensor, type_from_proto, type_to_value_info

    node = ctx.node
    inputs, initializers = [], []
    for i, name in enumerate(node.inputs):
        if not name:
            continue
        value = ctx.constant(i)
        if value is not None and value.size <= 4096:
            initializers.append(numpy_to_tensor(value, name))
        inputs.append(type_to_value_info(name, ctx.input_types[i]))
    attrs = [attr_to_proto(k, v, _no_graphs) for k, v in sorted(node.attrs.items()) if not isinstance(v, Graph)]
    proto = helper.make_node(node.op_type, list(node.inputs), list(node.outputs), domain=node.domain)
    proto.attribute.extend(attrs)
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.outputs if o]
    graph = helper.make_graph([proto], "infer", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    model.ir_version = 10
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError, ValidationError or RuntimeError
        raise ctx.fail(f"shape inference failed: {str(exc).strip().splitlines()[-1]}") from None
    known = {vi.name: type_from_proto(vi.type) for vi in inferred.graph.output}
    known.update({vi.name: type_from_proto(vi.type) for vi in inferred.graph.value_info})
    return [known.get(o) if o else None for o in node.outputs]


def _no_graphs(graph: Graph) -> onnx.GraphProto:
    raise ValueError("subgraph attributes are not passed to the inference fallback")
