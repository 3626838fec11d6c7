"""The bundled default model: a small residual image classifier (ResNet-style), built with
onnx.helper from seeded random weights, so every install produces the identical model."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_MODEL_NAME = "tiny-resnet"


def default_model(image_size: int = 64, classes: int = 10, width: int = 16) -> onnx.ModelProto:
    """Input ``image`` float32[batch,3,H,W]; output ``probabilities`` float32[batch,classes]."""
    builder = _Builder(np.random.default_rng(20261127))
    x = builder.conv_bn_relu("image", 3, width, stride=2, name="stem")
    for stage, (channels, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)]):
        x = builder.residual_block(x, builder.channels[x], channels, stride, name=f"stage{stage}")
    pooled = builder.node("GlobalAveragePool", [x], name="pool")
    flat = builder.node("Flatten", [pooled], name="flatten", axis=1)
    weight = builder.weight("head.weight", (classes, builder.channels[x]))
    bias = builder.weight("head.bias", (classes,))
    logits = builder.node("Gemm", [flat, weight, bias], name="head", transB=1)
    builder.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=-1))
    graph = helper.make_graph(
        builder.nodes,
        DEFAULT_MODEL_NAME,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, image_size, image_size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rtxrt-samples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.channels: dict[str, int] = {"image": 3}

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        """He-initialized weights (or ``scale``-scaled normal values)."""
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else (2.0 / fan_in) ** 0.5
        return self.param(name, self.rng.standard_normal(shape) * scale)

    def param(self, name: str, values: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv_bn_relu(self, x: str, cin: int, cout: int, stride: int, name: str, relu: bool = True, kernel: int = 3) -> str:
        w = self.weight(f"{name}.conv.weight", (cout, cin, kernel, kernel))
        pad = kernel // 2
        y = self.node("Conv", [x, w], f"{name}.conv", strides=[stride, stride], pads=[pad] * 4)
        normal = self.rng.standard_normal
        bn = [
            self.param(f"{name}.bn.scale", 1.0 + 0.1 * normal(cout)),
            self.param(f"{name}.bn.bias", 0.1 * normal(cout)),
            self.param(f"{name}.bn.mean", 0.1 * normal(cout)),
            self.param(f"{name}.bn.var", 0.5 + np.abs(normal(cout))),
        ]
        y = self.node("BatchNormalization", [y, *bn], f"{name}.bn", epsilon=1e-5)
        if relu:
            y = self.node("Relu", [y], f"{name}.relu")
        self.channels[y] = cout
        return y

    def residual_block(self, x: str, cin: int, cout: int, stride: int, name: str) -> str:
        y = self.conv_bn_relu(x, cin, cout, stride, f"{name}.a")
        y = self.conv_bn_relu(y, cout, cout, 1, f"{name}.b", relu=False)
        shortcut = x if stride == 1 and cin == cout else self.conv_bn_relu(x, cin, cout, stride, f"{name}.down", relu=False, kernel=1)
        out = self.node("Add", [y, shortcut], f"{name}.add")
        out = self.node("Relu", [out], f"{name}.out")
        self.channels[out] = cout
        return out
