"""IR → ONNX ModelProto, so that ONNX tools (onnxruntime, netron) can run or show an IR model."""
from __future__ import annotations

import onnx
from onnx import helper

from .graph import Graph, Model
from .onnx_codec import attr_to_proto, numpy_to_tensor, type_to_value_info


def model_to_onnx(model: Model) -> onnx.ModelProto:
    opsets = [helper.make_opsetid(domain, version) for domain, version in sorted(model.opsets.items())]
    proto = helper.make_model(graph_to_onnx(model.graph), opset_imports=opsets, producer_name="rtxrt")
    proto.ir_version = min(proto.ir_version, 10)  # readable by onnxruntime releases of 2025-26
    for key, value in sorted(model.metadata.items()):
        proto.metadata_props.add(key=key, value=value)
    return proto


def graph_to_onnx(graph: Graph) -> onnx.GraphProto:
    nodes = []
    for node in graph.nodes:
        proto = helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name, domain=node.domain)
        proto.attribute.extend(attr_to_proto(k, v, graph_to_onnx) for k, v in sorted(node.attrs.items()))
        nodes.append(proto)
    io = set(graph.inputs) | set(graph.outputs)
    return helper.make_graph(
        nodes,
        graph.name,
        [type_to_value_info(n, graph.types.get(n)) for n in graph.inputs],
        [type_to_value_info(n, graph.types.get(n)) for n in graph.outputs],
        initializer=[numpy_to_tensor(a, n) for n, a in graph.initializers.items()],
        value_info=[type_to_value_info(n, t) for n, t in graph.types.items() if n not in io and n not in graph.initializers],
    )
