"""Provider tests; the small hand-built ONNX models they share."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=OPSETS, ir_version=10)  # onnxruntime 1.31 reads IR <= 13


def saved(model: onnx.ModelProto, tmp_path) -> str:
    path = str(tmp_path / "model.onnx")
    onnx.save(model, path)
    return path


def tensor(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def gelu(x, y, name=""):
    """com.microsoft Gelu: onnxruntime CPU runs it, rtxrt's registry lacks it."""
    return helper.make_node("Gelu", [x], [y], domain="com.microsoft", name=name)


def weight(name, shape, seed=0):
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return onnx.numpy_helper.from_array(values, name)


def cut_chain() -> onnx.ModelProto:
    """Relu -> Mul(w) -> Gelu (unsupported) -> Tanh -> Add(the Relu's output): rtxrt / onnxruntime / rtxrt."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "w"], ["b"]),
             gelu("b", "c"), helper.make_node("Tanh", ["c"], ["d"]), helper.make_node("Add", ["d", "a"], ["y"])]
    return make_model(nodes, [tensor("x", ["N", 8])], [tensor("y", ["N", 8])], [weight("w", (8,))])


def all_supported() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Softmax", ["b"], ["y"], axis=-1)]
    return make_model(nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 6])], [weight("w", (4, 6))])


def diamond() -> onnx.ModelProto:
    """x -> Relu -> Sigmoid -> Add <- Gelu(unsupported) <- Relu: merging the four supported
    nodes into one region would make it both feed and read the Gelu."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
             gelu("a", "g"), helper.make_node("Neg", ["g"], ["n"]), helper.make_node("Add", ["b", "n"], ["y"])]
    return make_model(nodes, [tensor("x", [2, 5])], [tensor("y", [2, 5])])


def sequence_cut() -> onnx.ModelProto:
    """A region cut by sequence ops (tensors only in rtxrt)."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Abs", ["x"], ["b"]),
             helper.make_node("SequenceConstruct", ["a", "b"], ["s"]),
             helper.make_node("ConcatFromSequence", ["s"], ["c"], axis=0),
             helper.make_node("Exp", ["c"], ["y"])]
    return make_model(nodes, [tensor("x", [3, 4])], [tensor("y", [6, 4])])


def resnet_style(blocks: int = 3, channels: int = 32) -> onnx.ModelProto:
    """x[N, 3, 32, 32] -> Conv/BN/Relu stem -> ``blocks`` residual blocks (Conv, BN, Relu,
    Conv, BN, Add the block's input, Relu) -> GlobalAveragePool -> Flatten -> Gemm -> y[N, 10]."""
    rng = np.random.default_rng(3)
    nodes, inits = [], []

    def const(name, values):
        inits.append(onnx.numpy_helper.from_array(np.asarray(values, np.float32), name))
        return name

    def conv_bn(x, cin, name, relu=True):
        w = const(f"{name}_w", rng.standard_normal((channels, cin, 3, 3)) / np.sqrt(9 * cin))
        stats = [const(f"{name}_{k}", v) for k, v in (("scale", 1 + 0.1 * rng.standard_normal(channels)),
                                                      ("bias", 0.1 * rng.standard_normal(channels)),
                                                      ("mean", 0.1 * rng.standard_normal(channels)),
                                                      ("var", 1 + rng.random(channels)))]
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}_c"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("BatchNormalization", [f"{name}_c", *stats], [f"{name}_bn"]))
        if not relu:
            return f"{name}_bn"
        nodes.append(helper.make_node("Relu", [f"{name}_bn"], [f"{name}_r"]))
        return f"{name}_r"

    h = conv_bn("x", 3, "stem")
    for b in range(blocks):
        inner = conv_bn(conv_bn(h, channels, f"b{b}a"), channels, f"b{b}b", relu=False)
        nodes.append(helper.make_node("Add", [inner, h], [f"b{b}_sum"]))
        nodes.append(helper.make_node("Relu", [f"b{b}_sum"], [f"b{b}_out"]))
        h = f"b{b}_out"
    nodes += [helper.make_node("GlobalAveragePool", [h], ["pool"]), helper.make_node("Flatten", ["pool"], ["flat"]),
              helper.make_node("Gemm", ["flat", const("fc_w", rng.standard_normal((channels, 10)) / np.sqrt(channels)),
                                        const("fc_b", np.zeros(10))], ["y"])]
    return make_model(nodes, [tensor("x", ["N", 3, 32, 32])], [tensor("y", ["N", 10])], inits)
