"""Small builders for hand-made ONNX models used across the tests."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    """inputs/outputs: (name, elem_type, shape) triples; initializers: name → array."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def add_relu_model(opset: int = 17) -> onnx.ModelProto:
    """y = relu(x + bias), x: float32[batch, 4]."""
    return make_model(
        [helper.make_node("Add", ["x", "bias"], ["sum"], name="add"),
         helper.make_node("Relu", ["sum"], ["y"], name="relu")],
        [("x", TensorProto.FLOAT, ["batch", 4])],
        [("y", TensorProto.FLOAT, ["batch", 4])],
        {"bias": np.array([-1.0, 0.0, 1.0, 2.0], np.float32)},
        opset=opset,
    )
