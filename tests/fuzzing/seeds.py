"""Small valid ONNX models that the fuzzers mutate; together they reach the main op families
and every structure of a file: fused convolution and matrix product, a fused elementwise chain,
If and Loop subgraphs, and a symbolic batch dim with shape arithmetic."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "seed",
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _weights(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


def conv_matmul() -> onnx.ModelProto:
    """Conv + bias + Relu, MaxPool, Reshape by a shape tensor, MatMul + bias."""
    node = helper.make_node
    return _model(
        [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         node("Relu", ["c"], ["r"], name="relu"),
         node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
         node("Reshape", ["p", "flat"], ["f"], name="reshape"),
         node("MatMul", ["f", "m"], ["mm"], name="matmul"),
         node("Add", ["mm", "bias"], ["y"], name="add")],
        [("x", FLOAT, [1, 3, 6, 6])], [("y", FLOAT, [1, 5])],
        {"w": _weights(4, 3, 3, 3), "b": _weights(4), "flat": np.array([1, -1], np.int64),
         "m": _weights(36, 5), "bias": _weights(5)},
    )


def elementwise_chain() -> onnx.ModelProto:
    """A chain of elementwise ops that AOT fuses into one rtxrt::Elementwise, then Softmax."""
    node = helper.make_node
    return _model(
        [node("Mul", ["x", "scale"], ["s"], name="mul"),
         node("Add", ["s", "shift"], ["t"], name="add"),
         node("Sigmoid", ["t"], ["g"], name="sigmoid"),
         node("Mul", ["g", "x"], ["h"], name="gate"),
         node("Sub", ["h", "shift"], ["d"], name="sub"),
         node("Softmax", ["d"], ["y"], axis=-1, name="softmax")],
        [("x", FLOAT, ["n", 8])], [("y", FLOAT, ["n", 8])],
        {"scale": _weights(8), "shift": np.array(0.5, np.float32)},
    )


def control_flow() -> onnx.ModelProto:
    """An If on a value computed at run time, and a Loop with a carried value and a scan output."""
    node = helper.make_node
    value = helper.make_tensor_value_info
    then_branch = helper.make_graph([node("Relu", ["x"], ["then_y"], name="then_relu")], "then", [],
                                    [value("then_y", FLOAT, [2, 3])])
    else_branch = helper.make_graph([node("Neg", ["x"], ["else_y"], name="else_neg")], "else", [],
                                    [value("else_y", FLOAT, [2, 3])])
    body = helper.make_graph(
        [node("Add", ["acc", "picked"], ["acc_next"], name="body_add"),
         node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         node("Mul", ["acc_next", "two"], ["scan"], name="body_scan")],
        "body",
        [value("i", INT64, []), value("cond_in", BOOL, []), value("acc", FLOAT, [2, 3])],
        [value("cond_out", BOOL, []), value("acc_next", FLOAT, [2, 3]), value("scan", FLOAT, [2, 3])],
    )
    return _model(
        [node("ReduceSum", ["x"], ["total"], keepdims=0, name="sum"),
         node("Greater", ["total", "zero"], ["positive"], name="positive"),
         node("If", ["positive"], ["picked"], then_branch=then_branch, else_branch=else_branch, name="if"),
         node("Loop", ["trips", "keep_going", "start"], ["y", "scans"], body=body, name="loop")],
        [("x", FLOAT, [2, 3])], [("y", FLOAT, [2, 3]), ("scans", FLOAT, [3, 2, 3])],
        {"zero": np.array(0.0, np.float32), "trips": np.array(3, np.int64), "keep_going": np.array(True),
         "start": np.zeros((2, 3), np.float32), "two": np.array(2.0, np.float32)},
    )


def symbolic_batch() -> onnx.ModelProto:
    """A symbolic batch dim through ConstantOfShape, MatMul, a reshape computed from Shape,
    Transpose, Expand, Tile, Gather and Slice by constant tensors."""
    node = helper.make_node
    return _model(
        [node("Shape", ["x"], ["x_shape"], name="shape"),
         node("ConstantOfShape", ["x_shape"], ["ones"], value=helper.make_tensor("one", FLOAT, [1], [1.0]),
              name="ones"),
         node("Add", ["x", "ones"], ["x1"], name="add_one"),
         node("MatMul", ["x1", "w"], ["xw"], name="matmul"),
         node("Relu", ["xw"], ["r"], name="relu"),
         node("Gather", ["x_shape", "zero"], ["batch1"], axis=0, name="gather_batch"),
         node("Concat", ["batch1", "split_dims"], ["new_shape"], axis=0, name="concat"),
         node("Reshape", ["r", "new_shape"], ["r4"], name="reshape"),
         node("Transpose", ["r4"], ["t"], perm=[0, 2, 1], name="transpose"),
         node("Expand", ["t", "expand_to"], ["e"], name="expand"),
         node("Tile", ["e", "repeats"], ["tiled"], name="tile"),
         node("Gather", ["tiled", "pick"], ["g"], axis=2, name="gather"),
         node("Slice", ["g", "starts", "ends", "axes"], ["y"], name="slice")],
        [("x", FLOAT, ["batch", 8])], [("y", FLOAT, ["batch", 4, 2])],
        {"w": _weights(8, 8), "zero": np.array([0], np.int64), "split_dims": np.array([2, 4], np.int64),
         "expand_to": np.array([1, 4, 2], np.int64), "repeats": np.array([1, 1, 2], np.int64),
         "pick": np.array([0, 1, 3], np.int64), "starts": np.array([0], np.int64),
         "ends": np.array([2], np.int64), "axes": np.array([2], np.int64)},
    )


SEEDS = {"conv_matmul": conv_matmul, "elementwise_chain": elementwise_chain,
         "control_flow": control_flow, "symbolic_batch": symbolic_batch}
# Shape profiles kept in the built files (``rtxrt aot --profile``): min, opt and max shapes.
PROFILES = {"symbolic_batch": {"x": [(1, 8), (2, 8), (4, 8)]}}
