"""Small ONNX models for the fake-device tests, built in code, and their inputs.

- ``elementwise_chain``: Sub (broadcast), Relu, Mul by a constant, Sigmoid, Add (fused by the
  AOT pipeline into one rtxrt::Elementwise kernel), a Transpose, a Tanh and a Reshape (a view,
  copied); fp16/bf16 precision adds casts.
- ``fused_matmul``: MatMul (or Gemm with transB) + bias Add + residual Add + Relu, which the
  AOT pipeline fuses into rtxrt::FusedMatMul (residual before the activation), then a Tanh:
  the product's result stays inside the model, so fp16/bf16 precision keeps it 16-bit (a
  float32 graph output would pull the whole GEMM back to float32).
- ``conv_residual``: Conv -> Conv + bias, the first conv's output added as the residual,
  Relu: the second becomes rtxrt::FusedConv with bias and residual (NHWC inside).
- ``depthwise``: Conv -> depthwise Conv (group = channels, stride 2) + Relu: the direct
  depthwise kernel.
- ``data_movement``: Resize (linear), MaxPool, Concat, Slice, Gather (a negative index), Tile,
  Expand and an Add: the data-movement, pooling and resize kernels.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.graph import Model
from tests.helpers import make_model

F = TensorProto.FLOAT


def compiled(proto: onnx.ModelProto, precision: str = "fp32") -> Model:
    """What the runtime plans: the AOT-optimized IR at ``precision``."""
    return compile_onnx(proto, AotOptions(precision=precision))


def original(proto: onnx.ModelProto) -> Model:
    """What the reference runs: the model as written, unoptimized."""
    return load_onnx(proto)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def elementwise_chain() -> onnx.ModelProto:
    nodes = [helper.make_node("Sub", ["x", "y"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Mul", ["b", "half"], ["d"]), helper.make_node("Sigmoid", ["x"], ["e"]),
             helper.make_node("Add", ["d", "e"], ["f"]), helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Tanh", ["t"], ["u"]), helper.make_node("Reshape", ["f", "shape"], ["r"])]
    return make_model(nodes, [("x", F, [2, 3, 5]), ("y", F, [3, 5])], [("u", F, [2, 5, 3]), ("r", F, [6, 5])],
                      {"half": np.array(0.5, np.float32), "shape": np.array([6, 5], np.int64)})


def elementwise_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = _rng(seed)
    return {"x": rng.uniform(-3, 3, (2, 3, 5)).astype(np.float32), "y": rng.uniform(-3, 3, (3, 5)).astype(np.float32)}


def fused_matmul(kind: str = "MatMul") -> onnx.ModelProto:
    rng = _rng(1)
    if kind == "MatMul":
        product = helper.make_node("MatMul", ["x", "w"], ["t"])
        w = rng.standard_normal((8, 5)).astype(np.float32)
    else:  # a Linear layer: weights stored [N, K]
        product = helper.make_node("Gemm", ["x", "w"], ["t"], transB=1)
        w = rng.standard_normal((5, 8)).astype(np.float32)
    nodes = [product, helper.make_node("Add", ["t", "bias"], ["u"]), helper.make_node("Add", ["u", "r"], ["v"]),
             helper.make_node("Relu", ["v"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])]
    return make_model(nodes, [("x", F, [6, 8]), ("r", F, [6, 5])], [("y", F, [6, 5])],
                      {"w": w, "bias": rng.standard_normal(5).astype(np.float32)})


def matmul_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = _rng(seed)
    return {"x": rng.standard_normal((6, 8)).astype(np.float32), "r": rng.standard_normal((6, 5)).astype(np.float32)}


def conv_residual(channels: int = 8) -> onnx.ModelProto:
    rng = _rng(2)
    c = channels
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "c1"], ["v"]), helper.make_node("Relu", ["v"], ["y"])]
    weights = {"w1": rng.standard_normal((c, c, 3, 3)).astype(np.float32) / 3,
               "b1": rng.standard_normal(c).astype(np.float32),
               "w2": rng.standard_normal((c, c, 3, 3)).astype(np.float32) / 3,
               "b2": rng.standard_normal(c).astype(np.float32)}
    return make_model(nodes, [("x", F, [2, c, 5, 5])], [("y", F, [2, c, 5, 5])], weights)


def conv_feeds(seed: int = 0, channels: int = 8) -> dict[str, np.ndarray]:
    return {"x": _rng(seed).standard_normal((2, channels, 5, 5)).astype(np.float32)}


def depthwise(channels: int = 8) -> onnx.ModelProto:
    rng = _rng(3)
    c = channels
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=c, strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["y"])]
    weights = {"w1": rng.standard_normal((c, c, 3, 3)).astype(np.float32) / 3,
               "b1": rng.standard_normal(c).astype(np.float32),
               "wd": rng.standard_normal((c, 1, 3, 3)).astype(np.float32),
               "bd": rng.standard_normal(c).astype(np.float32)}
    return make_model(nodes, [("x", F, [2, c, 5, 5])], [("y", F, [2, c, 3, 3])], weights)


def data_movement() -> onnx.ModelProto:
    rng = _rng(4)
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="linear"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Concat", ["p", "x"], ["c"], axis=1),
             helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Gather", ["s", "indices"], ["g"], axis=1),
             helper.make_node("Tile", ["g", "repeats"], ["t"]),
             helper.make_node("Expand", ["bias", "shape"], ["e"]),
             helper.make_node("Add", ["t", "e"], ["y"])]
    return make_model(nodes, [("x", F, [2, 3, 4, 5])], [("y", F, [2, 3, 4, 6])], {
        "scales": np.array([1, 1, 2, 2], np.float32), "starts": np.array([1], np.int64),
        "ends": np.array([4], np.int64), "axes": np.array([3], np.int64), "indices": np.array([5, 0, -2], np.int64),
        "repeats": np.array([1, 1, 1, 2], np.int64), "bias": rng.standard_normal((4, 1)).astype(np.float32),
        "shape": np.array([2, 3, 4, 6], np.int64)})


def data_movement_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": _rng(seed).standard_normal((2, 3, 4, 5)).astype(np.float32)}
